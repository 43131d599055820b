"""The state file's write-ahead log copied into the database by a worker thread, never inside an alarm's commit."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
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
    checkpoints come back: the log never grows without bound."""

    def __init__(self, conn: sqlite3.Connection, path: Path | str, every_s: float) -> None:
        self.conn = conn  # the event loop's connection
        # read-write, never created: a path that is not the state file any more is an error, not a new empty file
        self.uri = Path(path).resolve().as_uri() + "?mode=rw"
        self.every_s = every_s  # (alarms.checkpoint_s: its default is the config's, not a second one here)
        self.checkpoints = 0  # run so far
        self.last = (0, 0)  # the last one's frames in the log, and of them in the database file (tests, diagnosis)
        self._seen = conn.total_changes

    async def run(self) -> None:
        self.conn.execute("PRAGMA wal_autocheckpoint=0")
        try:
            while True:
                await asyncio.sleep(self.every_s)
                changes = self.conn.total_changes  # rows written by the loop's connection so far
                if changes == self._seen:
                    continue
                if await asyncio.to_thread(self.checkpoint):
                    self._seen = changes
                starved = self.last[0] > LIMIT_PAGES
                self.conn.execute(f"PRAGMA wal_autocheckpoint={AUTO_PAGES if starved else 0}")
        finally:
            # (a connection closed already, by a shutdown that closed it first, needs nothing back)
            with contextlib.suppress(sqlite3.ProgrammingError):
                self.conn.execute(f"PRAGMA wal_autocheckpoint={AUTO_PAGES}")

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
