"""MQTT devices -> gateway -> InfluxDB 1.6.7, on a real Mosquitto: values, dead letters, broker restart."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest

from gateway.app import Gateway
from services.local import Service, rows, wait_for
from tests.sites import db_of, write_site


class Device:
    """A paho publisher standing in for a real device (the simulators are tested elsewhere)."""

    def __init__(self, port: int) -> None:
        self.c = paho.Client(paho.CallbackAPIVersion.VERSION2)
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()

    def pub(self, topic: str, payload: Any) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.c.publish(topic, data, qos=1).wait_for_publish(5)

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


class Collector:
    """Subscribes to a topic and keeps what arrives."""

    def __init__(self, port: int, topic: str) -> None:
        self.msgs: list[dict[str, Any]] = []
        self.ready = threading.Event()
        self.c = paho.Client(paho.CallbackAPIVersion.VERSION2)
        self.c.on_message = lambda c, u, m: self.msgs.append(json.loads(m.payload))
        self.c.on_subscribe = lambda *a: self.ready.set()
        self.c.connect("127.0.0.1", port)
        self.c.subscribe(topic, qos=1)
        self.c.loop_start()
        assert self.ready.wait(5)

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


DEVICES = [
    {
        "id": "FW-A01",
        "name": "高支模 A区,01",
        "zone": "A 区",
        "profile": "formwork_mqtt_v1",
        "broker": "b",
        "topic": "site/t/formwork/+/data",
        "expected_interval_s": 1.0,
    },
    {"id": "GAS-01", "profile": "gas_4in1_mqtt_v1", "broker": "b", "topic": "site/t/gas/+", "match": "SN9"},
]


@pytest.fixture
def site(tmp_path: Path, mosquitto: Service, influxdb: Service) -> Any:
    return write_site(tmp_path / "site.yaml", influx_port=influxdb.port, mqtt_port=mosquitto.port, devices=DEVICES)


async def test_values_arrive_exactly_and_bad_payloads_are_dead_lettered(
    site: Any, mosquitto: Service, influxdb: Service
) -> None:
    dlq = Collector(mosquitto.port, "t/deadletter")
    dev = Device(mosquitto.port)
    db = db_of(site)
    try:
        async with Gateway(site) as gw:
            await asyncio.wait_for(gw.sessions[0].connected.wait(), 10)
            t0 = 1795224600_000
            for i in range(20):
                dev.pub(
                    "site/t/formwork/FW-A01/data",
                    {"ts": t0 + i * 100, "data": {"settlement": 1.0 + i / 8, "force": 20.5, "hdisp": -0.25}},
                )
                if i == 5:
                    dev.pub("site/t/formwork/FW-A01/data", b"{garbage")  # not JSON
                if i == 6:  # wrong type in one field: the other fields of the message still count
                    dev.pub(
                        "site/t/formwork/FW-A01/data",
                        {"ts": t0 + 6 * 100 + 50, "data": {"settlement": "abc", "force": 99.0}},
                    )
                if i == 7:
                    dev.pub("site/t/formwork/FW-XX/data", {"ts": t0, "data": {"settlement": 1}})  # unknown device
                if i == 8:  # none of the profile's fields (a renamed key, a status-only message): said, not dropped
                    dev.pub("site/t/formwork/FW-A01/data", {"ts": t0 + 8 * 100 + 50, "data": {"settle": 1.5}})
            dev.pub(
                "site/t/gas/whatever",
                {
                    "sn": "SN9",
                    "time": "2026-11-21T09:30:00.250+08:00",
                    "readings": [
                        {"gas": "EX", "value": 12.5, "unit": "%LEL"},
                        {"gas": "O2", "value": 20.9, "unit": "%VOL"},
                        {"gas": "H2S", "value": 1.5, "unit": "ppm"},
                        {"gas": "CO", "value": 0.0017, "unit": "%VOL"},
                    ],
                    "status": {"fault": 0, "cal": 1},
                },
            )
            await asyncio.to_thread(wait_for, lambda: gw.metrics.mqtt_messages >= 25, 10, what="25 messages")
            assert await gw.flush(20)
            fw = rows(
                influxdb.port,
                db,
                "SELECT settlement, axial_force, horizontal_displacement, pole_tilt "
                "FROM formwork WHERE device = 'FW-A01' ORDER BY time",
            )
            assert [r["time"] for r in fw] == sorted(
                {(t0 + i * 100) * 1_000_000 for i in range(20)} | {(t0 + 650) * 1_000_000}
            )
            good = [r for r in fw if r["time"] != (t0 + 650) * 1_000_000]
            assert [r["settlement"] for r in good] == [1.0 + i / 8 for i in range(20)]
            assert all(r["axial_force"] == 20.5 and r["horizontal_displacement"] == -0.25 for r in good)
            partial = next(r for r in fw if r["time"] == (t0 + 650) * 1_000_000)
            assert partial["axial_force"] == 99.0 and partial["settlement"] is None
            tags = rows(influxdb.port, db, "SELECT last(settlement) FROM formwork GROUP BY site, zone, device")
            assert tags[0]["site"] == "t" and tags[0]["zone"] == "A 区" and tags[0]["device"] == "FW-A01"
            gas = rows(influxdb.port, db, "SELECT device, lel, o2, h2s, co, calibrating, sensor_fault FROM gas")
            assert len(gas) == 1
            g = gas[0]
            assert (g["device"], g["lel"], g["o2"], g["h2s"], g["calibrating"], g["sensor_fault"]) == (
                "GAS-01",
                12.5,
                20.9,
                1.5,
                1.0,
                0.0,
            )
            assert g["co"] == pytest.approx(17.0)
            assert g["time"] == 1795224600_250_000_000
            ups = rows(influxdb.port, db, "SELECT up FROM formwork, gas")
            assert {r["up"] for r in ups} == {1.0}
            assert gw.metrics.dead_letters == {"decode": 2, "field": 2}
        await asyncio.to_thread(wait_for, lambda: len(dlq.msgs) >= 4, 10, what="4 dead letters")
        reasons = sorted(m["reason"] for m in dlq.msgs)
        assert any("payload is not JSON" in r for r in reasons)
        assert any("no device with key 'FW-XX'" in r for r in reasons)
        assert any("field 'data.settlement' (settlement): expected a number, got str" in r for r in reasons)
        empty = [m for m in dlq.msgs if "none of the fields" in m["reason"]]
        assert [m["reason"] for m in empty] == [
            "device FW-A01: the payload holds none of the fields profile formwork_mqtt_v1 maps"
        ]
        assert (empty[0]["device"], empty[0]["stored"], json.loads(empty[0]["payload"])["data"]) == (
            "FW-A01",
            [],
            {"settle": 1.5},
        )
        assert {m["topic"] for m in dlq.msgs} == {"site/t/formwork/FW-A01/data", "site/t/formwork/FW-XX/data"}
        assert any(m.get("payload") == "{garbage" for m in dlq.msgs)
    finally:
        dev.close()
        dlq.close()


async def test_broker_restart_resumes_by_itself(site: Any, mosquitto: Service, influxdb: Service) -> None:
    db = db_of(site)
    async with Gateway(site) as gw:
        s = gw.sessions[0]
        await asyncio.wait_for(s.connected.wait(), 10)
        dev = Device(mosquitto.port)
        dev.pub("site/t/formwork/FW-A01/data", {"ts": 1795224600_000, "data": {"settlement": 1.0}})
        dev.close()
        await asyncio.to_thread(wait_for, lambda: gw.metrics.mqtt_messages >= 1, 10, what="first message")
        await asyncio.to_thread(mosquitto.restart)  # persistence off: the broker forgets everything
        await asyncio.to_thread(wait_for, lambda: s.connects >= 2 and s.connected.is_set(), 20, what="reconnect")
        dev = Device(mosquitto.port)
        dev.pub("site/t/formwork/FW-A01/data", {"ts": 1795224601_000, "data": {"settlement": 2.0}})
        dev.close()
        await asyncio.to_thread(wait_for, lambda: gw.metrics.mqtt_messages >= 2, 10, what="message after restart")
        assert await gw.flush(20)
    got = rows(influxdb.port, db, "SELECT settlement FROM formwork WHERE device = 'FW-A01'")
    assert [r["settlement"] for r in got] == [1.0, 2.0]
