"""The acknowledgements one fsync made due: each connection's MQTT batches joined into one PUBACK write; and the
messages whose readings the spool could not make durable, delivered again instead."""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Callable
from pathlib import Path

import pytest

from drivers.mqtt.session import BatchAck
from gateway.acks import acknowledge
from gateway.metrics import Metrics
from gateway.pipeline import Pipeline
from gateway.spool import Spool
from telemetry.lineproto import series_tags
from telemetry.reading import Reading


def test_the_batches_of_one_connection_leave_in_one_write_in_their_order() -> None:
    writes: list[tuple[str, list[str]]] = []
    acked: list[str] = []

    def acker(conn: str) -> Callable[[list[Callable[[], object]]], None]:
        def ack_all(acks: list[Callable[[], object]]) -> None:
            writes.append((conn, [str(a()) for a in acks]))

        return ack_all

    a, b = acker("a"), acker("b")

    def mid(n: str) -> Callable[[], object]:
        return lambda: n

    callbacks: list[Callable[[], object]] = [
        BatchAck(a, [mid("1"), mid("2")]),
        lambda: acked.append("other"),  # not an MQTT batch (a test's or a tool's callback): called as it is
        BatchAck(b, [mid("x")]),
        BatchAck(a, [mid("3")]),
    ]
    acknowledge(callbacks)
    assert writes == [("a", ["1", "2", "3"]), ("b", ["x"])]
    assert acked == ["other"]


def test_single_message_batches_sharing_an_fsync_are_one_call() -> None:
    # the usual case at a few hundred messages a second: each message its own batch, several per fsync
    calls: list[int] = []
    acknowledge([BatchAck(lambda acks: calls.append(len(acks)), [lambda: None]) for _ in range(7)])
    assert calls == [1] * 7  # distinct ackers (one lambda each) stay apart
    calls.clear()

    def ack_all(acks: list[Callable[[], object]]) -> None:
        calls.append(len(acks))

    acknowledge([BatchAck(ack_all, [lambda: None]) for _ in range(7)])
    assert calls == [7]


class _FsyncFails(Spool):
    """A spool whose disk answers the fsync with EIO once (a dying SD card), then works again."""

    failed = False

    async def sync_async(self, busy: bool = False) -> None:
        if not self.failed:
            self.failed = True
            raise OSError(errno.EIO, "Input/output error")
        await super().sync_async(busy)


async def test_messages_whose_fsync_failed_are_delivered_again_not_acknowledged(tmp_path: Path) -> None:
    sp = _FsyncFails(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 16, sync_interval_s=1.0)
    sp.open()
    pipe = Pipeline(sp, {"D": series_tags("gas_detector", "s", "D", "")}, Metrics(), ack_linger_s=0.0)
    events: list[str] = []
    ts = 1_795_224_600_000_000_000

    def batch(name: str) -> BatchAck:
        return BatchAck(lambda acks: events.extend(f"ack {a()}" for a in acks), [lambda: name],
                        lambda: events.append(f"again {name}"))  # fmt: skip

    try:
        await pipe.submit([Reading("D", "lel", 1.0, ts)], batch("m1"))
        with pytest.raises(OSError, match="Input/output"):
            await pipe.run()
        assert events == ["again m1"]  # never acknowledged: its connection is ended and the broker sends it again
        task = asyncio.create_task(pipe.run())  # as gateway.tasks restarts it
        await pipe.submit([Reading("D", "lel", 1.0, ts)], batch("m1"))  # the redelivery
        async with asyncio.timeout(5):
            await pipe.drained()
        assert events == ["again m1", "ack m1"]
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    finally:
        sp.close()
