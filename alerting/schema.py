"""The state database's versioned migrations (PRAGMA user_version); the tables of version 1 are in schema_v1."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

from alerting.schema_v1 import V1


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}


def _v2(conn: sqlite3.Connection) -> None:
    # columns that releases before versioning added when they found them missing: a state file older still
    # has none of them (NULL for its rows)
    for table, column, decl in (
        ("alarm_alarms", "source_ns", "INTEGER"),
        ("hazard_record", "accept_note", "TEXT"),
        ("auth_sessions", "last_seen_ns", "INTEGER"),
    ):
        if column not in _columns(conn, table):
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")


# The uplink to a regional hub (issue 16): every alarm event and hazard change is written here in the transaction of
# the change (a transactional outbox) and deleted once the hub's broker has acknowledged it. `seq` orders a site's
# events and never repeats (AUTOINCREMENT); the file's random `epoch` keeps the ids of a new state file apart from
# those of the one it replaced, so the hub never takes a new event for a duplicate of an old one.
_V3 = """
CREATE TABLE IF NOT EXISTS uplink_outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ns INTEGER NOT NULL,
    kind TEXT NOT NULL,           -- alarm.raised, alarm.acked, ..., hazard.confirm, ...
    body TEXT NOT NULL            -- JSON
);
CREATE TABLE IF NOT EXISTS uplink_meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
INSERT OR IGNORE INTO uplink_meta VALUES ('epoch', lower(hex(randomblob(8))));
"""


# Supervision notices (督办通知) from the regional hub: kept by the hub's id (a resend changes nothing), each
# receipt and acknowledgement reported back through the outbox in the same transaction.
_V4 = """
CREATE TABLE IF NOT EXISTS notices (
    id INTEGER PRIMARY KEY,       -- the hub's id
    sent_ns INTEGER NOT NULL,     -- when the hub's user sent it
    sent_by TEXT NOT NULL,        -- who, as the hub names them (user and office)
    text TEXT NOT NULL,
    hazard_id INTEGER,            -- this site's hazard it is about, if any
    due TEXT,                     -- ISO local date the authority expects an answer by, if any
    received_ns INTEGER NOT NULL,
    acked_ns INTEGER,
    acked_by TEXT,
    ack_note TEXT
);
"""


# Indexes for the escalation's queries in an alarm's path, whose tables only grow (a row per message sent): the due
# retries and the next retry's time were a scan of every delivery ever made, a clear's follow-up one of every message
# sent, in the transaction before the siren and in each pass of the loop (at least once a second).
_V5 = """
CREATE INDEX IF NOT EXISTS esc_deliveries_retry ON esc_deliveries(next_try_ns) WHERE status = 'retry';
CREATE INDEX IF NOT EXISTS esc_outbox_alarm ON esc_outbox(alarm_id, status);
"""


# Uplink events over the regional cluster's max_payload: out of the outbox (the later events go on), kept with why
_V6 = """CREATE TABLE IF NOT EXISTS uplink_set_aside (seq INTEGER PRIMARY KEY, at_ns INTEGER NOT NULL,
    kind TEXT NOT NULL, body TEXT NOT NULL, set_aside_ns INTEGER NOT NULL, reason TEXT NOT NULL);"""


# A delivery the mail server took for some recipients and refused for others with a 4xx (mailbox full, greylisted):
# the message goes again to those only, as a delivery of its own that names the one it resends (listed with it)
_V7 = """ALTER TABLE esc_deliveries ADD COLUMN resend_of INTEGER;
CREATE INDEX IF NOT EXISTS esc_deliveries_resend ON esc_deliveries(resend_of) WHERE resend_of IS NOT NULL;"""


def _script(sql: str) -> Callable[[sqlite3.Connection], None]:
    def run(conn: sqlite3.Connection) -> None:
        for stmt in statements(sql):
            conn.execute(stmt)

    return run


@dataclass(frozen=True)
class Migration:
    version: int  # the user_version the file has after it
    what: str
    apply: Callable[[sqlite3.Connection], None]


# Append only: a released migration is never edited; a change to a table is a new version here.
MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "the tables of the release before versioning", _script(V1)),
    Migration(2, "columns added without a version: alarm source_ns, hazard accept_note, session last_seen_ns", _v2),
    Migration(3, "the uplink outbox (alarm events and hazard changes for a regional hub)", _script(_V3)),
    Migration(4, "supervision notices (督办通知) received from the regional hub", _script(_V4)),
    Migration(5, "indexes for the escalation's retries and follow-ups (their tables only grow)", _script(_V5)),
    Migration(6, "uplink events set aside: larger than the regional cluster takes", _script(_V6)),
    Migration(7, "deliveries that resend a message to the recipients a server refused for now", _script(_V7)),
)
LATEST = MIGRATIONS[-1].version


class SchemaError(RuntimeError):
    """The state file cannot be used by this release (written by a newer one, or a migration failed)."""


def statements(sql: str) -> list[str]:
    """A script split into complete statements (executescript would COMMIT the migration's transaction)."""
    out: list[str] = []
    buf = ""
    for line in sql.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    if buf.strip():
        raise ValueError(f"incomplete SQL statement: {buf.strip()[:60]!r}")
    return out


def version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def refuse_newer(conn: sqlite3.Connection) -> int:
    """The file's version; SchemaError, before anything is written to it, when a newer release wrote it."""
    found = version(conn)
    if found > LATEST:
        raise SchemaError(
            f"the state file has schema version {found}, from a newer SiteGW; this release knows up to {LATEST}: "
            "run the newer release, or restore a backup written by this one"
        )
    return found


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the file to LATEST, one migration per transaction (a crash leaves it at the last finished version);
    returns the version it had. A file of a newer release is refused untouched."""
    found = refuse_newer(conn)
    for m in MIGRATIONS[found:]:
        conn.execute("BEGIN IMMEDIATE")
        try:
            m.apply(conn)
            conn.execute(f"PRAGMA user_version = {m.version}")
        except BaseException as err:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if isinstance(err, sqlite3.Error):
                raise SchemaError(f"migration to schema version {m.version} ({m.what}) failed: {err}") from err
            raise
        conn.execute("COMMIT")
    return found
