"""The uplink outbox: alarm events and hazard changes for a regional hub, written in the transaction of the change."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from alerting.alarms import AlarmEvent
from alerting.db import tx


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    seq: int
    event_id: str  # "<site>:<epoch>:<seq>": the same on every resend, so the hub stores it once
    kind: str
    at_ns: int
    body: str  # JSON, the event id and site included


class UplinkOutbox:
    """Hooks that append to `uplink_outbox` inside the caller's transaction (the alarm lifecycle's, the hazard
    store's), so a change and its event are committed together or not at all; and the sender's reads and deletes.
    Only SQLite here: the transport is the gateway's (gateway/uplink.py)."""

    def __init__(self, site_id: str) -> None:
        # built before the alarm engine (whose start-up may already emit events through the hooks, on the
        # connection they are given); `bind` gives it the connection the sender reads and deletes through
        self.site_id = site_id
        self._conn: sqlite3.Connection | None = None
        self.epoch = ""
        self.on_added: Callable[[], None] | None = None  # wakes the sender; inside the transaction: set a flag only

    def bind(self, conn: sqlite3.Connection, on_added: Callable[[], None] | None = None) -> None:
        self._conn = conn
        self.epoch = str(conn.execute("SELECT v FROM uplink_meta WHERE k = 'epoch'").fetchone()[0])
        self.on_added = on_added

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("uplink outbox used before bind()")
        return self._conn

    def event_id(self, seq: int) -> str:
        return f"{self.site_id}:{self.epoch}:{seq}"

    def _add(self, conn: sqlite3.Connection, kind: str, at_ns: int, body: dict[str, Any]) -> None:
        conn.execute(
            "INSERT INTO uplink_outbox(at_ns, kind, body) VALUES (?, ?, ?)",
            (at_ns, kind, json.dumps(body, ensure_ascii=False, allow_nan=False, default=str)),
        )
        if self.on_added is not None:
            self.on_added()

    def on_alarm(self, conn: sqlite3.Connection, ev: AlarmEvent) -> None:
        """Lifecycle hook: raised / acked / cleared / shelved / ... with the alarm as it stands after the change."""
        a = ev.alarm
        value = a.value if a.value == a.value and abs(a.value) != float("inf") else None  # JSON has no NaN
        self._add(
            conn,
            f"alarm.{ev.kind}",
            ev.at_ns,
            {
                "alarm_id": a.id,
                "rule": a.rule,
                "device": a.device,
                "quantity": a.quantity,
                "state": str(a.state.value),
                "level": int(a.level),
                "value": value,
                "threshold": a.threshold,
                "source": a.source,
                "actor": ev.actor,
                "text": ev.text,
            },
        )

    def on_hazard(self, conn: sqlite3.Connection, change: dict[str, Any]) -> None:
        """Hazard store hook: every state change of a hazard record (发现 → 整改 → 复查 → 销号)."""
        self._add(conn, f"hazard.{change['action']}", int(change["at_ns"]), change)

    def on_notice(self, conn: sqlite3.Connection, kind: str, at_ns: int, body: dict[str, Any]) -> None:
        """Notice hook: a supervision notice received from the hub, or acknowledged here."""
        self._add(conn, kind, at_ns, body)

    def pending(self, limit: int) -> list[OutboxEvent]:
        """The oldest `limit` events not yet acknowledged by the hub's broker, in order."""
        rows = self.conn.execute(
            "SELECT seq, kind, at_ns, body FROM uplink_outbox ORDER BY seq LIMIT ?", (limit,)
        ).fetchall()
        out = []
        for seq, kind, at_ns, body in rows:
            eid = self.event_id(seq)
            doc = {"id": eid, "site": self.site_id, "seq": seq, "kind": kind, "at_ns": at_ns, "data": json.loads(body)}
            out.append(OutboxEvent(seq, eid, kind, at_ns, json.dumps(doc, ensure_ascii=False)))
        return out

    def delete_through(self, seq: int) -> None:
        """The broker has acknowledged everything up to `seq`."""
        with tx(self.conn):
            self.conn.execute("DELETE FROM uplink_outbox WHERE seq <= ?", (seq,))

    def set_aside(self, seq: int, now_ns: int, reason: str) -> None:
        """Out of the outbox into uplink_set_aside (kept on the site): an event the cluster can never take, which
        would otherwise hold every later event of the site behind it for good."""
        with tx(self.conn):
            self.conn.execute(
                "INSERT OR IGNORE INTO uplink_set_aside(seq, at_ns, kind, body, set_aside_ns, reason)"
                " SELECT seq, at_ns, kind, body, ?, ? FROM uplink_outbox WHERE seq = ?",
                (now_ns, reason, seq),
            )
            self.conn.execute("DELETE FROM uplink_outbox WHERE seq = ?", (seq,))

    def set_aside_count(self) -> int:
        return int(self.conn.execute("SELECT count(*) FROM uplink_set_aside").fetchone()[0])

    def backlog(self) -> tuple[int, int | None]:
        """(events waiting, at_ns of the oldest or None)."""
        n, oldest = self.conn.execute("SELECT count(*), min(at_ns) FROM uplink_outbox").fetchone()
        return int(n), None if oldest is None else int(oldest)
