"""Alarm rows in SQLite: one, the open ones, a query, an alarm's log, suppressions, and the lifecycle's row writes."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from alerting.alarms.model import Alarm, AlarmState, UnknownAlarm
from alerting.rules import Level, Rule
from alerting.transition import Transition


class AlarmStore:
    """Reads and row writes of alarm_alarms, alarm_log and alarm_suppressions (alerting/schema.py); the state
    machine over them is alerting.alarms.lifecycle.Lifecycle."""

    conn: sqlite3.Connection
    rules: Mapping[str, Rule]

    # ---- reading ------------------------------------------------------------------------------------------

    def get(self, alarm_id: int) -> Alarm:
        return self._get(alarm_id)

    def open_alarms(self) -> list[Alarm]:
        """Every alarm not closed, oldest first (the gateway restores evaluator levels from `condition_level`)."""
        rows = self.conn.execute("SELECT * FROM alarm_alarms WHERE state != 'normal' ORDER BY id").fetchall()
        return [_alarm(r) for r in rows]

    def query(
        self,
        *,
        state: AlarmState | None = None,
        device: str | None = None,
        rule: str | None = None,
        min_level: Level | None = None,
        since_ns: int | None = None,
        until_ns: int | None = None,
        open_only: bool = False,
        limit: int = 500,
    ) -> list[Alarm]:
        """Alarms newest first. `min_level` compares the highest level reached; since/until the start time
        (raised, or pending if it never was)."""
        where: list[str] = []
        args: list[Any] = []
        for col, val in (("state", state), ("device", device), ("rule", rule)):
            if val is not None:
                where.append(f"{col} = ?")
                args.append(str(val))
        if min_level is not None:
            where.append("max_level >= ?")
            args.append(int(min_level))
        if since_ns is not None:
            where.append("COALESCE(raised_ns, pending_ns) >= ?")
            args.append(since_ns)
        if until_ns is not None:
            where.append("COALESCE(raised_ns, pending_ns) < ?")
            args.append(until_ns)
        if open_only:
            where.append("state != 'normal'")
        sql = "SELECT * FROM alarm_alarms" + (" WHERE " + " AND ".join(where) if where else "")
        rows = self.conn.execute(sql + " ORDER BY id DESC LIMIT ?", (*args, limit)).fetchall()
        return [_alarm(r) for r in rows]

    def history(self, alarm_id: int) -> list[dict[str, Any]]:
        """The alarm's own log, oldest first: at_ns, kind, actor, text, level, value, state."""
        self._get(alarm_id)
        rows = self.conn.execute(
            "SELECT at_ns, kind, actor, text, level, value, state FROM alarm_log WHERE alarm_id = ? ORDER BY id",
            (alarm_id,),
        ).fetchall()
        return [{**dict(r), "level": Level(r["level"])} for r in rows]

    def suppressions(self, device: str | None = None) -> list[tuple[str, str, int, str]]:
        """(device, reason, since_ns, actor) of the current suppressions."""
        sql = "SELECT device, reason, since_ns, actor FROM alarm_suppressions"
        args: tuple[str, ...] = ()
        if device is not None:
            sql, args = sql + " WHERE device = ?", (device,)
        rows = self.conn.execute(sql + " ORDER BY device, reason", args).fetchall()
        return [(r[0], r[1], r[2], r[3]) for r in rows]

    def _has_suppression(self, device: str, reason: str) -> bool:
        q = "SELECT 1 FROM alarm_suppressions WHERE device = ? AND reason = ?"
        return self.conn.execute(q, (device, reason)).fetchone() is not None

    def _suppressed_by(self, device: str) -> str | None:
        rows = self.conn.execute(
            "SELECT reason FROM alarm_suppressions WHERE device = ? ORDER BY reason", (device,)
        ).fetchall()
        return ",".join(r[0] for r in rows) or None

    # ---- internals ----------------------------------------------------------------------------------------

    def _get(self, alarm_id: int) -> Alarm:
        r = self.conn.execute("SELECT * FROM alarm_alarms WHERE id = ?", (alarm_id,)).fetchone()
        if r is None:
            raise UnknownAlarm(f"no alarm {alarm_id}")
        return _alarm(r)

    def _open_row(self, rule: str, device: str, quantity: str) -> sqlite3.Row | None:
        row: sqlite3.Row | None = self.conn.execute(
            "SELECT * FROM alarm_alarms WHERE rule = ? AND device = ? AND quantity = ? AND state != 'normal'",
            (rule, device, quantity),
        ).fetchone()
        return row

    @staticmethod
    def _threshold(rule: Rule, t: Transition) -> tuple[float | None, str]:
        th = t.threshold
        if th is None:  # the evaluator always names the crossed threshold going up; fall back to the rule's
            th = next((x for x in rule.thresholds if x.level == t.new), None)
        return (th.value, th.source.cite()) if th is not None else (None, "")

    def _insert(self, rule: Rule, t: Transition, state: AlarmState) -> int:
        th, src = self._threshold(rule, t)
        suppressed = self._suppressed_by(t.device) if rule.category == "value" and rule.suppress_by_design else None
        cur = self.conn.execute(
            "INSERT INTO alarm_alarms(rule, device, quantity, kind, category, state, level, max_level, value,"
            " threshold, source, title_zh, title_en, pending_ns, raised_ns, suppressed_by, source_ns)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                t.rule,
                t.device,
                t.quantity,
                rule.kind.value,
                rule.category,
                state.value,
                int(t.new),
                int(t.new),
                t.value,
                th,
                src,
                rule.title_zh,
                rule.title_en,
                t.at_ns if state is AlarmState.PENDING else None,
                t.at_ns if state is not AlarmState.PENDING else None,
                suppressed,
                t.source_ns,
            ),
        )
        assert cur.lastrowid is not None
        return cur.lastrowid

    def _update(self, alarm_id: int, **cols: Any) -> None:
        # column names come from this module only, never from callers
        sets = ", ".join(f"{k} = ?" for k in cols)
        vals = [v.value if isinstance(v, StrEnum) else int(v) if isinstance(v, Level) else v for v in cols.values()]
        self.conn.execute(f"UPDATE alarm_alarms SET {sets} WHERE id = ?", (*vals, alarm_id))

    def _log(self, alarm_id: int, kind: str, actor: str, at_ns: int, text: str | None) -> None:
        self.conn.execute(
            "INSERT INTO alarm_log(alarm_id, at_ns, kind, actor, text, level, value, state)"
            " SELECT id, ?, ?, ?, ?, level, value, state FROM alarm_alarms WHERE id = ?",
            (at_ns, kind, actor, text, alarm_id),
        )


# the row's columns are the snapshot's fields, by name; these are stored as plain values
_TYPED = {"state": AlarmState, "level": Level, "max_level": Level, "chattering": bool}
_FIELDS = tuple(f.name for f in dataclasses.fields(Alarm))


def _alarm(r: sqlite3.Row) -> Alarm:
    return Alarm(**{c: _TYPED[c](r[c]) if c in _TYPED else r[c] for c in _FIELDS})
