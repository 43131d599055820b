"""alerting.db.tx on a real SQLite file: nesting as savepoints."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from alerting.db import after_commit, connect, tx


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


def test_after_commit_runs_once_the_outer_transaction_committed_and_never_for_a_part_rolled_back(
    conn: sqlite3.Connection,
) -> None:
    ran: list[str] = []
    assert not after_commit(conn, lambda: ran.append("outside"))  # no transaction: nothing to wait for
    with tx(conn):
        conn.execute("INSERT INTO t VALUES (1)")
        assert after_commit(conn, lambda: ran.append("outer"))
        with tx(conn):
            assert after_commit(conn, lambda: ran.append("kept savepoint"))
        with pytest.raises(ValueError), tx(conn):
            conn.execute("INSERT INTO t VALUES (2)")
            assert after_commit(conn, lambda: ran.append("rolled-back savepoint"))
            raise ValueError("this step cannot fire")
        assert ran == []  # nothing before the commit
    assert ran == ["outer", "kept savepoint"]
    assert values(conn) == [1]

    with pytest.raises(ValueError), tx(conn):
        conn.execute("INSERT INTO t VALUES (3)")
        after_commit(conn, lambda: ran.append("rolled back"))
        raise ValueError("boom")
    with tx(conn):
        pass  # a later transaction does not inherit what the rolled-back one registered
    assert ran == ["outer", "kept savepoint"] and values(conn) == [1]


def test_after_commit_sees_the_change_durable_for_other_connections(conn: sqlite3.Connection, tmp_path: Path) -> None:
    other = sqlite3.connect(tmp_path / "state.db")
    seen: list[list[int]] = []
    with tx(conn):
        conn.execute("INSERT INTO t VALUES (7)")
        after_commit(conn, lambda: seen.append([r[0] for r in other.execute("SELECT x FROM t")]))
    assert seen == [[7]]


def test_a_commit_that_fails_rolls_back_and_leaves_no_transaction_open(conn: sqlite3.Connection) -> None:
    """A COMMIT can fail and leave the transaction open (busy, a deferred constraint): every later tx() would then be
    a savepoint of it, and nothing would ever be committed again."""
    conn.execute("CREATE TABLE parent(id INTEGER PRIMARY KEY)")
    conn.execute("CREATE TABLE child(parent_id INTEGER REFERENCES parent(id))")
    ran: list[str] = []
    with pytest.raises(sqlite3.IntegrityError), tx(conn):
        conn.execute("PRAGMA defer_foreign_keys=ON")  # the constraint is checked at COMMIT
        conn.execute("INSERT INTO child VALUES (999)")
        conn.execute("INSERT INTO t VALUES (1)")
        after_commit(conn, lambda: ran.append("sent"))
    assert not conn.in_transaction and values(conn) == [] and ran == []
    with tx(conn):
        conn.execute("INSERT INTO t VALUES (2)")
    assert values(conn) == [2]


def test_a_failing_follow_up_is_logged_and_the_commit_stands(
    conn: sqlite3.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    ran: list[str] = []

    def broken() -> None:
        raise RuntimeError("a bug after the commit")

    with tx(conn):
        conn.execute("INSERT INTO t VALUES (1)")
        after_commit(conn, broken)
        after_commit(conn, lambda: ran.append("second"))
    assert values(conn) == [1] and ran == ["second"]
    assert "a follow-up of a committed transaction failed" in caplog.text and "a bug after the commit" in caplog.text
