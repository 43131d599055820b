"""Database outage: InfluxDB killed mid-stream and brought back; every reading arrives, counted exactly."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho
import pytest

from gateway.app import Gateway
from services.local import Service, free_port, rows, wait_for
from tests.sites import db_of, write_site


def stream(port: int, n: int, stop_at: threading.Event, rate_hz: float = 300) -> int:
    """Publish n formwork messages (QoS 1) with distinct timestamps; return how many were published."""
    c = paho.Client(paho.CallbackAPIVersion.VERSION2)
    c.connect("127.0.0.1", port)
    c.loop_start()
    t0 = time.time_ns() // 1_000_000 - 60_000  # device time a minute ago: within the clock limits (no skew reading)
    sent = 0
    try:
        for i in range(n):
            payload = {"ts": t0 + i, "data": {"settlement": i / 1000, "force": float(i % 97)}}
            c.publish("site/t/formwork/FW-A01/data", json.dumps(payload), qos=1).wait_for_publish(5)
            sent += 1
            time.sleep(1 / rate_hz)
    finally:
        c.loop_stop()
        c.disconnect()
        stop_at.set()
    return sent


async def test_influx_outage_loses_nothing(tmp_path: Path, mosquitto: Service, own_influx: Service) -> None:
    cfg = write_site(
        tmp_path / "site.yaml",
        influx_port=own_influx.port,
        mqtt_port=mosquitto.port,
        devices=[{"id": "FW-A01", "profile": "formwork_mqtt_v1", "broker": "b", "topic": "site/t/formwork/+/data"}],
        # small segments: an outage starts a new one when the live one holds a sixteenth of this (Spool.outage_roll),
        # so a few seconds of it leave a backlog for the rate-limited replay to take
        spool={"replay_lines_per_s": 500, "batch_lines": 200, "segment_bytes": 8192},
    )
    n = 1500
    async with Gateway(cfg) as gw:
        await asyncio.wait_for(gw.sessions[0].connected.wait(), 10)
        done = threading.Event()
        pub = asyncio.create_task(asyncio.to_thread(stream, mosquitto.port, n, done), name="publisher")
        await asyncio.to_thread(wait_for, lambda: gw.metrics.lines_written > 100, 20, what="first writes")
        await asyncio.to_thread(own_influx.kill)  # kill -9 the database mid-stream
        await asyncio.to_thread(
            wait_for,
            lambda: gw.metrics.write_failures > 0 and gw.spool.pending_bytes() > 0,
            20,
            what="writes failing and spool filling",
        )
        await asyncio.sleep(1.5)
        pending_during_outage = gw.spool.pending_bytes()
        await asyncio.to_thread(own_influx.start)
        sent = await pub
        assert sent == n
        await asyncio.to_thread(wait_for, lambda: gw.metrics.mqtt_messages >= n, 30, what="all messages in")
        assert await gw.flush(60), f"spool still holds {gw.spool.pending_bytes()} bytes"
        assert gw.metrics.lines_replayed > 0  # the backlog went through the rate-limited replay path
        assert gw.spool.dropped_lines == 0
        readings_in = gw.metrics.readings_in
    assert pending_during_outage > 0
    got = rows(own_influx.port, db_of(cfg), "SELECT count(settlement), count(axial_force) FROM formwork")
    assert (got[0]["count"], got[0]["count_1"]) == (n, n)
    exact = rows(own_influx.port, db_of(cfg), "SELECT settlement FROM formwork ORDER BY time")
    assert [r["settlement"] for r in exact] == [i / 1000 for i in range(n)]
    ups = rows(own_influx.port, db_of(cfg), "SELECT count(up) FROM formwork")
    assert readings_in == 2 * n + ups[0]["count"]  # every reading the gateway counted is in the database


async def test_a_stop_with_the_database_down_says_what_it_leaves_in_the_spool(
    tmp_path: Path, mosquitto: Service, caplog: pytest.LogCaptureFixture
) -> None:
    """Nothing lost and nothing silent: the readings a stop could not write wait in the spool, and the stop says how
    many bytes (the second sink said so of its own spool, the first database did not)."""
    cfg = write_site(
        tmp_path / "site.yaml",
        influx_port=free_port(),  # nobody listens there: every write fails
        mqtt_port=mosquitto.port,
        devices=[{"id": "FW-A01", "profile": "formwork_mqtt_v1", "broker": "b", "topic": "site/t/formwork/+/data"}],
    )
    async with Gateway(cfg) as gw:
        await asyncio.wait_for(gw.sessions[0].connected.wait(), 10)
        assert await asyncio.to_thread(stream, mosquitto.port, 20, threading.Event()) == 20
        await asyncio.to_thread(wait_for, lambda: gw.metrics.mqtt_messages >= 20, 20, what="the messages in")
        caplog.set_level(logging.WARNING, logger="sitegw")
        await gw.stop_flush(1.0)
        left = gw.spool.pending_bytes()
        assert gw.metrics.lines_written == 0
    assert left > 0
    assert f"database: {left} bytes left in the spool, written at the next start" in caplog.text
