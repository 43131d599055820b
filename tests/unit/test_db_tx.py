"""alerting.db.tx on a real SQLite file: nesting as savepoints."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from alerting.db import connect, tx


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
