"""QoS 1 acknowledgement after spooling, on a real Mosquitto: a message whose readings never reached the spool
(the gateway died first) is delivered again to the persistent session; once spooled, it is not. And what receiving
leaves behind for the cyclic garbage collector."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest

from drivers.mqtt.client import BrokerParams
from drivers.mqtt.payloads import PayloadDecoder
from drivers.mqtt.session import MqttDeviceRoute, MqttSession
from drivers.profile import MqttProfile, builtin_profiles
from gateway import eventloop
from gateway.metrics import Metrics
from gateway.pipeline import Pipeline
from gateway.spool import Spool
from gateway.supervisor import run_stream
from services.local import Service
from telemetry.lineproto import series_tags
from telemetry.reading import Reading


def session(
    port: int, submit: Callable[..., object], topic: str = "ack/site/formwork/+/data", **params: Any
) -> MqttSession:
    """A session for formwork device FW-1 on `topic`; `params` override the broker's (BrokerParams fields)."""
    prof = builtin_profiles()["formwork_mqtt_v1"]
    assert isinstance(prof, MqttProfile)
    broker = BrokerParams(
        id="b",
        host="127.0.0.1",
        port=port,
        client_id="sitegw-ack-test",
        username=None,
        password=None,
        protocol_v5=False,
        keepalive_s=30,
        dead_letter_topic="t/dl",
    )
    route = MqttDeviceRoute("FW-1", "FW-1", topic, PayloadDecoder(prof))
    return MqttSession(replace(broker, **params), [route], submit, lambda kind, msg, device: None)  # type: ignore[arg-type]


async def run_until(s: MqttSession, done: asyncio.Event, wait_s: float) -> None:
    task = asyncio.create_task(run_stream(s), name="mqtt-session")
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), wait_s)
    finally:
        task.cancel()  # leaves like a crashed gateway would, as far as acknowledgements go
        await asyncio.gather(task, return_exceptions=True)


async def subscribed(
    port: int, submit: Callable[..., object], done: asyncio.Event
) -> tuple[MqttSession, asyncio.Task[None]]:
    """A session running (until `done`, 20 s at most) in a task, returned once its subscriptions are in place."""
    s = session(port, submit)
    task = asyncio.create_task(run_until(s, done, 20), name="session")
    await asyncio.wait_for(s.connected.wait(), 10)
    return s, task


@contextlib.contextmanager
def device(port: int, protocol: int = paho.MQTTv311) -> Iterator[paho.Client]:
    """A device publishing to the broker (paho's own thread), gone when the block ends."""
    dev = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=protocol)
    dev.connect("127.0.0.1", port)
    dev.loop_start()
    try:
        yield dev
    finally:
        dev.loop_stop()
        dev.disconnect()


def publish_settlement(dev: paho.Client, value: float, ts_ms: int = 1795224600_000) -> paho.MQTTMessageInfo:
    """FW-1's formwork message (QoS 1) with one settlement value."""
    body = json.dumps({"ts": ts_ms, "data": {"settlement": value}})
    return dev.publish("ack/site/formwork/FW-1/data", body, qos=1)


async def delivered_again(port: int, topic: str = "ack/site/formwork/+/data", **params: Any) -> list[list[Reading]]:
    """What the broker delivers to a new session on the same persistent client id within 2 s (acknowledged);
    `params` as for `session`."""
    got: list[list[Reading]] = []

    async def record(readings: list[Reading], on_spooled: Callable[[], object] | None = None) -> None:
        got.append(readings)
        if on_spooled:
            on_spooled()

    await run_until(session(port, record, topic, **params), asyncio.Event(), 2.0)
    return got


def collector(n: int) -> tuple[list[float], asyncio.Event, Callable[..., Any]]:
    """(values, all_in, submit): a pipeline's submit that acknowledges at once, keeps the values and sets all_in
    at `n` of them."""
    values: list[float] = []
    all_in = asyncio.Event()

    async def submit(readings: list[Reading], on_spooled: Callable[[], object] | None = None) -> None:
        values.extend(r.value for r in readings)
        if on_spooled:
            on_spooled()
        if len(values) >= n:
            all_in.set()

    return values, all_in, submit


