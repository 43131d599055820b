"""A retained message, which the broker sends because the session subscribed (at its start and again at every
reconnect), is the broker's copy of an earlier message: acknowledged and counted, never decoded into readings, a
device's liveness or a clock check (drivers/mqtt/session.py `_retained`). On a real Mosquitto, MQTT 3.1.1 and 5."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import paho.mqtt.client as paho
import pytest

from services.local import Service
from tests.integration.test_mqtt_ack import device
from tests.integration.test_mqtt_held import values
from tests.integration.test_mqtt_inline import TOPIC, Site, settlement, until

OLD_MS = 1795224600_000  # the retained message's own time, long before the live one's
LIVE_MS = OLD_MS + 3_600_000


@pytest.mark.parametrize("v5", [False, True], ids=["mqtt311", "mqtt5"])
async def test_a_retained_message_is_acknowledged_and_not_read_at_every_subscription(
    mosquitto: Service, tmp_path: Path, v5: bool
) -> None:
    protocol = paho.MQTTv5 if v5 else paho.MQTTv311
    with device(mosquitto.port, protocol) as dev:
        # the device's last state, kept by the broker: 9.5 an hour before the live message
        body = json.dumps({"ts": OLD_MS, "data": {"settlement": 9.5}})
        dev.publish(TOPIC, body, qos=1, retain=True).wait_for_publish(5)
        try:
            for start in range(2):  # a new session, then the same one again: the broker sends it at each SUBSCRIBE
                site = Site(mosquitto.port, tmp_path / "spool", f"sitegw-retained-{v5}", protocol_v5=v5)
                tasks = site.start()
                try:
                    await asyncio.wait_for(site.s.connected.wait(), 10)
                    await until(lambda site=site: site.s.retained == 1, "the retained message taken in")
                    settlement(dev, 1.0 + start, LIVE_MS + start)  # a live message after it
                    await until(lambda site=site, s=start: values(site)[-1:] == [1.0 + s], "the live one stored")
                    await asyncio.wait_for(site.pipe.drained(), 10)
                    # never read: no 9.5 among the readings, the alarms' or the console's values, no dead letter
                    assert 9.5 not in values(site) and site.letters == []
                    assert site.pipe.latest[("FW-1", "settlement")].value == 1.0 + start
                    assert site.handed == 2  # taken from the reader and acknowledged with the live one, in order
                finally:
                    await site.stop(tasks)
            assert values(site) == [1.0, 2.0]  # (the same spool directory for both starts)
        finally:
            dev.publish(TOPIC, b"", qos=1, retain=True).wait_for_publish(5)  # the broker forgets it
