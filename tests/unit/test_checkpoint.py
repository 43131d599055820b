"""The state file's write-ahead log is copied into the database by the checkpointer's worker thread, never inside a
commit on the event loop's connection (where SQLite does it by itself every 1 000 pages: a 3.5-7 ms stall before a
siren); when the checkpointer stops, SQLite's own checkpoints come back. An alarm change's fsync is made by its
thread beside the siren, not in the commit. On a real SQLite file."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from alerting.checkpoint import AUTO_PAGES, LIMIT_PAGES, WalCheckpointer
from alerting.db import connect, tx

BLOB = 16_000  # four 4 KiB pages a row: 300 rows take the log well past SQLite's 1 000 pages


def _fill(conn: sqlite3.Connection, rows: int = 300) -> None:
    for _ in range(rows):
        with tx(conn):
            conn.execute("INSERT INTO t VALUES (randomblob(?))", (BLOB,))


def _state(path: Path) -> sqlite3.Connection:
    conn = connect(path)
    conn.execute("CREATE TABLE t(x BLOB)")
    return conn


def _wal_bytes(path: Path) -> int:
    return Path(f"{path}-wal").stat().st_size


def _autocheckpoint(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0])


def test_without_the_checkpointer_a_commit_checkpoints(tmp_path: Path) -> None:
    """What the checkpointer takes off the event loop: SQLite's own checkpoint, in the commit past 1 000 pages."""
    path = tmp_path / "state.db"
    conn = _state(path)
    before = path.stat().st_size
    _fill(conn)
    assert path.stat().st_size > before + 150 * BLOB  # the commit past 1 000 pages copied the log into it
    conn.close()