async def test_unspooled_message_is_redelivered_and_spooled_one_is_not(mosquitto: Service) -> None:
    got: list[list[Reading]] = []
    first = asyncio.Event()

    async def never_spooled(readings: list[Reading], on_spooled: object = None) -> None:
        got.append(readings)  # the gateway "dies" before the spool: on_spooled is never called
        first.set()

    s1 = session(mosquitto.port, never_spooled)
    t1 = asyncio.create_task(run_until(s1, first, 10), name="session-1")
    await asyncio.wait_for(s1.connected.wait(), 10)
    with device(mosquitto.port) as dev:
        publish_settlement(dev, 3.25).wait_for_publish(5)
    await t1
    assert [[r.value for r in rs] for rs in got] == [[3.25]]

    again = asyncio.Event()
    redelivered: list[list[Reading]] = []

    async def spooled(readings: list[Reading], on_spooled: Callable[[], object] | None = None) -> None:
        redelivered.append(readings)
        if on_spooled:
            on_spooled()  # durable now: acknowledge
        again.set()

    await run_until(session(mosquitto.port, spooled), again, 10)
    assert [[r.value for r in rs] for rs in redelivered] == [[3.25]]  # the broker delivered it again

    assert await delivered_again(mosquitto.port) == []  # acknowledged once spooled: not delivered a third time


async def test_a_batch_of_messages_is_one_submission_and_a_bad_one_is_acked_in_its_place_after_its_letter() -> None:
    """MQTT 3.1.1 §4.6: a receiver sends its PUBACKs in the order the PUBLISHes came. The dead-lettered message in the
    middle is acknowledged with the others (once its letter is out and their lines are in the spool), in its place."""
    acked: list[str] = []
    submitted: list[tuple[list[Reading], Callable[[], object] | None]] = []

    async def submit(readings: list[Reading], on_spooled: Callable[[], object] | None = None) -> None:
        submitted.append((readings, on_spooled))

    s = session(1, submit)  # handle_batch needs no broker: with no connection the dead letter is only counted
    topic = "ack/site/formwork/FW-1/data"
    good = json.dumps({"ts": 1795224600_000, "data": {"settlement": 3.25, "tilt": "high"}}).encode()
    await s.handle_batch(
        [
            (topic, good, lambda: acked.append("good")),
            (topic, b"{not json", lambda: acked.append("bad")),
            (
                topic,
                json.dumps({"ts": 1795224601_000, "data": {"settlement": 3.5}}).encode(),
                lambda: acked.append("2"),
            ),
        ]
    )
    assert acked == []  # the bad one too waits: acknowledging it now would put its PUBACK before "good"'s
    assert len(submitted) == 1  # one hand-over for the batch
    readings, on_spooled = submitted[0]
    assert [(r.quantity, r.value) for r in readings] == [
        ("settlement", 3.25),
        ("settlement", 3.5),
    ]  # bad field lost only
    assert on_spooled is not None
    on_spooled()
    assert acked == ["good", "bad", "2"]


async def test_a_dead_lettered_message_is_not_acknowledged_ahead_of_an_earlier_one(mosquitto: Service) -> None:
    """On the broker: good, bad, good, and the gateway dies before the good ones are spooled. The bad one's PUBACK
    may not precede the first good one's (MQTT 3.1.1 §4.6), so it was not sent: all three come again, the bad one
    is dead-lettered again, and once acknowledged in order nothing comes a third time."""
    first_run: list[list[Reading]] = []
    seen = asyncio.Event()

    async def never_spooled(readings: list[Reading], on_spooled: object = None) -> None:
        first_run.append(readings)
        if any(r.value == 3.5 for r in readings):
            seen.set()

    _, t1 = await subscribed(mosquitto.port, never_spooled, seen)
    with device(mosquitto.port) as dev:
        publish_settlement(dev, 3.25).wait_for_publish(5)
        dev.publish("ack/site/formwork/FW-1/data", b"{not json", qos=1).wait_for_publish(5)
        publish_settlement(dev, 3.5, 1795224601_000).wait_for_publish(5)
    await t1
    assert [r.value for rs in first_run for r in rs] == [3.25, 3.5]

    again: list[list[Reading]] = []
    letters: list[str] = []
    done = asyncio.Event()

    async def spooled(readings: list[Reading], on_spooled: Callable[[], object] | None = None) -> None:
        again.append(readings)
        if on_spooled:
            on_spooled()
        if any(r.value == 3.5 for r in readings):
            done.set()

    s2 = session(mosquitto.port, spooled)
    s2.on_dead_letter = lambda kind, msg, dev: letters.append(kind)
    await run_until(s2, done, 10)
    assert [r.value for rs in again for r in rs] == [3.25, 3.5]
    assert letters == ["decode"]  # the bad one came again: its acknowledgement had waited for the first good one's
    assert await delivered_again(mosquitto.port) == []


