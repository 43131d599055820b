"""The state file's write-ahead log made durable and copied into the database by a worker thread, off the loop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

# SQLite's own threshold (pages in the log), which every connection has unless told otherwise; the event loop's
# connection goes back to it whenever the checkpointer is not running
AUTO_PAGES = 1000
# the log starts over only when a transaction begins with every frame copied; writes that never pause (a storm of
# alarm changes) can keep that from happening: past this many pages SQLite's own checkpoints bound it again
LIMIT_PAGES = 4 * AUTO_PAGES


class WalCheckpointer:
    """By itself SQLite checkpoints (copies the log into the database file and fsyncs it) inside the commit that
    takes the log past 1 000 pages, on the connection that made it: here the event loop's, in an alarm's transaction
    before its siren, with the loop stopped meanwhile. An alarm change writes ~18 pages, so one alarm in ~55 carried
    a checkpoint: 3.5-7 ms under the alarm-latency benchmark's load, twice a run (found with a probe on
    `sitegw run`). While `run` runs, the loop's connection does not checkpoint; this task does, every `every_s`
    seconds in which something was written, from a connection of its own in a worker thread. Its checkpoint is
    PASSIVE, as SQLite's own: it never waits for the writer, and the writer never waits for it (WAL mode lets a
    commit append to the log while earlier frames are being copied). Writes that never pause keep the log from
    starting over; past LIMIT_PAGES the commits checkpoint again, as SQLite's own do, until a pass finds it short.
    When the task ends (cancelled, or failed: the supervisor logs, counts and restarts it), SQLite's own
    checkpoints come back: the log never grows without bound.

    It also takes the fsync out of an alarm change's commit (`fsync_behind`): the siren's message goes out while
    this task's thread makes the change durable, not after it (see there)."""

    def __init__(self, conn: sqlite3.Connection, path: Path | str, every_s: float) -> None:
        self.conn = conn  # the event loop's connection
        # read-write, never created: a path that is not the state file any more is an error, not a new empty file
        self.uri = Path(path).resolve().as_uri() + "?mode=rw"
        self.every_s = every_s  # (alarms.checkpoint_s: its default is the config's, not a second one here)
        self.checkpoints = 0  # run so far
        self.last = (0, 0)  # the last one's frames in the log, and of them in the database file (tests, diagnosis)
        self._seen = conn.total_changes
        self.wal = Path(f"{Path(path).resolve()}-wal")  # SQLite's name for the file's log
        self.syncs = 0  # fsyncs of the log made for `fsync_behind`, so far
        self.running = False  # `run` is running: commits may leave their fsync to it
        self._wake: asyncio.Event | None = None
        self._sync_due = False

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        wake = self._wake = asyncio.Event()
        self.conn.execute("PRAGMA wal_autocheckpoint=0")
        self.running = True
        next_pass = loop.time() + self.every_s
        try:
            while True:
                # a timer, not asyncio.timeout: one expiring in the loop turn of a cancel swallowed the cancel
                # (CPython gh-86296, alerting/escalation/pipeline.py)
                timer = loop.call_at(next_pass, wake.set)
                try:
                    await wake.wait()
                finally:
                    timer.cancel()
                wake.clear()
                if self._sync_due:
                    self._sync_due = False
                    await asyncio.to_thread(self.sync_log)
                if loop.time() < next_pass:
                    continue
                next_pass = loop.time() + self.every_s
                changes = self.conn.total_changes  # rows written by the loop's connection so far
                if changes == self._seen:
                    continue
                if await asyncio.to_thread(self.checkpoint):
                    self._seen = changes
                starved = self.last[0] > LIMIT_PAGES
                self.conn.execute(f"PRAGMA wal_autocheckpoint={AUTO_PAGES if starved else 0}")
        finally:
            self.running = False  # commits fsync for themselves again
            if self._sync_due:  # stopped before its thread made it: made here, on the loop, as the commit would have
                self._sync_due = False
                # no log left: its connection closed first, and SQLite copied the log into the file and fsynced it
                with contextlib.suppress(FileNotFoundError):
                    self.sync_log()
            # (a connection closed already, by a shutdown that closed it first, needs nothing back)
            with contextlib.suppress(sqlite3.ProgrammingError):
                self.conn.execute(f"PRAGMA wal_autocheckpoint={AUTO_PAGES}")

    @contextlib.contextmanager
    def fsync_behind(self) -> Iterator[None]:
        """Around a transaction on the loop's connection (an alarm change from readings): while `run` runs, the
        commit leaves its fsync (synchronous=NORMAL: the log is written, not synced) to this task's thread, which
        makes it right after, while the siren's message goes out. A commit's fsync on the loop was 0.3 ms on a quiet
        disk and 3-7 ms behind the spool's and InfluxDB's fsyncs (a probe on `sitegw run`); the siren waited for it.

        What it trades: a power cut in the few ms between the commit and the thread's fsync loses the change. The
        reading that made it is not durable yet either: its fsync in the spool starts later (after its evaluation,
        within ack_linger_s), so its QoS 1 message is still unacknowledged and comes again: the alarm is raised
        again, and sounds again (after a QoS 0 message, the next reading over the threshold does). Changes
        a person makes (acknowledging, shelving) and escalation's writes still fsync in their commit. When the task
        is not running (stopped, failed), every commit fsyncs for itself."""
        conn = self.conn
        if not self.running or conn.in_transaction:  # (SQLite refuses the pragma inside a transaction)
            yield
            return
        conn.execute("PRAGMA synchronous=NORMAL")
        try:
            yield
        finally:
            conn.execute("PRAGMA synchronous=FULL")  # (alerting/db.py connect's)
            self._sync_due = True
            if self._wake is not None:
                self._wake.set()

    def sync_log(self) -> None:
        """fsync the state file's log (in a worker thread): what commits made with `fsync_behind` wrote is durable."""
        fd = os.open(self.wal, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        self.syncs += 1

    def checkpoint(self) -> bool:
        """One PASSIVE checkpoint (in a worker thread): True when every frame of the log is in the database file
        (a reader of an older snapshot can hold some back; the next pass takes them)."""
        conn = sqlite3.connect(self.uri, isolation_level=None, uri=True)
        try:
            _busy, log_frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        finally:
            conn.close()
        self.checkpoints += 1
        self.last = (log_frames, copied)
        return bool(log_frames == copied)
