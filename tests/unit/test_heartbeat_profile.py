"""Heartbeat profiles (PayloadMap.heartbeat): refused where a data message could pass for one, and counted once
per message whichever path of the session decodes it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import yaml

from drivers.mqtt.client import BrokerParams
from drivers.mqtt.payloads import PayloadDecoder
from drivers.mqtt.session import MqttDeviceRoute, MqttSession
from drivers.profile import MqttProfile, ProfileError, load_profile_file
from telemetry.reading import Reading

PROFILES = Path(__file__).parents[2] / "drivers" / "profiles"


def profile(tmp_path: Path, payload: dict[str, Any]) -> MqttProfile:
    doc = {"id": "hb_test_v1", "kind": "tower_crane", "title": "t", "transport": "mqtt", "payload": payload}
    f = tmp_path / "hb_test_v1.yaml"
    f.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    p = load_profile_file(f)
    assert isinstance(p, MqttProfile)
    return p


@pytest.mark.parametrize(
    ("payload", "said"),
    [
        # the key and time inside the data object: a data message's only top-level key is "data"
        (
            {"device_key": {"source": "payload", "path": "data.id"}, "timestamp": {"path": "data.time"},
             "fields": [{"path": "data.load", "quantity": "load", "unit": "t"}]},
            "must be top-level keys",
        ),
        # the time a top-level key that the fields live under
        (
            {"device_key": {"source": "payload", "path": "id"}, "timestamp": {"path": "d"},
             "fields": [{"path": "d.load", "quantity": "load", "unit": "t"}]},
            "['d.load'] lie under the device key or time",
        ),
        # HJ 212: every value is under CP, which holds the time too
        (
            {"format": "hj212", "device_key": {"source": "payload", "path": "MN"},
             "timestamp": {"path": "CP.DataTime", "format": "pattern", "pattern": "yyyyMMddHHmmss", "zone": "site"},
             "fields": [{"path": "CP.a34004-Rtd", "quantity": "pm2_5", "unit": "µg/m³"}]},
            "only with format json",
        ),
    ],
)  # fmt: skip
def test_a_heartbeat_a_data_message_could_pass_for_is_refused(
    tmp_path: Path, payload: dict[str, Any], said: str
) -> None:
    with pytest.raises(ProfileError, match=rf"heartbeat: .*{said.replace('[', '.').replace(']', '.')}"):
        profile(tmp_path, {**payload, "heartbeat": True})


def test_a_heartbeat_beside_a_dead_letter_is_counted_once() -> None:
    """The reader's callback decodes a wake and hands it to the session's task when a message in it is to be
    dead-lettered; the task decodes it again. Before, the heartbeat in it was counted, and heard, twice."""
    prof = load_profile_file(PROFILES / "yunzhu_tower_crane_json_v1.yaml")
    assert isinstance(prof, MqttProfile)
    heard: list[str] = []

    async def submit(rs: list[Reading], cb: Any = None) -> None:
        pass

    class Ready:  # the pipeline taking a batch at once (gateway/heard.py SeenSubmit)
        def ready(self) -> bool:
            return True

        def now(self, rs: list[Reading], cb: Any) -> None:
            pass

    params = BrokerParams("b", "127.0.0.1", 1, "c", None, None, False, 30, "dl")
    route = MqttDeviceRoute("TC-1", "TC-0001", "yz/crane", PayloadDecoder(prof))
    s = MqttSession(params, [route], submit, lambda *a: None, now=Ready(), on_heard=heard.append)
    s._ack = lambda mid, qos: None
    wake = [("yz/crane", b'{"deviceId": "TC-0001"}', 1, 1, False), ("yz/crane", b"not json", 2, 1, False)]
    assert s.handle_now(wake) is False  # a dead letter to publish: the task's
    asyncio.run(s.handle_batch([(t, p, None) for t, p, *_ in wake]))
    assert (s.heartbeats, heard) == (1, ["TC-1"])
    assert s.handle_now([("yz/crane", b'{"deviceId": "TC-0001", "deviceTime": "2024-03-15 09:31:00"}', 3, 1, False)])
    assert (s.heartbeats, heard) == (2, ["TC-1", "TC-1"])
