"""When and where the spool's fsyncs run (inline or in a worker thread, from how long they take), and its state file."""

from __future__ import annotations

import os
import time
from pathlib import Path


def write_state(path: Path, text: str, tmp_suffix: str) -> None:
    # No fsync: a lost ack after a power cut only means a resend, which overwrites the same points.
    tmp = path.with_suffix(tmp_suffix)
    tmp.write_text(text)
    os.replace(tmp, path)


def sync_and_close(fd: int) -> float:
    """fsync a duplicate descriptor and close it; how long the fsync took."""
    try:
        t0 = time.perf_counter()
        os.fsync(fd)
        return time.perf_counter() - t0
    finally:
        os.close(fd)


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
