"""MQTT 5 on a real Mosquitto: the gateway announces its in-flight window (`receive_maximum`), and the broker then
sends that many QoS 1 messages unacknowledged where MQTT 3.1.1 gets its `max_inflight_messages` (20); the reader
takes a PUBLISH without properties off its buffer itself, and leaves one with properties to paho."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from drivers.mqtt.reader import READS_PER_WAKE
from services.local import Service
from telemetry.reading import Reading
from tests.integration.test_mqtt_ack import collector, delivered_again, device, publish_settlement, run_until, session
from tests.integration.test_mqtt_inline import Site, settlement, until

TS_MS = 1795224600_000


async def _held_until(port: int, n: int, wait_s: float, **params: Any) -> int:
    """How many of `n` QoS 1 messages a session receives within `wait_s` while it acknowledges none."""
    got: list[Reading] = []
    done = asyncio.Event()

    async def never_acked(readings: list[Reading], on_spooled: Callable[[], object] | None = None) -> None:
        got.extend(readings)
        if len(got) >= n:
            done.set()

    s = session(port, never_acked, **params)
    task = asyncio.create_task(run_until(s, done, wait_s + 10))
    await asyncio.wait_for(s.connected.wait(), 10)
    with device(port) as dev:
        for info in [publish_settlement(dev, float(k), TS_MS + k) for k in range(n)]:
            info.wait_for_publish(5)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), wait_s)
    done.set()
    await task
    return len(got)


async def test_an_mqtt5_session_gets_the_window_it_announces(mosquitto: Service) -> None:
    """With 60 QoS 1 messages waiting and none acknowledged, Mosquitto sends a 3.1.1 session its 20 and an MQTT 5
    session announcing 100 all 60: what lets the gateway hold more messages for one fsync (BatchAck.hold)."""
    v311 = await _held_until(mosquitto.port, 60, 1.5, client_id="sitegw-window-311")
    v5 = await _held_until(mosquitto.port, 60, 10, client_id="sitegw-window-5", protocol_v5=True, receive_maximum=100)
    assert (v311, v5) == (20, 60)


async def test_mqtt5_messages_without_properties_are_taken_off_the_buffer_and_with_them_by_paho(
    mosquitto: Service,
) -> None:
    """The reader's own PUBLISH parser (drivers/mqtt/reader.py `_take_publishes`) skips MQTT 5's empty properties;
    a message whose properties are not empty (a device's user property) goes through paho. Both come whole, in
    order, and are acknowledged (never delivered again)."""
    values, all_in, submit = collector(3)
    s = session(mosquitto.port, submit, client_id="sitegw-props-5", protocol_v5=True, receive_maximum=100)
    task = asyncio.create_task(run_until(s, all_in, 20))
    await asyncio.wait_for(s.connected.wait(), 10)
    inbox = s.inbox
    assert inbox is not None
    taken = inbox.taken
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.UserProperty = [("vendor", "示例")]
    topic = "ack/site/formwork/FW-1/data"
    with device(mosquitto.port, paho.MQTTv5) as dev:  # a device speaking MQTT 5
        body = [json.dumps({"ts": TS_MS + k, "data": {"settlement": float(k)}}) for k in range(3)]
        for info in [
            dev.publish(topic, body[0], qos=1),
            dev.publish(topic, body[1], qos=1, properties=props),
            dev.publish(topic, body[2], qos=1),
        ]:
            info.wait_for_publish(5)
        await asyncio.wait_for(all_in.wait(), 10)
        await task
    assert values == [0.0, 1.0, 2.0]
    assert inbox.taken - taken == 2  # the one with a user property was paho's
    assert await delivered_again(mosquitto.port, client_id="sitegw-props-5", protocol_v5=True) == []  # all acked


async def test_a_broker_granting_less_than_the_window_announced_does_not_stall_the_stream(
    mosquitto: Service, tmp_path: Path
) -> None:
    """EMQX grants an MQTT 5 client the smaller of its Receive Maximum and its own max_inflight (32), and then sends
    nothing until acknowledged. Here the gateway would hold 50 for one fsync (`hold`, as if it had announced 100)
    while Mosquitto grants the 20 announced: with 16 or more waiting, 10 ms without a message ends the linger
    (gateway/pipeline.py QUIET_S), not the 30 s of ack_linger_s, so the 60 messages are all stored and acknowledged
    within seconds."""
    site = Site(mosquitto.port, tmp_path / "spool", "sitegw-quiet-5", linger_s=30, linger_n=10,
                protocol_v5=True, receive_maximum=20)  # fmt: skip
    site.s._hold = 50
    tasks = site.start()
    try:
        await asyncio.wait_for(site.s.connected.wait(), 10)
        with device(mosquitto.port) as dev:
            for k in range(60):
                settlement(dev, float(k), TS_MS + k)
            await until(site.has(60), "60 messages stored")
            await until(site.all_acked, "every message acknowledged")
    finally:
        await site.stop(tasks)
    # none is delivered again: all 60 were acknowledged
    again = await delivered_again(
        mosquitto.port, "inline/site/formwork/+/data", client_id="sitegw-quiet-5", protocol_v5=True
    )
    assert again == []


async def test_a_backlog_sent_beyond_the_window_is_taken_in_no_more_than_the_window_at_once(
    mosquitto: Service, tmp_path: Path
) -> None:
    """Mosquitto 2.0.11 keeps to an MQTT 5 session's window for the backlog it sends after a reconnect only until the
    first PUBACK; then it sends the rest at once. The reader takes in no more than its window unacknowledged
    (drivers/mqtt/reader.py `Inbox.cap`): it stops reading the socket until acknowledgements make room, so of 2 000
    messages waiting for a window of 50 no more than the window and one wake's reads are ever taken in by the
    session and not yet in the spool (1 151 on the tree before), and every one is stored and acknowledged."""
    n, window, cid = 2000, 50, "sitegw-backlog-5"
    first = Site(mosquitto.port, tmp_path / "spool-1", cid, protocol_v5=True, receive_maximum=window)
    tasks = first.start()
    await asyncio.wait_for(first.s.connected.wait(), 10)
    await first.stop(tasks)  # the session stays at the broker, which queues what follows for it
    with device(mosquitto.port) as dev:
        for k in range(n):
            settlement(dev, float(k), TS_MS + k)
    site = Site(mosquitto.port, tmp_path / "spool-2", cid, protocol_v5=True, receive_maximum=window)
    tasks = site.start()
    most, pauses = 0, 0
    try:
        await asyncio.wait_for(site.s.connected.wait(), 10)
        loop = asyncio.get_running_loop()
        deadline, look = loop.time() + 30, 0.0
        while loop.time() < deadline:
            # every loop turn: messages the session took and the spool does not have yet (each is a line of its own)
            most = max(most, site.handed - site.pipe.metrics.lines_spooled)
            pauses = getattr(site.s.inbox, "pauses", pauses)
            if loop.time() >= look:
                if site.has(n)():
                    break
                look = loop.time() + 0.01
            await asyncio.sleep(0)
        await until(site.all_acked, "every message acknowledged")
    finally:
        await site.stop(tasks)
    assert len(site.stored()) == n
    assert most <= window + READS_PER_WAKE, most
    assert pauses >= 1, "premise: this Mosquitto sends a backlog beyond the window after a reconnect"
    assert site.s.read_pauses == pauses  # what sitegw_mqtt_read_pauses_total{broker} shows, kept past the connection
    again = await delivered_again(
        mosquitto.port, "inline/site/formwork/+/data", client_id=cid, protocol_v5=True, receive_maximum=window
    )
    assert again == []
