"""Stage 2, outbox: a fired tier, a follow-up or a hazard notice as one queued message per channel and recipients."""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

from alerting.alarms.model import Alarm
from alerting.config import TierConfig
from alerting.db import after_commit
from alerting.escalation.roster import Roster
from alerting.messages import Notice, SiteInfo, alarm_message

log = logging.getLogger("sitegw.escalation")

ProposeHazard = Callable[[Alarm], int]
"""alarm -> the id of the hazard record opened for it (a tier with propose_hazard)."""
OnDelivery = Callable[[str, str], None]
"""(channel, outcome) of a delivery, for the metric and /health."""


class Outbox:
    """Writes esc_outbox rows. The caller owns the transaction: a tier's messages are queued in the transaction that
    marks it fired, a follow-up in the alarm change's, a hazard notice in the one that marks its clock fired."""

    def __init__(
        self, conn: sqlite3.Connection, roster: Roster, site: SiteInfo, on_delivery: OnDelivery | None = None
    ) -> None:
        self.conn = conn
        self.roster = roster
        self.site = site
        self.on_delivery = on_delivery
        self.to_people = {c.id: c.addresses_people for c in roster.cfg.channels}

    def fire(
        self, step: sqlite3.Row, tier: TierConfig, a: Alarm, now: int, propose_hazard: ProposeHazard | None
    ) -> None:
        """A due tier's message to whoever is on duty for its roles, on each of its channels."""
        event = "repeat" if step["seq"] else ("level_up" if "L" in step["episode"] else "raised")
        # a level-up's episode ends with its time (escalation/pipeline.py): the time its messages give
        up_ns = int(step["episode"].rsplit(".", 1)[1]) if "L" in step["episode"] else None
        subject, text, data = alarm_message(a, event, self.site, at_ns=up_ns)
        data = {**data, "tier": step["tier"], "repeat": step["seq"]}
        if tier.propose_hazard and propose_hazard is not None:
            # in a savepoint of the firing transaction: if registering the hazard fails, its writes are undone
            # but the tier still goes out (the people must hear of the alarm) and says to register it by hand
            self.conn.execute("SAVEPOINT propose")
            try:
                data["hazard_id"] = propose_hazard(a)
                text += f"\n已自动登记隐患 #{data['hazard_id']} (待确认 判定)"
            except Exception:
                self.conn.execute("ROLLBACK TO propose")
                log.exception("alarm %s: the hazard record could not be opened; the tier is sent anyway", a.id)
                text += "\n自动登记隐患失败, 请手工登记 (register the hazard by hand)"
            self.conn.execute("RELEASE propose")
        what = f"policy {step['policy']} tier {step['tier'] + 1}"
        self.enqueue(now, tier.roles, tier.channels, int(a.level), subject, text, data, step["id"], a.id, None, what)

    def enqueue(
        self,
        now: int,
        roles: Sequence[str],
        channels: Sequence[str],
        level: int,
        subject: str,
        text: str,
        data: dict[str, Any],
        step_id: int | None,
        alarm_id: int | None,
        hazard_id: int | None,
        what: str = "hazard notices",
    ) -> None:
        """One row per channel. With nobody on duty a siren, board, webhook or group robot still goes out naming
        nobody (the site must hear it); a channel that reaches only the people it names fails, counted as a failed
        delivery (metric and /health) once the firing commits."""
        people = {p.id: p for role in roles for p in self.roster.on_duty(role, now)}
        ids = sorted(people)
        gap = f"nobody on duty for {', '.join(roles)}"
        for ch in channels:
            status, err = "queued", None
            if not ids and self.to_people.get(ch, False):
                status, err = "failed", gap
                log.error("alarm %s: %s (%s); nothing sent on %s, which addresses only them", alarm_id, gap, what, ch)
                self._count_failed(ch)
            elif not ids:
                log.warning("alarm %s: %s (%s); sent on %s naming nobody", alarm_id, gap, what, ch)
            self.conn.execute(
                "INSERT INTO esc_outbox(step_id, alarm_id, hazard_id, channel, recipients, group_key, level, subject,"
                " text, data, created_ns, status, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (step_id, alarm_id, hazard_id, ch, json.dumps(ids), f"{ch}|{','.join(ids)}", level, subject, text,
                 json.dumps(data, ensure_ascii=False), now, status, err),
            )  # fmt: skip

    def _count_failed(self, channel: str) -> None:
        """Counted once the firing transaction commits: a rolled-back firing is tried again and counted then."""
        cb = self.on_delivery
        if cb is not None and not after_commit(self.conn, lambda: cb(channel, "failed")):
            cb(channel, "failed")

    def hazard_notices(self, now: int, notices: list[Notice], roles: Sequence[str], channels: Sequence[str]) -> None:
        for hazard_id, subject, text, data in notices:
            self.enqueue(now, roles, channels, 2, subject, text, data, None, None, hazard_id)

    def follow_up(self, conn: sqlite3.Connection, a: Alarm, kind: str, at_ns: int, actor: str) -> None:
        """Tell everyone who was told about the alarm that it was acknowledged / is back to normal."""
        rows = conn.execute(
            "SELECT DISTINCT channel, recipients, group_key FROM esc_outbox WHERE alarm_id = ? AND status = 'sent'",
            (a.id,),
        ).fetchall()
        subject, text, data = alarm_message(a, kind, self.site, actor)
        for r in rows:
            conn.execute(
                "INSERT INTO esc_outbox(alarm_id, channel, recipients, group_key, level, subject, text, data,"
                " created_ns, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued')",
                (a.id, r["channel"], r["recipients"], r["group_key"], 0, subject, text, json.dumps(data), at_ns),
            )

    @staticmethod
    def cancel(conn: sqlite3.Connection, alarm_id: int, reason: str) -> None:
        """The alarm's tier messages not yet sent (an acknowledged or cleared alarm chases nobody): not its follow-ups,
        which the same change (or the one just before it: "cleared" then "closed") queued for those already told."""
        conn.execute(
            "UPDATE esc_outbox SET status = 'cancelled', error = ? WHERE alarm_id = ? AND status = 'queued'"
            " AND step_id IS NOT NULL",
            (reason, alarm_id),
        )

    def queued_groups(self) -> list[str]:
        rows = self.conn.execute("SELECT DISTINCT group_key FROM esc_outbox WHERE status = 'queued' ORDER BY 1")
        return [r[0] for r in rows]

    def queued(self, group_key: str) -> list[sqlite3.Row]:
        return self.conn.execute(
            "SELECT * FROM esc_outbox WHERE status = 'queued' AND group_key = ? ORDER BY id", (group_key,)
        ).fetchall()

    def mark_sent(self, delivery_id: int, rows: list[sqlite3.Row]) -> None:
        self.conn.executemany(
            "UPDATE esc_outbox SET status = 'sent', delivery_id = ? WHERE id = ?",
            [(delivery_id, r["id"]) for r in rows],
        )
