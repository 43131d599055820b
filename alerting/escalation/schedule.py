"""Stage 1, schedule: which policy an alarm falls under, and its tiers as rows (esc_steps) due at their delays."""

from __future__ import annotations

import logging
import sqlite3

from alerting.alarms.model import Alarm
from alerting.config import EscalationConfig, PolicyConfig

log = logging.getLogger("sitegw.escalation")


class Schedule:
    """Plans and cancels tier steps. Every method runs inside the caller's transaction (the alarm change's), so a
    crash can neither lose a planned tier nor keep one for an alarm that was already acknowledged."""

    def __init__(self, cfg: EscalationConfig, device_kinds: dict[str, str]) -> None:
        self.cfg = cfg
        self.device_kinds = device_kinds

    def policy_for(self, a: Alarm) -> PolicyConfig | None:
        for p in self.cfg.policies:
            m = p.match
            # the device's kind: a health rule of kind "any" applies to every device kind
            if m.kinds is not None and self.device_kinds.get(a.device, a.kind) not in m.kinds:
                continue
            if m.categories is not None and a.category not in m.categories:
                continue
            if m.rules is not None and a.rule not in m.rules:
                continue
            if a.level < m.min_level:
                continue
            return p
        return None

    def plan(self, conn: sqlite3.Connection, a: Alarm, episode: str, at_ns: int) -> None:
        """One step per tier and repeat the alarm's level reaches; an episode already planned is not planned twice."""
        pol = self.policy_for(a)
        if pol is None:
            log.warning("alarm %s (%s on %s): no escalation policy matches; nobody is notified", a.id, a.rule, a.device)
            return
        for i, tier in enumerate(pol.tiers):
            if a.level < tier.min_level:
                continue
            for seq in range(1 + (tier.repeats if tier.repeat_every_s else 0)):
                due = at_ns + int((tier.after_s + seq * (tier.repeat_every_s or 0)) * 1e9)
                conn.execute(
                    "INSERT OR IGNORE INTO esc_steps(alarm_id, episode, policy, tier, seq, due_ns, status)"
                    " VALUES (?, ?, ?, ?, ?, ?, 'pending')",
                    (a.id, episode, pol.id, i, seq, due),
                )

    @staticmethod
    def cancel(conn: sqlite3.Connection, alarm_id: int, at_ns: int, reason: str) -> None:
        conn.execute(
            "UPDATE esc_steps SET status = 'cancelled', cancelled_ns = ?, cancel_reason = ?"
            " WHERE alarm_id = ? AND status = 'pending'",
            (at_ns, reason, alarm_id),
        )

    @staticmethod
    def due(conn: sqlite3.Connection, now: int) -> list[sqlite3.Row]:
        return conn.execute(
            "SELECT * FROM esc_steps WHERE status = 'pending' AND due_ns <= ? ORDER BY due_ns, id", (now,)
        ).fetchall()

    @staticmethod
    def is_pending(conn: sqlite3.Connection, step_id: int) -> bool:
        """Re-read under the write lock: an acknowledgement may have cancelled the step since it was found due."""
        row = conn.execute("SELECT status FROM esc_steps WHERE id = ?", (step_id,)).fetchone()
        return bool(row["status"] == "pending")

    @staticmethod
    def mark_fired(conn: sqlite3.Connection, step_id: int, now: int) -> None:
        conn.execute("UPDATE esc_steps SET status = 'fired', fired_ns = ? WHERE id = ?", (now, step_id))

    @staticmethod
    def drop(conn: sqlite3.Connection, step_id: int, now: int, reason: str) -> None:
        conn.execute(
            "UPDATE esc_steps SET status = 'cancelled', cancelled_ns = ?, cancel_reason = ? WHERE id = ?",
            (now, reason, step_id),
        )

    def next_due(self, conn: sqlite3.Connection) -> int | None:
        got = conn.execute("SELECT MIN(due_ns) FROM esc_steps WHERE status = 'pending'").fetchone()[0]
        return None if got is None else int(got)

    @staticmethod
    def steps(conn: sqlite3.Connection, alarm_id: int) -> list[sqlite3.Row]:
        return conn.execute("SELECT * FROM esc_steps WHERE alarm_id = ? ORDER BY due_ns, id", (alarm_id,)).fetchall()
