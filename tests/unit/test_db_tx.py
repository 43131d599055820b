"""alerting.db.tx on a real SQLite file: nesting as savepoints, and commits without the fsync."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from alerting.db import connect, sync_wal, tx, wal_path


@pytest.fixture
def conn(tmp_path: Path) -> sqlite3.Connection:
    c = connect(tmp_path / "state.db")
    c.execute("CREATE TABLE t(x INTEGER)")
    return c


def values(c: sqlite3.Connection) -> list[int]:
    return [r[0] for r in c.execute("SELECT x FROM t ORDER BY x")]


def test_an_inner_change_that_fails_and_is_caught_leaves_nothing_while_the_outer_one_commits(
    conn: sqlite3.Connection,
) -> None:
    with tx(conn):
        conn.execute("INSERT INTO t VALUES (1)")
        with pytest.raises(ValueError), tx(conn):
            conn.execute("INSERT INTO t VALUES (2)")
            raise ValueError("this step cannot fire")
        with tx(conn):
            conn.execute("INSERT INTO t VALUES (3)")
    assert values(conn) == [1, 3]


def test_an_inner_failure_not_caught_rolls_back_the_outer_change_too(conn: sqlite3.Connection) -> None:
    with pytest.raises(ValueError), tx(conn):
        conn.execute("INSERT INTO t VALUES (1)")
        with tx(conn):
            conn.execute("INSERT INTO t VALUES (2)")
            raise ValueError("boom")
    assert values(conn) == [] and not conn.in_transaction


def test_a_commit_without_fsync_is_normal_for_itself_only(conn: sqlite3.Connection) -> None:
    seen: list[int] = []
    with tx(conn, durable=False):
        seen.append(conn.execute("PRAGMA synchronous").fetchone()[0])
        conn.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(ValueError), tx(conn, durable=False):
        raise ValueError("rolled back")
    assert seen == [1]  # NORMAL inside
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL after, after a failure too
    assert values(conn) == [1]


def test_the_wal_is_found_and_synced_and_a_missing_one_is_nothing_to_sync(conn: sqlite3.Connection) -> None:
    with tx(conn, durable=False):
        conn.execute("INSERT INTO t VALUES (1)")
    wal = wal_path(conn)
    assert wal is not None and wal.name == "state.db-wal" and wal.stat().st_size > 0
    sync_wal(wal)
    sync_wal(wal.with_name("gone.db-wal"))
    assert wal_path(sqlite3.connect(":memory:")) is None
