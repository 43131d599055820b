"""The hub's PostgreSQL schema and its versioned migrations (a row in hub_schema per version applied)."""

from __future__ import annotations

from typing import Any

import psycopg

# Append only: a released migration is never edited; a change is a new version.
MIGRATIONS: tuple[tuple[int, str, str], ...] = (
    (
        1,
        "site events, and the current state of every site's alarms",
        """
        -- every event of every site, once (the id is the site's "<site>:<state-file epoch>:<seq>")
        CREATE TABLE events (
            id text PRIMARY KEY,
            site text NOT NULL,
            epoch text NOT NULL,
            seq bigint NOT NULL,
            kind text NOT NULL,
            at_ns bigint NOT NULL,
            data jsonb NOT NULL,
            received_at timestamptz NOT NULL DEFAULT now(),
            UNIQUE (site, epoch, seq)
        );
        CREATE INDEX events_kind_at ON events (kind, at_ns);
        -- each alarm as its site last reported it; an event older than the one applied (by seq) changes nothing
        CREATE TABLE site_alarms (
            site text NOT NULL,
            epoch text NOT NULL,
            alarm_id bigint NOT NULL,
            rule text NOT NULL,
            device text NOT NULL,
            quantity text NOT NULL,
            state text NOT NULL,
            level int NOT NULL,
            value double precision,
            threshold double precision,
            source text NOT NULL,
            changed_at_ns bigint NOT NULL,
            last_seq bigint NOT NULL,
            PRIMARY KEY (site, epoch, alarm_id)
        );
        CREATE INDEX site_alarms_open ON site_alarms (site) WHERE state <> 'normal';
        -- what could not be stored, with why (dead letters)
        CREATE TABLE rejected_events (
            id bigserial PRIMARY KEY,
            subject text NOT NULL,
            raw bytea NOT NULL,
            reason text NOT NULL,
            received_at timestamptz NOT NULL DEFAULT now()
        );
        """,
    ),
    (
        2,
        "the current state of every site's hazard records (major hazards' report clocks, 挂牌督办 deadlines)",
        """
        CREATE TABLE site_hazards (
            site text NOT NULL,
            epoch text NOT NULL,
            hazard_id bigint NOT NULL,
            status text NOT NULL,
            klass text,                    -- major | general, once confirmed
            listing text NOT NULL,         -- none | county | city (挂牌督办)
            listing_due_ns bigint,
            report_due_ns bigint,          -- a major hazard's same-day report clock
            reported_at_ns bigint,
            found_at_ns bigint NOT NULL,
            unit_name text NOT NULL,
            description text NOT NULL,
            record jsonb NOT NULL,         -- the whole record as the site last reported it
            changed_at_ns bigint NOT NULL,
            last_seq bigint NOT NULL,
            PRIMARY KEY (site, epoch, hazard_id)
        );
        CREATE INDEX site_hazards_open ON site_hazards (site) WHERE status NOT IN ('closed', 'dismissed');
        """,
    ),
    (
        3,
        "each site's latest status (its heartbeat), and the hub's logins and audit trail",
        """
        -- the last status a site sent (devices, health, backlog); online while received_at is recent (hub clock).
        -- UNLOGGED: no WAL for a row every site rewrites every 30 s (a province's heartbeats would be most of the
        -- database's write volume); PostgreSQL empties it after a crash and the sites refill it within status_s
        CREATE UNLOGGED TABLE site_status (
            site text PRIMARY KEY,
            at_ns bigint NOT NULL,          -- the site's clock
            body jsonb NOT NULL,
            received_at timestamptz NOT NULL DEFAULT now()
        );
        -- sessions live here so that any replica answers a user who logged in at another
        CREATE TABLE hub_sessions (
            token_hash text PRIMARY KEY,
            user_name text NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            expires_at timestamptz NOT NULL
        );
        CREATE TABLE hub_audit (
            id bigserial PRIMARY KEY,
            at timestamptz NOT NULL DEFAULT now(),
            actor text NOT NULL,
            action text NOT NULL,
            target text NOT NULL,
            detail jsonb
        );
        """,
    ),
    (
        4,
        "supervision notices (督办通知) to the sites, with their receipt and acknowledgement",
        """
        CREATE TABLE notices (
            id bigserial PRIMARY KEY,
            site text NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            sent_by text NOT NULL,          -- the hub user, and the office they speak for
            text text NOT NULL,
            hazard_id bigint,               -- the site's hazard it is about, if any
            due date,                       -- when an answer is expected, if set
            received_at_ns bigint,          -- the site's receipt (its clock), from its notice.received event
            acked_at_ns bigint,             -- a manager's acknowledgement at the site
            acked_by text,
            ack_note text
        );
        -- what the sites have not confirmed yet: sent again with every request of theirs until they do
        CREATE INDEX notices_unreceived ON notices (site) WHERE received_at_ns IS NULL;
        """,
    ),
)
LATEST = MIGRATIONS[-1][0]


def migrate(conn: psycopg.Connection[Any]) -> int:
    """Bring the database to LATEST; the version it had. Safe with several hubs starting at once: the first one
    migrates under an advisory lock, the others wait for it and find nothing to do."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(7460113)")  # any constant, the same in every replica
        conn.execute("CREATE TABLE IF NOT EXISTS hub_schema (version int NOT NULL)")
        row = conn.execute("SELECT max(version) FROM hub_schema").fetchone()
        had = int(row[0]) if row and row[0] is not None else 0
        if had > LATEST:
            raise RuntimeError(f"the hub database has schema version {had}, from a newer SiteGW (this knows {LATEST})")
        for version, _what, sql in MIGRATIONS:
            if version > had:
                conn.execute(sql)
                conn.execute("INSERT INTO hub_schema VALUES (%s)", (version,))
    return had
