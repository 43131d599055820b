"""QoS 1 messages' readings wait outside the spool until the fsync their acknowledgement waits for, and are
written together then (gateway/pipeline.py `_write_held`): evaluated at once, never lost, the spool's order kept. On
a real Mosquitto with a real spool; what is held when the gateway stops comes again from the broker."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from gateway.supervisor import run_stream
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
    tasks = [asyncio.create_task(run_stream(site.s)), asyncio.create_task(site.pipe.run())]
    latest = ("FW-1", "settlement")
    try:
        await asyncio.wait_for(site.s.connected.wait(), 10)
        with device(mosquitto.port) as dev:
            for i in range(2):
                settlement(dev, i, TS_MS + i)
                await until(lambda i=i: latest in site.pipe.latest and site.pipe.latest[latest].value == i, "seen")
            assert values(site) == []  # alarms and /api/latest have them; the spool not yet
            assert site.spool.appended_lines == 0
            # a QoS 0 message is never delivered again: written at once, after the two held (the order kept)
            payload = json.dumps({"ts": TS_MS + 2, "data": {"settlement": 2}})
            dev.publish(TOPIC, payload, qos=0).wait_for_publish(5)
            await until(lambda: values(site) == [0, 1, 2], "the QoS 0 message written with those held before it")
            settlement(dev, 3, TS_MS + 3)
            settlement(dev, 4, TS_MS + 4)  # the 4th waiting acknowledgement: the fsync is due
            await until(lambda: values(site) == [0, 1, 2, 3, 4], "the held ones written at the fsync")
            await asyncio.wait_for(site.pipe.drained(), 10)
            assert site.spool.sync_due_in() is None
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        site.spool.close()


async def test_readings_held_when_the_gateway_stops_come_again_from_the_broker(
    mosquitto: Service, tmp_path: Path
) -> None:
    site = Site(mosquitto.port, tmp_path / "spool", "sitegw-held-2", linger_s=30.0, linger_n=100)
    tasks = [asyncio.create_task(run_stream(site.s)), asyncio.create_task(site.pipe.run())]
    try:
        await asyncio.wait_for(site.s.connected.wait(), 10)
        with device(mosquitto.port) as dev:
            settlement(dev, 7.5, TS_MS)
            await until(lambda: ("FW-1", "settlement") in site.pipe.latest, "evaluated")
    finally:  # stopped inside the linger (as kill -9 would): never written, never acknowledged
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        site.spool.close()
    assert values(site) == []
    again = Site(mosquitto.port, tmp_path / "spool", "sitegw-held-2")  # the same client id: its session
    tasks = [asyncio.create_task(run_stream(again.s)), asyncio.create_task(again.pipe.run())]
    try:
        await until(lambda: values(again) == [7.5], "the held message delivered again and written")
        await asyncio.wait_for(again.pipe.drained(), 10)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        again.spool.close()
