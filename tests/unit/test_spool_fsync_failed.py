"""A failed fsync of the spool is heard by the MQTT messages waiting on it, whoever's call met it: they are delivered
again, never acknowledged (gateway/spool_sync.py `FsyncTimer.fail`). Found by a review: the alarm engine's event
lines (`append`) or a roll fsynced inline, failed, and the pipeline then acknowledged a message written before with
no fsync having succeeded. The fault is an fsync that raises EIO (patched: no disk here fails one on demand)."""

from __future__ import annotations

import asyncio
import errno
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.metrics import Metrics
from gateway.pipeline import Pipeline
from gateway.spool import Spool
from telemetry.reading import Reading
from tests.unit.test_pipeline_inline import SERIES, TS, _batch, _spool, _waiting

EIO = OSError(errno.EIO, "Input/output error")


class _Disk:
    """os.fsync as a disk that fails when told to, and in the thread can hold an fsync until released."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.real = os.fsync
        self.failing = False
        self.hold: threading.Event | None = None
        self.entered = threading.Event()  # an fsync has begun
        self.calls = 0
        monkeypatch.setattr(os, "fsync", self)

    def __call__(self, fd: int) -> None:
        self.calls += 1
        self.entered.set()
        if self.hold is not None:
            self.hold.wait(5)
        if self.failing:
            raise EIO
        self.real(fd)


@pytest.fixture
def disk_spool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[_Disk, Spool]]:
    """A spool on a disk whose fsync fails when told to, closed after the test."""
    disk = _Disk(monkeypatch)
    sp = _spool(tmp_path)
    yield disk, sp
    sp.close()


async def test_a_failed_fsync_in_another_callers_call_redelivers_the_waiting_messages(
    disk_spool: tuple[_Disk, Spool],
) -> None:
    disk, sp = disk_spool
    events: list[str] = []
    pipe = Pipeline(sp, SERIES, Metrics(), ack_linger_s=0.2, ack_linger_messages=10)
    task = await _waiting(pipe)
    try:
        # written at once (not held: a QoS 0 message, a device's `up`), its acknowledgement waits for the fsync
        await pipe.submit([Reading("D", "lel", 26.0, TS)], _batch(events, "m1"))
        await asyncio.sleep(0.01)
        assert sp.appended_lines == 1 and events == []
        disk.failing = True
        with pytest.raises(OSError, match="Input/output error"):
            sp.append(b"alarm_events,alarm=a state=1i 1\n", 1)  # the alarm engine's event lines, fsynced inline
        disk.failing = False
        assert sp.sync_due_in() == 0.0  # due at once: those waiting hear it now, not at the linger's end
        sp.append(b"alarm_events,alarm=a state=0i 2\n", 1)  # another caller's own lines: fsynced, nothing raised
        assert sp.sync_due_in() == 0.0
        async with asyncio.timeout(5):
            with pytest.raises(OSError, match="Input/output error"):
                await task  # raised where the supervisor sees it, which restarts the task
        assert events == ["again m1"]  # delivered again, never acknowledged
        assert sp.fsyncs.failures == 1

        # heard once: the restarted pipeline writes, fsyncs and acknowledges as before
        task = await _waiting(pipe)
        await pipe.submit([Reading("D", "lel", 27.0, TS + 1)], _batch(events, "m2"))
        async with asyncio.timeout(5):
            await pipe.drained()
        assert events == ["again m1", "ack m2"]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_lines_written_while_the_threads_fsync_fails_are_not_acknowledged_by_the_next(
    disk_spool: tuple[_Disk, Spool],
) -> None:
    disk, sp = disk_spool
    sp.write(b"lel,device=D v=1 1\n", 1)
    disk.hold, disk.failing = threading.Event(), True
    fsync = asyncio.create_task(sp.sync_async(busy=True))  # in the thread
    assert await asyncio.to_thread(disk.entered.wait, 5)
    sp.write(b"lel,device=D v=2 2\n", 1)  # meanwhile (a held batch written by the pipeline's callback)
    disk.hold.set()
    with pytest.raises(OSError, match="Input/output error"):
        await fsync  # its own waiters hear it here
    disk.hold, disk.failing = None, False
    # Linux reports a file's write-back error once: the next fsync would succeed without the second line's
    # pages, so its waiters hear the failure instead, once
    assert sp.sync_due_in() == 0.0
    calls = disk.calls
    with pytest.raises(OSError, match="Input/output error"):
        await sp.sync_async()
    assert disk.calls == calls and sp.fsyncs.failed is None  # raised, not retried; heard once
    sp.write(b"lel,device=D v=3 3\n", 1)
    await sp.sync_async()  # a line written after it: fsynced as usual
    assert disk.calls == calls + 1 and sp.fsyncs.failures == 1 and sp.sync_due_in() is None


async def test_a_failed_fsync_its_own_caller_hears_is_not_raised_twice(disk_spool: tuple[_Disk, Spool]) -> None:
    disk, sp = disk_spool
    sp.write(b"lel,device=D v=1 1\n", 1)
    disk.failing = True
    with pytest.raises(OSError):
        await sp.sync_async(busy=True)  # nothing written meanwhile: only its waiters, who hear it now
    disk.failing = False
    assert sp.fsyncs.failed is None and sp.sync_due_in() is None and sp.fsyncs.failures == 0
