"""QoS 1 messages' readings wait outside the spool until the fsync their acknowledgement waits for, and are
written together then (gateway/pipeline.py `_write_held`): evaluated at once, never lost, the spool's order kept. On
a real Mosquitto with a real spool; what is held when the gateway stops comes again from the broker."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from services.local import Service
from tests.integration.test_mqtt_ack import device
from tests.integration.test_mqtt_inline import TOPIC, Site, settlement, until

TS_MS = 1795224600_000


def values(site: Site) -> list[float]:
    return [float(line.split(b"settlement=")[1].split(b" ")[0]) for line in site.stored()]


async def test_qos1_readings_are_evaluated_at_once_and_written_at_their_fsync_a_qos0_one_at_once(
    mosquitto: Service, tmp_path: Path
) -> None:
    # a linger long enough to look inside it: the fsync comes 3 s after the first message, or with the 4th
    site = Site(mosquitto.port, tmp_path / "spool", "sitegw-held-1", linger_s=3.0, linger_n=4)
    tasks = site.start()
    latest = ("FW-1", "settlement")
    try:
        await asyncio.wait_for(site.s.connected.wait(), 10)
        with device(mosquitto.port) as dev:
            # the first message brings the device's `up` reading, which no broker delivers again: written at once
            settlement(dev, 0, TS_MS)
            # (within 1 s: the linger is 3 s)
            await until(lambda: values(site) == [0], "the first message written at once, with its `up`", 1.0)
            for i in range(1, 3):
                settlement(dev, i, TS_MS + i)
                await until(lambda i=i: site.pipe.latest[latest].value == i, f"message {i} evaluated")
            assert values(site) == [0]  # alarms and /api/latest have them; the spool not yet
            # a QoS 0 message is never delivered again: written at once, after the two held (the order kept)
            payload = json.dumps({"ts": TS_MS + 3, "data": {"settlement": 3}})
            dev.publish(TOPIC, payload, qos=0).wait_for_publish(5)
            await until(lambda: values(site) == [0, 1, 2, 3], "the QoS 0 message written after those held")
            for i in range(4, 8):  # four more: the fourth acknowledgement waiting makes their fsync due at once
                settlement(dev, i, TS_MS + i)
            await until(lambda: values(site) == list(range(8)), "the held ones written at their fsync")
            await asyncio.wait_for(site.pipe.drained(), 10)
            assert site.spool.sync_due_in() is None
    finally:
        await site.stop(tasks)


async def test_readings_held_when_the_gateway_stops_come_again_from_the_broker(
    mosquitto: Service, tmp_path: Path
) -> None:
    site = Site(mosquitto.port, tmp_path / "spool", "sitegw-held-2", linger_s=30.0, linger_n=100)
    tasks = site.start()
    try:
        await asyncio.wait_for(site.s.connected.wait(), 10)
        with device(mosquitto.port) as dev:
            settlement(dev, 6.5, TS_MS)  # with the device's `up`: written at once
            await until(lambda: values(site) == [6.5], "the first message written")
            settlement(dev, 7.5, TS_MS + 1)
            await until(lambda: site.pipe.latest[("FW-1", "settlement")].value == 7.5, "evaluated")
    finally:  # stopped inside the linger (as kill -9 would): never written, never acknowledged
        await site.stop(tasks)
    assert values(site) == [6.5]
    again = Site(mosquitto.port, tmp_path / "spool", "sitegw-held-2")  # the same client id: its session
    tasks = again.start()
    try:
        # both come again (the first was not acknowledged either: its fsync was still to come) and are written
        await until(lambda: values(again) == [6.5, 6.5, 7.5], "the held message delivered again and written")
        await asyncio.wait_for(again.pipe.drained(), 10)
    finally:
        await again.stop(tasks)
