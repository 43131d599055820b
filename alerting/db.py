"""The state database (alarms, escalations, deliveries, hazards, audit): one SQLite file in WAL mode."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alerting.schema import migrate, refuse_newer


def connect(path: Path | str) -> sqlite3.Connection:
    """Open (creating) the database. Autocommit mode: writers group statements with `tx()`.

    synchronous=FULL: an acknowledged alarm or a sent escalation must survive a power cut, not only a kill -9;
    these writes are rare (transitions, not readings). The one exception, `tx(durable=False)`, is the escalation
    step between an alarm and its siren (see `tx`).
    """
    if isinstance(path, Path):
        path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    refuse_newer(conn)  # before WAL mode is written into the file's header: a newer release's file stays untouched
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    # short: this connection is used on the event loop, and only another process (an operator's sqlite3 shell, a
    # backup) ever holds the lock; a refused write is retried (alarms by the evaluator, escalation by its supervisor)
    # instead of stalling readings for seconds
    conn.execute("PRAGMA busy_timeout=250")
    migrate(conn)  # every table, at this release's version (alerting/schema.py)
    return conn


@contextmanager
def tx(conn: sqlite3.Connection, durable: bool = True) -> Iterator[sqlite3.Connection]:
    """One atomic write transaction (BEGIN IMMEDIATE ... COMMIT, ROLLBACK on any exception). Nests: an inner call
    is a savepoint of the outer transaction, so a module can call another module's writer inside its own change,
    and an inner change that fails (and is caught) leaves nothing behind while the outer one goes on.

    `durable=False` commits without the fsync (synchronous=NORMAL for this one commit): safe from a crash, and on
    a power cut it may be lost, with everything committed after it up to the next durable commit, which writes it
    to disk too. Only for changes that are done again when lost and followed by a durable commit: an escalation
    step's bookkeeping, redone from the durable alarm and schedule rows it came from, its sends at-least-once
    anyway, each send's outcome committed durably."""
    if conn.in_transaction:
        conn.execute("SAVEPOINT tx")
        try:
            yield conn
        except BaseException:
            if conn.in_transaction:  # after SQLITE_FULL or an I/O error SQLite may have rolled back everything
                conn.execute("ROLLBACK TO tx")
                conn.execute("RELEASE tx")
            raise
        conn.execute("RELEASE tx")
        return
    if not durable:
        conn.execute("PRAGMA synchronous=NORMAL")
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            if conn.in_transaction:  # SQLite has already rolled back after some errors (SQLITE_FULL, an I/O error)
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    finally:
        if not durable:
            conn.execute("PRAGMA synchronous=FULL")


def wal_path(conn: sqlite3.Connection) -> Path | None:
    """The write-ahead log of the connection's main database (None in memory)."""
    main = next((r[2] for r in conn.execute("PRAGMA database_list") if r[1] == "main"), "")
    return Path(main + "-wal") if main else None


def sync_wal(path: Path) -> None:
    """fsync the write-ahead log: every transaction committed into it so far is on disk (what a commit with
    synchronous=FULL does for its own). Safe from any thread: it touches the file, not the connection."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:  # checkpointed and removed: everything is in the database file, synced by then
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def audit(
    conn: sqlite3.Connection,
    at_ns: int,
    actor: str,
    action: str,
    target: str,
    why: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Record a write action: who, when, what, why. Call it inside the transaction of the change it records."""
    conn.execute(
        "INSERT INTO audit(at_ns, actor, action, target, why, detail) VALUES (?, ?, ?, ?, ?, ?)",
        (at_ns, actor, action, target, why, json.dumps(detail, ensure_ascii=False) if detail else None),
    )


def audit_rows(conn: sqlite3.Connection, target: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
    sql = "SELECT * FROM audit"
    args: tuple[Any, ...] = ()
    if target is not None:
        sql += " WHERE target = ?"
        args = (target,)
    rows = conn.execute(sql + " ORDER BY id DESC LIMIT ?", (*args, limit)).fetchall()
    return [{**dict(r), "detail": json.loads(r["detail"]) if r["detail"] else None} for r in rows]
