"""Batches nobody waits on (Modbus polls) are evaluated and shown at once and written to the spool with their fsync
(gateway/pipeline.py `poll_linger_s`): one write per interval, in order with everything else, at once when someone
waits for the spool (`drained`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from drivers.mqtt.session import BatchAck
from gateway.metrics import Metrics
from gateway.pipeline import Pipeline
from gateway.spool import Spool
from telemetry.lineproto import series_tags
from telemetry.reading import Reading
from tests.unit.test_pipeline_inline import _waiting

TS = 1_795_224_600_000_000_000
SERIES = {"D": series_tags("gas_detector", "s", "D", ""), "M": series_tags("gas_detector", "s", "M", "")}


class CountingSpool(Spool):
    """The real spool, its writes counted."""

    writes = 0

    def write(self, data: bytes, lines: int) -> None:
        if data:
            self.writes += 1
        super().write(data, lines)


def _spool(tmp_path: Path) -> CountingSpool:
    sp = CountingSpool(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 16, sync_interval_s=0.3)
    sp.open()
    return sp


def _lines(sp: Spool) -> list[str]:
    return sp.segments[-1].path.read_text().splitlines()


@contextlib.asynccontextmanager
async def _running(pipe: Pipeline, sp: Spool) -> AsyncIterator[None]:
    """The pipeline's task, waiting on its empty queue; cancelled and the spool closed at the end."""
    task = await _waiting(pipe)
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        sp.close()


async def _until(cond: Callable[[], bool], what: str) -> None:
    for _ in range(500):
        if cond():
            return
        await asyncio.sleep(0.01)
    pytest.fail(f"not within 5 s: {what}")


async def test_polls_are_shown_at_once_and_written_together_with_their_fsync(tmp_path: Path) -> None:
    sp = _spool(tmp_path)
    alarms: list[float] = []
    console: list[float] = []
    pipe = Pipeline(sp, SERIES, Metrics(), listeners=[lambda b: alarms.extend(r.value for r in b)],
                    later=[lambda b: console.extend(r.value for r in b)], poll_linger_s=0.3)  # fmt: skip
    async with _running(pipe, sp):
        await pipe.submit([Reading("D", "lel", 1.0, TS)])
        await asyncio.sleep(0)
        await pipe.submit([Reading("D", "lel", 2.0, TS + 1)])
        # evaluated and on the console at once, in memory until the fsync falls due
        assert alarms == [1.0, 2.0] and console == [1.0, 2.0]
        assert pipe.latest[("D", "lel")].value == 2.0
        assert sp.writes == 0 and sp.appended_lines == 0 and _lines(sp) == []
        await _until(lambda: sp.appended_lines == 2, "the polls written")
        assert sp.writes == 1  # both in one write
        assert [ln.split(" ")[1] for ln in _lines(sp)] == ["lel=1.0", "lel=2.0"]
        await _until(lambda: sp.sync_due_in() is None, "their fsync")
        assert console == [1.0, 2.0]  # the later listeners saw them once


async def test_someone_waiting_for_the_spool_has_the_polls_written_at_once(tmp_path: Path) -> None:
    sp = _spool(tmp_path)
    pipe = Pipeline(sp, SERIES, Metrics(), poll_linger_s=30.0)
    async with _running(pipe, sp):
        await pipe.submit([Reading("D", "lel", 1.0, TS)])
        assert sp.appended_lines == 0
        async with asyncio.timeout(5):  # far sooner than the 30 s linger
            await pipe.drained()
        assert sp.appended_lines == 1 and sp.writes == 1


async def test_a_batch_written_at_once_goes_after_the_polls_before_it(tmp_path: Path) -> None:
    """An MQTT QoS 0 message (acknowledged by nobody: written at once) behind a waiting poll: the spool keeps the
    order of arrival."""
    sp = _spool(tmp_path)
    pipe = Pipeline(sp, SERIES, Metrics(), poll_linger_s=30.0)
    events: list[str] = []
    async with _running(pipe, sp):
        await pipe.submit([Reading("D", "lel", 1.0, TS)])
        await asyncio.sleep(0)
        at_once = BatchAck(lambda acks: events.extend(f"ack {a()}" for a in acks), [lambda: "m"],
                           lambda: events.append("again m"), False)  # fmt: skip
        await pipe.submit([Reading("M", "lel", 5.0, TS + 5)], at_once)
        await asyncio.sleep(0)  # (right after the callback that evaluated it)
        assert [ln.split(",")[1] for ln in _lines(sp)] == ["device=D", "device=M"]  # at once, the poll first


async def test_polls_are_written_on_the_grid_of_their_linger_not_a_linger_after_the_first(tmp_path: Path) -> None:
    """The write's timer falls due on the loop clock's whole second (the linger's grid, at most 1 s), where the polls
    and the periodic tasks wake the process anyway: not a wake-up of its own. Still within the linger."""
    loop = asyncio.get_running_loop()
    written: list[float] = []

    class TimedSpool(CountingSpool):
        def write(self, data: bytes, lines: int) -> None:
            written.append(loop.time())
            super().write(data, lines)

    sp = TimedSpool(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 16, sync_interval_s=0.3)
    sp.open()
    pipe = Pipeline(sp, SERIES, Metrics(), poll_linger_s=1.0)
    async with _running(pipe, sp):
        await asyncio.sleep(1.5 - loop.time() % 1.0)  # mid-second: the grid is half a linger away
        at = loop.time()
        await pipe.submit([Reading("D", "lel", 1.0, TS)])
        await _until(lambda: bool(written), "the poll written")
        grid = at - at % 1.0 + 1.0
        # on the grid (the timer is never early); a linger after the first poll would be 0.4-0.6 s later
        assert grid <= written[0] < at + 0.85, (at, written[0])
        assert _lines(sp) and sp.appended_lines == 1