async def test_a_batch_is_acknowledged_with_one_write_and_never_delivered_again(mosquitto: Service) -> None:
    # 40 messages held unacknowledged (the broker's in-flight window lets 20 through at a time), then each batch is
    # acknowledged the way the pipeline does it once spooled: the PUBACKs leave at once, with no socket writer
    # registered for them (paho's register-write callback is not called while the socket takes them), and none of
    # the 40 is delivered again to the persistent session
    values: list[float] = []
    registered: list[int] = []
    all_in = asyncio.Event()

    async def submit(readings: list[Reading], on_spooled: Callable[[], object] | None = None) -> None:
        values.extend(r.value for r in readings)
        assert on_spooled is not None and s.client is not None
        paho_client = s.client._client
        if not registered:  # count the registrations from the first batch on
            inner = paho_client.on_socket_register_write
            registered.append(0)

            def counting(*a: object) -> None:
                registered[0] += 1
                inner(*a)

            paho_client.on_socket_register_write = counting
        before = registered[0]
        on_spooled()
        assert registered[0] == before  # nothing registered: written at once
        assert not paho_client._out_packet  # every PUBACK of the batch is on the socket
        if len(values) >= 40:
            all_in.set()

    s, task = await subscribed(mosquitto.port, submit, all_in)
    with device(mosquitto.port) as dev:
        for i in range(40):
            publish_settlement(dev, i, 1795224600_000 + i)
        await task
    assert sorted(values) == [float(i) for i in range(40)]
    assert await delivered_again(mosquitto.port) == []  # every one was acknowledged


async def _acked_behind_a_writer(port: int) -> list[str]:
    """A packet queued the usual way (here a publish) has its socket writer on its way through call_soon_threadsafe:
    the batch's PUBACKs wait for that writer instead of being written at once (which would unregister the writer
    before it is added, leaving a writer nothing removes: the loop would spin); then everything leaves and no
    writer stays behind. What went wrong, on the running loop (asyncio's or uvloop)."""
    checked = asyncio.Event()
    found: list[str] = []

    async def submit(readings: list[Reading], on_spooled: Callable[[], object] | None = None) -> None:
        assert on_spooled is not None and s.client is not None
        p = s.client._client
        p.publish("ack/other", b"x", qos=0)
        assert p._registered_write  # its writer is on its way
        on_spooled()
        if not p._out_packet:
            found.append("written before the writer was added")
        for _ in range(100):
            await asyncio.sleep(0.01)
            if not p._out_packet and not p._registered_write:
                break
        else:
            found.append(f"left behind: {len(p._out_packet)} packet(s), writer asked for {p._registered_write}")
        # a writer left registered with nothing to write has the loop call paho's loop_write at every turn: counted
        # on either loop (the selector's keys are asyncio's alone, and uvloop's remove_writer says nothing)
        calls = 0
        write = p.loop_write

        def counted() -> Any:
            nonlocal calls
            calls += 1
            return write()

        p.loop_write = counted
        await asyncio.sleep(0.05)
        del p.loop_write
        if calls > 5:
            found.append(f"a writer left registered with nothing to write: the loop spun ({calls} writes in 50 ms)")
        checked.set()

    s, task = await subscribed(port, submit, checked)
    with device(port) as dev:
        publish_settlement(dev, 1.0)
        await task
    if not checked.is_set():
        found.append("the batch never came")
    return found


async def test_a_batch_acked_while_a_writer_is_on_its_way_leaves_it_to_that_writer(mosquitto: Service) -> None:
    assert await _acked_behind_a_writer(mosquitto.port) == []
    assert await delivered_again(mosquitto.port) == []  # its PUBACK went out


def test_the_same_on_uvloop(mosquitto: Service) -> None:
    """`sitegw run`'s default loop (gateway/eventloop.py)."""
    assert eventloop.run(lambda: _acked_behind_a_writer(mosquitto.port), "uvloop") == []
    assert eventloop.run(lambda: delivered_again(mosquitto.port), "uvloop") == []


async def test_receiving_messages_leaves_no_reference_cycles_for_the_collector(mosquitto: Service) -> None:
    """paho's topic matcher builds a recursive closure per lookup, a reference cycle; paho (for its filtered
    callbacks) and the session each looked up every message that way. Those cycles are garbage only the cyclic
    collector frees, and its passes stalled the event loop for milliseconds: the alarm latency's tail."""
    n = 300
    values: list[float] = []
    first, all_in = asyncio.Event(), asyncio.Event()

    async def submit(readings: list[Reading], on_spooled: Callable[[], object] | None = None) -> None:
        values.extend(r.value for r in readings)
        if on_spooled:
            on_spooled()
        first.set()
        if len(values) > n:
            all_in.set()

    _, task = await subscribed(mosquitto.port, submit, all_in)
    with device(mosquitto.port) as dev:
        publish_settlement(dev, -1.0)  # a topic's first message is looked up in the filters once
        await asyncio.wait_for(first.wait(), 10)
        gc.collect()
        gc.disable()
        try:
            for i in range(n):
                publish_settlement(dev, i, 1795224600_001 + i)
            await asyncio.wait_for(all_in.wait(), 20)
            cyclic = gc.collect()
        finally:
            gc.enable()
        await task
    assert len(values) == n + 1
    assert cyclic < n // 10, f"{cyclic} objects in reference cycles after {n} messages"


