"""When and where the spool's fsyncs run (inline or in a thread), what a failed one owes, its state file and lines."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path


async def drained_by(pending: Callable[[], int], acked: asyncio.Event, deadline: float) -> bool:
    """Wait until `pending()` is 0 (True: the database has every line), each ack setting `acked`, or until
    time.monotonic() reaches `deadline` (False)."""
    while pending() and (left := deadline - time.monotonic()) > 0:
        acked.clear()
        with contextlib.suppress(TimeoutError):  # not wait_for: on 3.11 it can lose a cancel (CPython gh-86296)
            async with asyncio.timeout(left):
                await acked.wait()
    return pending() == 0


def write_state(path: Path, text: str, tmp_suffix: str) -> None:
    # No fsync: a lost ack after a power cut only means a resend, which overwrites the same points.
    tmp = path.with_suffix(tmp_suffix)
    tmp.write_text(text)
    os.replace(tmp, path)


def count_lines(path: Path, start: int, end: int) -> int:
    """Lines in bytes [start, end) of a segment file."""
    if end <= start:
        return 0
    n = 0
    with open(path, "rb") as fh:
        fh.seek(start)
        remaining = end - start
        while remaining > 0:
            buf = fh.read(min(remaining, 1 << 20))
            if not buf:
                break
            n += buf.count(b"\n")
            remaining -= len(buf)
    return n


def sync_and_close(fd: int) -> float:
    """fsync a duplicate descriptor and close it; how long the fsync took."""
    try:
        t0 = time.perf_counter()
        os.fsync(fd)
        return time.perf_counter() - t0
    finally:
        os.close(fd)


log = logging.getLogger("sitegw.spool")

# a descriptor to fsync and close, and where to answer; None: stop
_Job = tuple[int, asyncio.AbstractEventLoop, "asyncio.Future[float]"] | None


class FsyncWorker:
    """The spool's fsync thread: a descriptor handed over on a C queue, the answer back through one
    `call_soon_threadsafe`. asyncio.to_thread's executor did its thread-count bookkeeping on every submit (a
    semaphore written in Python, a lock, a work item): 4.5 % of the gateway's main thread at 4 000 msg/s, where an
    fsync is handed over every ten messages."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._q: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def sync(self, fd: int) -> asyncio.Future[float]:
        """fsync and close `fd` in the thread; the future has how long the fsync took, or what it raised. A wait on
        it that is cancelled leaves nothing behind: the thread still closes the descriptor."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[float] = loop.create_future()
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, args=(self._q,), name=self.name, daemon=True)
            self._thread.start()
        self._q.put((fd, loop, fut))
        return fut

    def _run(self, q: queue.SimpleQueue[_Job]) -> None:
        while (item := q.get()) is not None:
            fd, loop, fut = item
            try:
                took = sync_and_close(fd)
            except BaseException as err:  # whatever it is, the waiting task raises it (gateway/pipeline.py)
                _answer(loop, fut, None, err)
            else:
                _answer(loop, fut, took, None)

    def close(self) -> None:
        """The thread ends after the fsync it may be in; a `sync` after this starts another, on a queue of its own
        (on a shared one the new thread could take the old one's stop and leave it running)."""
        if self._thread is not None:
            self._q.put(None)
            self._q = queue.SimpleQueue()
            self._thread = None


def _answer(
    loop: asyncio.AbstractEventLoop, fut: asyncio.Future[float], took: float | None, err: BaseException | None
) -> None:
    try:
        loop.call_soon_threadsafe(_settle, fut, took, err)
    except RuntimeError:  # the loop has closed: nobody waits any more
        pass


def _settle(fut: asyncio.Future[float], took: float | None, err: BaseException | None) -> None:
    if fut.done():  # the wait was cancelled
        return
    if err is not None:
        fut.set_exception(err)
    else:
        assert took is not None
        fut.set_result(took)


# An fsync quicker than this costs the event loop less inline than the hop to a worker thread and back (submit,
# wake the worker, wake the loop through its self-pipe: ~100 µs of CPU at every batch). One that takes longer than
# SLOW_FSYNC_S inline sends the spool back to the thread at once: a slow disk never holds the loop twice in a row.
FAST_FSYNC_S = 0.0005
SLOW_FSYNC_S = 0.002


class FsyncTimer:
    """Decides where the next fsync runs from how long the recent ones took (a moving average)."""

    def __init__(self) -> None:
        self.avg_s: float | None = None
        self.inline = False
        self.inline_syncs = 0
        self.thread_syncs = 0
        self.db_writes = 0  # database writes in flight, counted by the spool's drainer (see inline_now)
        # a failed fsync, kept for the acknowledgements waiting on the spool's next fsync (`fail`): the pipeline's
        # Spool.sync_async raises it once and forgets it
        self.failed: OSError | None = None
        self.failures = 0

    def fail(self, err: OSError) -> None:
        """An fsync failed where those who wait on it may not hear it: in a call by someone else (the alarm engine's
        event lines, a roll), or in the thread while more lines were written. The lines written before it may never
        reach the disk, and Linux reports a file's write-back error once: the next fsync of the file would succeed
        without them. So the MQTT messages waiting on it must be delivered again, not acknowledged: the pipeline's
        next `sync_async` raises this (its acknowledgements are then redelivered, gateway/acks.py)."""
        self.failed = err
        self.failures += 1
        log.error("spool: an fsync failed (%s): the messages waiting on it are delivered again, not acknowledged", err)

    def inline_now(self) -> bool:
        """Whether the next fsync runs inline. Never while a database write is in flight: the database fsyncs its
        own log meanwhile, on a disk it often shares with the spool, and an fsync of ours then took 3-7 ms instead
        of 0.2, once a second (at each write), holding the event loop and the alarms arriving meanwhile."""
        return self.inline and not self.db_writes

    def took(self, seconds: float) -> None:
        self.avg_s = seconds if self.avg_s is None else 0.8 * self.avg_s + 0.2 * seconds
        if seconds > SLOW_FSYNC_S:
            self.inline, self.avg_s = False, seconds
        else:
            self.inline = self.avg_s < FAST_FSYNC_S
