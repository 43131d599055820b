"""The spool's drainer against a database held in the test's hand: what it counts when the bound drops a segment
whose lines are being written, and how many segments an outage leaves."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.influx import WriteError
from gateway.metrics import Metrics
from gateway.spool import Spool
from gateway.writer import SpoolDrainer


def lines(a: int, b: int) -> bytes:
    return b"".join(f"m,device=d v={i} {i}\n".encode() for i in range(a, b))


class HeldDatabase:
    """A writer whose first write waits for `release` (and then fails if `fail_first`); the rest succeed."""

    target = "held"

    def __init__(self, fail_first: bool = False) -> None:
        self.fail_first = fail_first
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.calls = 0
        self.stored = 0  # lines the database took

    async def write(self, data: bytes) -> None:
        self.calls += 1
        if self.calls == 1:
            self.started.set()
            await self.release.wait()
            if self.fail_first:
                raise WriteError("connection reset", retryable=True)
        self.stored += data.count(b"\n")

    async def aclose(self) -> None:
        pass


def segment_files(directory: Path) -> int:
    return len(list(directory.glob("seg-*.lp")))


async def until(cond: Callable[[], bool], what: str) -> None:
    for _ in range(2000):
        if cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out: {what}")


@pytest.mark.parametrize("fail", [False, True], ids=["written", "write-failed"])
async def test_a_chunk_in_flight_whose_segment_is_dropped_is_counted_once(tmp_path: Path, fail: bool) -> None:
    """The bound drops the oldest segment while the drainer's write of its first lines is in flight. Those lines
    were counted dropped and then, the write succeeding, written too (written=70 dropped=80 for 350 lines in the
    review's run). Now: written if the database took them, dropped if that write failed."""
    sp = Spool(tmp_path, max_bytes=6000, segment_bytes=1500, fsync=False)
    sp.open()
    sp.append(lines(0, 50), 50)
    m = Metrics()
    db = HeldDatabase(fail_first=fail)
    dr = SpoolDrainer(sp, db, m, batch_lines=10, replay_lines_per_s=1e9, rejected_file=tmp_path / "rej.lp", linger_s=0)
    task = asyncio.create_task(dr.run())
    try:
        await db.started.wait()  # lines 0-9 are in flight
        for i in range(50, 350, 10):
            sp.append(lines(i, i + 10), 10)  # over the bound: the first segment, the one in flight, is dropped
        assert sp.dropped_lines > 0 and sp.segments[0].seq > 1
        db.release.set()
        await until(lambda: sp.pending_bytes() == 0, "the spool drained")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        sp.close()
    assert db.stored == m.lines_written
    assert m.lines_written + sp.dropped_lines == 350  # every line either written or dropped, none both


class FlakyDatabase:
    """Down until told otherwise: each write waits for the test's verdict (`outcomes`), then fails or succeeds; once
    one succeeds, it is up and takes every write at once."""

    target = "flaky"

    def __init__(self) -> None:
        self.up = False
        self.outcomes: asyncio.Queue[bool] = asyncio.Queue()
        self.attempts = 0
        self.got: list[bytes] = []

    async def write(self, data: bytes) -> None:
        if not self.up:
            self.attempts += 1
            if not await self.outcomes.get():
                raise WriteError("connection refused", retryable=True)
            self.up = True
        self.got += data.splitlines()

    async def aclose(self) -> None:
        pass


class QuickRetries(SpoolDrainer):
    """The drainer with its backoff made short: the test counts attempts, not seconds."""

    async def _outage(self, err: Exception) -> None:
        self._backoff = 0.001
        await super()._outage(err)


@pytest.mark.parametrize("segment_bytes", [1 << 20, 16 << 10], ids=["small-outage", "rolls"])
async def test_an_outage_leaves_few_segments_and_its_last_interval_goes_before_the_backlog(
    tmp_path: Path, segment_bytes: int
) -> None:
    """Each failed attempt started a segment of its own (<= 2 s apart: ~43 000 files a day of outage). Now only a
    live segment of a sixteenth of `segment_bytes` starts another (Spool.outage_roll): an outage's segments are
    that big at least. When the database is back the live segment, with the lines of the last retry interval, goes
    before the backlog's replay ends, and every line is written once."""
    sp = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=segment_bytes, fsync=False)
    sp.open()
    db = FlakyDatabase()
    m = Metrics()
    dr = QuickRetries(sp, db, m, batch_lines=10, replay_lines_per_s=1e9, rejected_file=tmp_path / "rej.lp", linger_s=0)
    task = asyncio.create_task(dr.run())
    try:
        for k in range(30):
            sp.append(lines(10 * k, 10 * k + 10), 10)  # ~300 bytes an attempt
            await until(lambda k=k: db.attempts == k + 1, "an attempt")
            db.outcomes.put_nowait(False)
        await until(lambda: db.attempts == 31, "the attempt after the last failed one")
        rolls = len(sp.segments) - 1
        # one a sixteenth of segment_bytes at least (30 before: one an attempt)
        assert rolls == 0 if segment_bytes == 1 << 20 else 1 <= rolls <= len(lines(0, 300)) // (segment_bytes // 16)
        backlog = [x for seg in sp.segments if seg.seq < sp.live_from for x in seg.path.read_bytes().splitlines()]
        last_interval = lines(300, 305)
        sp.append(last_interval, 5)  # came after the last failed attempt: live once the database is back
        db.outcomes.put_nowait(True)
        await until(lambda: sp.pending_bytes() == 0, "the spool drained")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        sp.close()
    assert sorted(db.got) == sorted(lines(0, 305).splitlines()) and m.lines_written == 305
    if not backlog:  # one live segment: in order, from the attempt that found the database back
        assert db.got == lines(0, 305).splitlines()
    if backlog:  # the last interval not behind the whole replay (live and backlog chunks go in turns)
        assert max(db.got.index(x) for x in last_interval.splitlines()) < max(db.got.index(x) for x in backlog)
    assert segment_files(tmp_path) <= 2