async def test_messages_already_on_the_socket_come_as_one_batch(mosquitto: Service) -> None:
    """paho reads one packet per call whatever it is asked, and aiomqtt's reader called it once per event-loop turn:
    a burst that arrived while the gateway was busy came in as one batch per turn (each its own hand-over to the
    pipeline, and a gas message behind it waited for all of them). The session's reader takes everything the socket
    holds (drivers/mqtt/reader.py `Inbox`), with one recv for all of them (paho alone asks for each packet in three
    pieces or more), and their PUBACKs leave in one send (paho alone sends each queued packet on its own)."""
    sizes: list[int] = []
    sends: list[int] = []
    first, all_in = asyncio.Event(), asyncio.Event()

    async def submit(readings: list[Reading], on_spooled: Callable[[], object] | None = None) -> None:
        sizes.append(len(readings))
        assert s.client is not None
        p = s.client._client
        real = p._sock_send
        sent: list[int] = []

        def counting(buf: bytes) -> int:
            sent.append(len(buf))
            return real(buf)

        p._sock_send = counting  # type: ignore[method-assign]
        try:
            if on_spooled:
                on_spooled()
        finally:
            del p._sock_send  # paho's own method again
        sends.append(len(sent))
        first.set()
        if sum(sizes) >= 21:
            all_in.set()

    s, task = await subscribed(mosquitto.port, submit, all_in)
    with device(mosquitto.port) as dev:
        publish_settlement(dev, -1.0)
        await asyncio.wait_for(first.wait(), 10)
        assert s.inbox is not None
        recvs = s.inbox.recvs
        # the gateway busy (its event loop blocked) while a burst of 20 (the broker's in-flight window) arrives
        sent = [publish_settlement(dev, i, 1795224600_001 + i) for i in range(20)]
        for info in sent:
            info.wait_for_publish(5)
        time.sleep(0.5)  # noqa: ASYNC251 (the point: the loop blocked while the broker forwards them)
        await asyncio.wait_for(all_in.wait(), 10)
        assert s.inbox is not None
        burst_recvs = s.inbox.recvs - recvs
        await task
    assert sizes == [1, 20]
    assert burst_recvs <= 2, f"{burst_recvs} recv calls for a burst of 20 already on the socket"
    assert sends == [1, 1]  # the 20 PUBACKs in one send


async def test_a_message_longer_than_one_read_comes_whole_between_short_ones(mosquitto: Service) -> None:
    """The reader serves paho from one read of up to 64 KiB (drivers/mqtt/reader.py RECV_BYTES): a 300 KiB message
    takes several reads, and wakes, with the short messages before and after it in the same reads; each comes
    whole and in order."""
    values, all_in, submit = collector(3)
    s, task = await subscribed(mosquitto.port, submit, all_in)
    assert s.inbox is not None
    before = s.inbox.recvs
    pad = "x" * 300_000
    big = json.dumps({"ts": 1795224600_001, "data": {"settlement": 2.0}, "note": pad})
    with device(mosquitto.port) as dev:
        first = publish_settlement(dev, 1.0)
        long = dev.publish("ack/site/formwork/FW-1/data", big, qos=1)
        last = publish_settlement(dev, 3.0, 1795224600_002)
        for info in (first, long, last):
            info.wait_for_publish(5)
        await asyncio.wait_for(all_in.wait(), 10)
        reads = s.inbox.recvs - before
        await task
    assert values == [1.0, 2.0, 3.0]
    assert reads >= 300_000 // 65536  # it did take several reads