async def test_commits_leave_the_log_to_the_checkpointer_which_copies_it_all(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    conn = _state(path)
    cp = WalCheckpointer(conn, path, every_s=3600)  # its own passes are not waited for here: called below
    task = asyncio.create_task(cp.run())
    try:
        await asyncio.sleep(0)
        assert _autocheckpoint(conn) == 0
        before = path.stat().st_size
        _fill(conn)
        assert path.stat().st_size == before  # no commit copied anything into the database file
        assert await asyncio.to_thread(cp.checkpoint)  # the task's pass, in a worker thread
        frames, copied = cp.last
        assert frames == copied >= 300 * 4
        assert path.stat().st_size > before + 300 * BLOB
        assert conn.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 300
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert _autocheckpoint(conn) == AUTO_PAGES  # stopped: SQLite's own checkpoints are back
    conn.close()


async def test_the_task_checkpoints_after_writes_and_not_while_nothing_is_written(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    conn = _state(path)
    cp = WalCheckpointer(conn, path, every_s=0.02)
    task = asyncio.create_task(cp.run())
    try:
        await asyncio.sleep(0.1)
        assert cp.checkpoints == 0  # nothing written since it started (the table was made before)
        _fill(conn, 10)
        for _ in range(200):
            if cp.checkpoints:
                break
            await asyncio.sleep(0.02)
        assert cp.checkpoints == 1 and cp.last[0] == cp.last[1] > 0
        await asyncio.sleep(0.2)  # ten passes of nothing written
        assert cp.checkpoints == 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    conn.close()


async def test_a_checkpointer_that_fails_gives_sqlite_its_own_checkpoints_back(tmp_path: Path) -> None:
    """Its failure is raised to the supervisor (which logs, counts and restarts it); the log is never left to grow."""
    path = tmp_path / "state.db"
    conn = _state(path)
    cp = WalCheckpointer(conn, tmp_path / "gone.db", every_s=0.01)  # no such file: opened, never created
    task = asyncio.create_task(cp.run())
    await asyncio.sleep(0)
    assert _autocheckpoint(conn) == 0
    _fill(conn, 1)
    with pytest.raises(sqlite3.OperationalError, match="unable to open database file"):
        await asyncio.wait_for(task, 10)
    assert _autocheckpoint(conn) == AUTO_PAGES
    assert not (tmp_path / "gone.db").exists()
    conn.close()


async def test_writes_that_never_pause_get_sqlites_own_checkpoints_back_past_the_limit(tmp_path: Path) -> None:
    """The log starts over only when a transaction begins with all of it copied: a writer that never pauses (an
    alarm storm) keeps that from happening while the checkpointer copies in its thread, and the log would grow
    without end. Past LIMIT_PAGES the commits checkpoint again, as SQLite does by itself, and the log stays bounded."""
    path = tmp_path / "state.db"
    conn = _state(path)
    cp = WalCheckpointer(conn, path, every_s=0.005)
    task = asyncio.create_task(cp.run())
    autos: set[int] = set()
    try:
        await asyncio.sleep(0)
        for _ in range(3 * LIMIT_PAGES // 4):  # 3 x LIMIT_PAGES pages written, one row of four pages at a time
            with tx(conn):
                conn.execute("INSERT INTO t VALUES (randomblob(?))", (BLOB,))
            autos.add(_autocheckpoint(conn))
            await asyncio.sleep(0)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert cp.checkpoints > 0
    assert autos == {0, AUTO_PAGES}  # the commits were left alone, until the log passed the limit
    assert _wal_bytes(path) < 2 * LIMIT_PAGES * 4096  # 3 x LIMIT_PAGES written: bounded, not all of it
    conn.close()


def _synchronous(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA synchronous").fetchone()[0])


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, bool]]:
    """Python's fsyncs as they are made: (the file, made on the main thread)."""
    made: list[tuple[str, bool]] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        made.append((os.readlink(f"/proc/self/fd/{fd}"), threading.current_thread() is threading.main_thread()))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return made


def _change_behind(cp: WalCheckpointer, conn: sqlite3.Connection, value: int = 1) -> None:
    """One change made behind: its commit leaves the fsync to the checkpointer (when it runs)."""
    with cp.fsync_behind(), tx(conn):
        conn.execute("INSERT INTO t VALUES (?)", (value,))


async def _running_with_a_change_behind(cp: WalCheckpointer, conn: sqlite3.Connection) -> asyncio.Task[None]:
    """The checkpointer's task started (into its wait), then one change made behind in the same loop turn."""
    task = asyncio.create_task(cp.run())
    await asyncio.sleep(0)
    _change_behind(cp, conn)
    return task


async def _until(cond: Callable[[], bool]) -> None:
    for _ in range(500):
        if cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("not within 5 s")


async def test_a_change_made_behind_is_committed_without_its_fsync_and_the_thread_makes_it(
    tmp_path: Path, fsyncs: list[tuple[str, bool]]
) -> None:
    """The siren no longer waits for its alarm change's fsync: the commit only writes the log (synchronous=NORMAL)
    and the checkpointer's thread fsyncs it right after, not at its next pass (an hour away here)."""
    path = tmp_path / "state.db"
    conn = _state(path)
    cp = WalCheckpointer(conn, path, every_s=3600)
    task = asyncio.create_task(cp.run())
    try:
        await asyncio.sleep(0)
        assert cp.running and _synchronous(conn) == 2  # FULL, as alerting/db.py opens it
        with cp.fsync_behind(), tx(conn):
            conn.execute("INSERT INTO t VALUES (1)")
            assert _synchronous(conn) == 1  # NORMAL: SQLite writes the log at the commit, and does not sync it
        assert _synchronous(conn) == 2  # every other write fsyncs in its commit again
        assert cp.syncs == 0  # not in the commit's loop turn: the siren's sender goes first
        await _until(lambda: cp.syncs == 1)
        assert fsyncs == [(f"{path.resolve()}-wal", False)]  # the log, from a worker thread
        assert cp.checkpoints == 0
        with tx(conn):  # a write not made behind leaves the thread nothing to do
            conn.execute("INSERT INTO t VALUES (2)")
        await asyncio.sleep(0.05)
        assert cp.syncs == 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    conn.close()


async def test_without_the_task_a_change_fsyncs_in_its_commit(tmp_path: Path, fsyncs: list[tuple[str, bool]]) -> None:
    path = tmp_path / "state.db"
    conn = _state(path)
    cp = WalCheckpointer(conn, path, every_s=3600)  # never run
    with cp.fsync_behind(), tx(conn):
        conn.execute("INSERT INTO t VALUES (1)")
        assert _synchronous(conn) == 2
    assert cp.syncs == 0 and fsyncs == []
    conn.close()


async def test_a_task_stopped_before_its_fsync_makes_it_as_it_stops(
    tmp_path: Path, fsyncs: list[tuple[str, bool]]
) -> None:
    path = tmp_path / "state.db"
    conn = _state(path)
    cp = WalCheckpointer(conn, path, every_s=3600)
    task = await _running_with_a_change_behind(cp, conn)
    task.cancel()  # in the commit's loop turn: before the task could hand the fsync to its thread
    await asyncio.gather(task, return_exceptions=True)
    assert cp.syncs == 1 and fsyncs == [(f"{path.resolve()}-wal", True)]  # on the loop, as the commit would have
    assert not cp.running
    conn.close()


async def test_a_failing_fsync_is_raised_and_commits_fsync_for_themselves_again(tmp_path: Path) -> None:
    """The supervisor logs, counts and restarts it (the siren's fault notice, /health); meanwhile nothing is left
    to it."""
    path = tmp_path / "state.db"
    conn = _state(path)
    other = tmp_path / "other.db"
    sqlite3.connect(other).close()  # a file with no log: its "-wal" cannot be opened
    cp = WalCheckpointer(conn, other, every_s=3600)
    task = await _running_with_a_change_behind(cp, conn)
    with pytest.raises(FileNotFoundError, match=r"other\.db-wal"):
        await asyncio.wait_for(task, 10)
    assert not cp.running
    with cp.fsync_behind(), tx(conn):
        conn.execute("INSERT INTO t VALUES (2)")
        assert _synchronous(conn) == 2
    conn.close()


async def test_a_task_stopped_after_its_connection_closed_has_nothing_left_to_sync(tmp_path: Path) -> None:
    """Closing the last connection copies the log into the file, fsyncs it and deletes it: nothing is left to make
    durable, and the stop is a stop, not a failure."""
    path = tmp_path / "state.db"
    conn = _state(path)
    cp = WalCheckpointer(conn, path, every_s=3600)
    task = await _running_with_a_change_behind(cp, conn)
    conn.close()
    assert not os.path.exists(f"{path}-wal")  # noqa: ASYNC240 (a test, no loop to keep free)
    task.cancel()
    (result,) = await asyncio.gather(task, return_exceptions=True)
    assert isinstance(result, asyncio.CancelledError)
    assert cp.syncs == 0
    assert sqlite3.connect(path).execute("SELECT x FROM t").fetchall() == [(1,)]
