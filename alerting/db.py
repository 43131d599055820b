"""The state database (alarms, escalations, deliveries, hazards, audit): one SQLite file in WAL mode."""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alerting.schema import migrate, refuse_newer

log = logging.getLogger("sitegw.alarms")


def connect(path: Path | str) -> sqlite3.Connection:
    """Open (creating) the database. Autocommit mode: writers group statements with `tx()`.

    synchronous=FULL: an acknowledged alarm or a sent escalation must survive a power cut, not only a kill -9;
    these writes are rare (transitions, not readings). An alarm change from readings has its fsync made beside the
    siren instead, by a worker thread (alerting/checkpoint.py fsync_behind).
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


# Callbacks waiting for a transaction to commit, per connection: one list per nesting level (the transaction, then
# each savepoint inside it), so a savepoint that rolls back takes its callbacks with it.
_after: dict[int, list[list[Callable[[], None]]]] = {}


def after_commit(conn: sqlite3.Connection, fn: Callable[[], None]) -> bool:
    """Run `fn` once the `tx()` in progress on `conn` has committed (never if it rolls back); False, and nothing
    registered, outside one. For work that must wait until a change is durable (sending a siren's message)."""
    levels = _after.get(id(conn))
    if not levels or not conn.in_transaction:
        return False
    levels[-1].append(fn)
    return True


@contextmanager
def tx(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One atomic write transaction (BEGIN IMMEDIATE ... COMMIT, ROLLBACK on any exception). Nests: an inner call
    is a savepoint of the outer transaction, so a module can call another module's writer inside its own change,
    and an inner change that fails (and is caught) leaves nothing behind while the outer one goes on."""
    if conn.in_transaction:
        levels = _after.get(id(conn))
        if levels is not None:
            levels.append([])
        conn.execute("SAVEPOINT tx")
        try:
            yield conn
        except BaseException:
            if levels is not None:
                levels.pop()  # what was to follow this part's commit goes with it
            if conn.in_transaction:  # after SQLITE_FULL or an I/O error SQLite may have rolled back everything
                conn.execute("ROLLBACK TO tx")
                conn.execute("RELEASE tx")
            raise
        conn.execute("RELEASE tx")
        if levels is not None:
            done = levels.pop()
            levels[-1].extend(done)
        return
    conn.execute("BEGIN IMMEDIATE")
    key = id(conn)
    levels = _after[key] = [[]]
    try:
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            # SQLite has already rolled back after some errors (SQLITE_FULL, an I/O error); a COMMIT that failed
            # (busy, a deferred constraint) leaves the transaction open, and every later tx() would be its savepoint
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    finally:
        if _after.get(key) is levels:  # a transaction opened meanwhile after SQLite ended this one has its own
            del _after[key]
    for fn in levels[0]:
        try:
            fn()
        except Exception:  # the change is committed: a failing follow-up must not make the caller think otherwise
            log.exception("a follow-up of a committed transaction failed")


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