@pytest.mark.skipif(not hasattr(socket, "TCP_QUICKACK"), reason="TCP_QUICKACK is Linux's")
async def test_every_wake_of_the_reader_asks_for_quick_tcp_acknowledgements(
    mosquitto: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Mosquitto leaves Nagle's algorithm on (set_tcp_nodelay false): it holds its next PUBLISH until its last one
    is acknowledged at the TCP level. While the pipeline holds PUBACKs back to share an fsync, nothing goes back to
    carry that acknowledgement, and the kernel's delayed-ACK timer paced the broker (8 ms a message, median, with
    3 or more held; bench/README.md). The reader sets TCP_QUICKACK at every wake (the kernel does not keep it), and
    the session's socket has Nagle off on our side. Timing is the benchmark's; this checks the mechanism."""
    calls: list[tuple[int, int, int, int]] = []
    real = socket.socket.setsockopt

    def recording(self: socket.socket, level: int, opt: int, value: Any, *rest: Any) -> None:
        if level == socket.IPPROTO_TCP:
            calls.append((self.fileno(), level, opt, value))
        real(self, level, opt, value, *rest)

    monkeypatch.setattr(socket.socket, "setsockopt", recording)
    fds: set[int] = set()
    batches: list[int] = []
    held: list[Callable[[], object]] = []
    all_in = asyncio.Event()

    async def submit(readings: list[Reading], on_spooled: Callable[[], object] | None = None) -> None:
        assert s.client is not None and on_spooled is not None
        fds.add(s.client._client.socket().fileno())
        batches.append(len(readings))
        held.append(on_spooled)  # no PUBACK goes back until all 10 are in
        if sum(batches) >= 10:
            for ack in held:
                ack()
            all_in.set()

    s, task = await subscribed(mosquitto.port, submit, all_in)
    with device(mosquitto.port) as dev:
        for i in range(10):
            publish_settlement(dev, i, 1795224600_000 + i).wait_for_publish(5)
            await asyncio.sleep(0.02)
        await task
    assert len(fds) == 1 and sum(batches) == 10
    (fd,) = fds
    quick = [c for c in calls if c[0] == fd and c[2] == socket.TCP_QUICKACK and c[3] == 1]
    assert len(quick) >= len(batches)  # a wake reads at least one batch
    assert (fd, socket.IPPROTO_TCP, socket.TCP_NODELAY, 1) in calls
    assert await delivered_again(mosquitto.port) == []  # acknowledged in the end: nothing left for the next test


async def test_a_message_the_spool_could_not_store_is_delivered_again_at_once(
    mosquitto: Service, tmp_path: Path
) -> None:
    """The spool's disk full (a small tmpfs, filled by another file): its write fails and the pipeline task ends,
    its supervisor starting it again. The message must come again. Left unacknowledged on a connection that stays
    up, the broker would send it only at the next reconnect, and each such message would hold a place in its
    in-flight window (20 on Mosquitto) until, full, it sent nothing more. The session's connection is ended
    instead, and the broker delivers it again on the next one, stored this time and acknowledged."""
    from tests.integration.test_state_store_faults import fill, small_tmpfs

    with small_tmpfs(tmp_path / "spool", "64k") as d:
        sp = Spool(d, max_bytes=32 * 1024, segment_bytes=8192, sync_interval_s=1.0)
        sp.open()
        filler = d / "filler"
        fill(filler)
        pipe = Pipeline(sp, {"FW-1": series_tags("formwork", "s", "FW-1", "")}, Metrics(), ack_linger_s=0.01)
        failures: list[str] = []
        sockets: list[int | None] = []
        first: Any = None

        async def supervised_pipeline() -> None:  # as gateway.tasks restarts it
            while True:
                try:
                    await pipe.run()
                except OSError as err:
                    failures.append(str(err))
                    sockets.append(first.fileno() if first is not None else None)  # as the pipeline gave up
                    filler.unlink()  # room again for the next attempt
                    await asyncio.sleep(0.05)

        s = session(mosquitto.port, pipe.submit)
        tasks = [
            asyncio.create_task(run_stream(s), name="session"),
            asyncio.create_task(supervised_pipeline(), name="pipeline"),
        ]
        try:
            await asyncio.wait_for(s.connected.wait(), 10)
            assert s.client is not None
            first = s.client._client._sock  # the connection the message comes on
            with device(mosquitto.port) as dev:
                publish_settlement(dev, 7.5).wait_for_publish(5)
                for _ in range(200):  # stored once the broker delivered it again
                    if sp.appended_lines:
                        break
                    await asyncio.sleep(0.05)
            await asyncio.wait_for(pipe.drained(), 10)  # fsynced and acknowledged
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            sp.close()
        assert len(failures) == 1 and "No space left" in failures[0]
        assert s.reconnects == 1  # the connection the message came on was ended, and a new one made
        # its socket closed as the pipeline gave up: aiomqtt's exit left it open until the broker took the session over
        assert sockets == [-1]
        stored = b"".join(seg.path.read_bytes() for seg in sp.segments).splitlines()
        assert len(stored) == 1 and b"settlement=7.5" in stored[0]  # once: the failed write left nothing behind
    assert await delivered_again(mosquitto.port) == []  # acknowledged in the end
