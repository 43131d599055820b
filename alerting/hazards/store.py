"""Hazard records in SQLite: local days of the site, reading records and their history, and the writes of a move."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from alerting.db import audit
from alerting.hazards.model import NS, HazardClass, HazardConfig, HazardError, Status
from telemetry.clock import Clock

# Run with each change of a hazard record, inside its transaction: (connection, {hazard_id, at_ns, actor, action,
# from, to, why, ...detail}).
HazardHook = Callable[[sqlite3.Connection, dict[str, Any]], None]


class HazardStore:
    """The hazard_record and hazard_history rows (alerting/schema.py); every write goes with an audit row."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        clock: Clock,
        cfg: HazardConfig,
        alarm_state: Callable[[int], str | None] | None = None,
        hooks: Sequence[HazardHook] = (),
    ) -> None:
        self.conn = conn
        # each change, inside its transaction (the uplink outbox): {hazard_id, at_ns, actor, action, from, to, why,
        # detail}; a hook that raises rolls the change back with it
        self.hooks = list(hooks)
        self.clock = clock
        self.cfg = cfg
        self.tz = ZoneInfo(cfg.timezone)
        # alarm id -> its state ("active_unacked", ...) or None when there is no such alarm on this site; given by
        # the alarm engine (the alarms live in the same database, in the lifecycle's tables)
        self.alarm_state = alarm_state

    # ---- local time -----------------------------------------------------------------------------------------

    def local_date(self, ns: int) -> date:
        return datetime.fromtimestamp(ns // NS, self.tz).date()

    def local_datetime(self, ns: int) -> datetime:
        """Naive local wall time (for forms and spreadsheets, which carry no zone)."""
        return datetime.fromtimestamp(ns // NS, self.tz).replace(tzinfo=None)

    def end_of_day_ns(self, d: date) -> int:
        """The first instant after local day `d`: its deadline passes at the following local midnight."""
        nxt = datetime.combine(d + timedelta(days=1), datetime.min.time(), tzinfo=self.tz)
        return int(nxt.timestamp()) * NS

    # ---- reading --------------------------------------------------------------------------------------------

    def get(self, hazard_id: int) -> dict[str, Any]:
        row = self.conn.execute("SELECT * FROM hazard_record WHERE id = ?", (hazard_id,)).fetchone()
        if row is None:
            raise HazardError(f"no hazard {hazard_id}")
        return dict(row)

    def open_for_alarm(self, alarm_id: int) -> int | None:
        """The id of the hazard opened from this alarm that is not closed or dismissed, if any."""
        row = self.conn.execute(
            "SELECT id FROM hazard_record WHERE alarm_id = ? AND status NOT IN ('closed', 'dismissed')", (alarm_id,)
        ).fetchone()
        return None if row is None else int(row["id"])

    def query(
        self,
        status: Status | None = None,
        klass: HazardClass | None = None,
        since_ns: int | None = None,
        until_ns: int | None = None,
    ) -> list[dict[str, Any]]:
        """Hazards by status and confirmed class, found in [since_ns, until_ns), oldest first."""
        sql, args = "SELECT * FROM hazard_record WHERE 1=1", []
        for clause, arg in (
            (" AND status = ?", status),
            (" AND klass = ?", klass),
            (" AND found_at_ns >= ?", since_ns),
            (" AND found_at_ns < ?", until_ns),
        ):
            if arg is not None:
                sql += clause
                args.append(arg)
        return [dict(r) for r in self.conn.execute(sql + " ORDER BY found_at_ns, id", args).fetchall()]

    def history(self, hazard_id: int) -> list[dict[str, Any]]:
        self.get(hazard_id)
        rows = self.conn.execute("SELECT * FROM hazard_history WHERE hazard_id = ? ORDER BY id", (hazard_id,))
        return [{**dict(r), "detail": json.loads(r["detail"]) if r["detail"] else None} for r in rows.fetchall()]

    # ---- internals ------------------------------------------------------------------------------------------

    def _expect(self, hazard_id: int, action: str, allowed: tuple[str, ...]) -> dict[str, Any]:
        row = self.get(hazard_id)
        if row["status"] not in allowed:
            raise HazardError(
                f"cannot {action} hazard {hazard_id}: it is {row['status']}; {action} is allowed from "
                f"{' / '.join(allowed)}"
            )
        return row

    def _move(
        self, row: dict[str, Any], now: int, actor: str, action: str, to: str, why: str, updates: dict[str, Any]
    ) -> None:
        cols = {**updates, "status": to, "updated_at_ns": now}
        sets = ", ".join(f"{c} = ?" for c in cols)  # column names are ours, never user input
        self.conn.execute(f"UPDATE hazard_record SET {sets} WHERE id = ?", (*cols.values(), row["id"]))
        self._log(row["id"], now, actor, action, row["status"], to, why, updates)

    def _log(
        self,
        hazard_id: int,
        now: int,
        actor: str,
        action: str,
        frm: str | None,
        to: str,
        why: str,
        detail: dict[str, Any] | None,
    ) -> None:
        full = {"from": frm, "to": to, **(detail or {})}
        self.conn.execute(
            "INSERT INTO hazard_history(hazard_id, at_ns, actor, action, from_status, to_status, why, detail)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (hazard_id, now, actor, action, frm, to, why, json.dumps(full, ensure_ascii=False)),
        )
        audit(self.conn, now, actor, f"hazard.{action}", f"hazard:{hazard_id}", why, full)
        if self.hooks:
            # the record as it stands after the change: whoever reads the events (a regional hub) needs no other.
            # The change's fields the record holds are not sent again: 整改措施 of 500 kB went twice, over the
            # cluster's max_payload (the hub reads hazard_id, action, to and the record: hub/ingest.py, reports.py)
            record = self.get(hazard_id)
            change = {"hazard_id": hazard_id, "at_ns": now, "actor": actor, "action": action, "why": why}
            change |= {k: v for k, v in full.items() if k in ("from", "to") or k not in record}
            change["record"] = record
            for hook in self.hooks:
                hook(self.conn, change)
