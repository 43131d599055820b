"""Escalation to supervisors: tiers scheduled in SQLite with the alarm change, grouped delivery with retries, a log."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from alerting.config import EscalationConfig, PolicyConfig
from alerting.db import tx
from alerting.messages import SiteInfo, alarm_message, digest
from alerting.notifiers import Message, Notifier, Person
from telemetry.clock import Clock

log = logging.getLogger("sitegw.escalation")


_STOP = {"acked": "acknowledged", "closed": "closed", "reset": "reset", "shelved": "shelved",
         "suppressed": "suppressed by design", "cleared": "returned to normal"}  # fmt: skip


@dataclass
class Roster:
    """Who is on duty for a role at an instant, in the site's time zone."""

    cfg: EscalationConfig
    tz: str

    def __post_init__(self) -> None:
        self.people = {p.id: Person(p.id, p.name, p.mobile, p.email) for p in self.cfg.people}

    def on_duty(self, role: str, now_ns: int) -> list[Person]:
        t = datetime.fromtimestamp(now_ns / 1e9, ZoneInfo(self.tz))
        out: dict[str, Person] = {}
        for d in self.cfg.duty:
            if d.role == role and d.covers(t.weekday(), t.time()):
                for pid in d.people:
                    out[pid] = self.people[pid]
        return list(out.values())


class Escalation:
    """Schedules tiers when an alarm is raised and cancels them when it is acknowledged, in the same SQLite
    transaction as the alarm change (a lifecycle hook), so a crash can neither lose a scheduled tier nor send one
    for an alarm that was already acknowledged. A loop fires due tiers into an outbox, groups the outbox per channel
    and recipients, and delivers with retries; every attempt is in the delivery log.

    Delivery is at-least-once for the one message in flight at a crash (it carries a stable idempotency key);
    everything else is exactly once.
    """

    def __init__(
        self,
        conn: sqlite3.Connection,
        cfg: EscalationConfig,
        notifiers: Mapping[str, Notifier],
        clock: Clock,
        site: SiteInfo,
        on_delivery: Callable[[str, str], None] | None = None,
        hazard_source: Callable[[int], list[tuple[int, str, str, dict[str, Any]]]] | None = None,
        propose_hazard: Callable[[Any], int] | None = None,
    ) -> None:
        self.conn = conn
        self.cfg = cfg
        self.notifiers = notifiers
        self.clock = clock
        self.site = site
        self.roster = Roster(cfg, site.tz)
        self.on_delivery = on_delivery  # (channel, status) for metrics
        self.hazard_source = hazard_source  # hazard notices due (overdue clocks), as digest items
        self.propose_hazard = propose_hazard  # alarm -> hazard id, for tiers with propose_hazard
        self._wake = asyncio.Event()
        # a crash while sending: we cannot know whether it went out, so send it again (same key)
        with tx(conn):
            conn.execute("UPDATE esc_deliveries SET status = 'retry', next_try_ns = 0 WHERE status = 'sending'")

    # ---- scheduling (inside the lifecycle's transaction) ----

    def policy_for(self, a: Any) -> PolicyConfig | None:
        for p in self.cfg.policies:
            m = p.match
            # the device's kind: a health rule of kind "any" applies to every device kind
            if m.kinds is not None and self.site.device_kinds.get(a.device, a.kind) not in m.kinds:
                continue
            if m.categories is not None and a.category not in m.categories:
                continue
            if m.rules is not None and a.rule not in m.rules:
                continue
            if a.level < m.min_level:
                continue
            return p
        return None

    def on_event(self, conn: sqlite3.Connection, ev: Any) -> None:
        """Lifecycle hook: called inside the alarm change's transaction."""
        a = ev.alarm
        if ev.kind in ("raised", "chattering", "level_up", "unshelved", "unsuppressed"):
            if not a.notifiable or (ev.kind == "raised" and a.chattering):
                # a chattering alarm: its re-raises start nothing new; the one escalation started by the raise that
                # made it chattering ("chattering" follows that "raised") runs on until someone acknowledges it
                return
            if ev.kind in ("unshelved", "unsuppressed") and str(a.state) != "active_unacked":
                return
            if ev.kind in ("raised", "chattering"):
                episode = f"{a.raise_count}"
            elif ev.kind == "level_up":
                # a higher level is a new escalation from the first tier (ISA-18.2: it must be acknowledged again)
                self._cancel(conn, a.id, ev.at_ns, "superseded by a higher level")
                # at_ns too: the level may go up to the same level again (2->3, down to 2, up to 3) within one raise,
                # and an episode that already exists would make INSERT OR IGNORE schedule nothing at all
                episode = f"{a.raise_count}L{int(a.level)}.{ev.at_ns}"
            else:
                episode = f"{a.raise_count}.{ev.at_ns}"
            self._schedule(conn, a, episode, ev.at_ns)
        elif ev.kind == "cleared" and a.chattering:
            pass  # flapping: neither stop chasing nor send a "back to normal" per swing; the ack stops it
        elif ev.kind in _STOP:
            self._cancel(conn, a.id, ev.at_ns, _STOP[ev.kind])
            if ev.kind in ("acked", "cleared"):
                self._follow_up(conn, a, ev.kind, ev.at_ns, ev.actor)
        self._wake.set()

    def _schedule(self, conn: sqlite3.Connection, a: Any, episode: str, at_ns: int) -> None:
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

    def _cancel(self, conn: sqlite3.Connection, alarm_id: int, at_ns: int, reason: str) -> None:
        conn.execute(
            "UPDATE esc_steps SET status = 'cancelled', cancelled_ns = ?, cancel_reason = ?"
            " WHERE alarm_id = ? AND status = 'pending'",
            (at_ns, reason, alarm_id),
        )
        conn.execute(
            "UPDATE esc_outbox SET status = 'cancelled', error = ? WHERE alarm_id = ? AND status = 'queued'",
            (reason, alarm_id),
        )

    def _follow_up(self, conn: sqlite3.Connection, a: Any, kind: str, at_ns: int, actor: str) -> None:
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

    # ---- firing and delivery (the loop) ----

    def wake(self) -> None:
        self._wake.set()

    async def run(self, lookup_alarm: Callable[[int], Any], max_sleep_s: float = 1.0) -> None:
        while True:
            await self.step(lookup_alarm)
            self._wake.clear()
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can lose a cancel that meets the wake-up in the
            # same loop turn (CPython gh-86296); this loop then ran on and a gateway's shutdown hung behind it
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._sleep_s(max_sleep_s)):
                    await self._wake.wait()
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise asyncio.CancelledError

    def _sleep_s(self, cap: float) -> float:
        now = self.clock()
        nxt = self.conn.execute(
            "SELECT MIN(t) FROM (SELECT MIN(due_ns) t FROM esc_steps WHERE status = 'pending'"
            " UNION ALL SELECT MIN(next_try_ns) FROM esc_deliveries WHERE status = 'retry'"
            # a digest is due when its group's window ends
            " UNION ALL SELECT MIN((SELECT MAX(d.created_ns) FROM esc_deliveries d WHERE d.group_key = o.group_key))"
            " + ? FROM esc_outbox o WHERE o.status = 'queued')",
            (int(self.cfg.group_window_s * 1e9),),
        ).fetchone()[0]
        if nxt is None:
            return cap
        return max(0.0, min(cap, (int(nxt) - now) / 1e9))

    async def step(self, lookup_alarm: Callable[[int], Any]) -> None:
        """One pass: due tiers into the outbox, hazard clocks, then every group and retry that is ready."""
        now = self.clock()
        self._fire_due(now, lookup_alarm)
        if self.hazard_source is not None and self.cfg.hazard_notices is not None:
            self._queue_hazards(now)
        await self._deliver_ready(now)

    def _fire_due(self, now: int, lookup_alarm: Callable[[int], Any]) -> None:
        due = self.conn.execute(
            "SELECT * FROM esc_steps WHERE status = 'pending' AND due_ns <= ? ORDER BY due_ns, id", (now,)
        ).fetchall()
        for st in due:
            try:
                self._fire(st, now, lookup_alarm)
            except sqlite3.OperationalError:
                raise  # the database itself (full, locked): the loop's supervisor reports it and restarts the loop
            except Exception:
                # one step that cannot fire (e.g. propose_hazard failed) must neither stop the other alarms'
                # escalation nor kill the loop; its transaction rolled back, so it stays pending and is tried again
                log.exception("escalation step %s of alarm %s could not fire; retrying", st["id"], st["alarm_id"])

    def _fire(self, st: sqlite3.Row, now: int, lookup_alarm: Callable[[int], Any]) -> None:
        a = lookup_alarm(st["alarm_id"])
        pol = next((p for p in self.cfg.policies if p.id == st["policy"]), None)
        with tx(self.conn):
            # re-read under the write lock: an ack may have cancelled it since the SELECT
            cur = self.conn.execute("SELECT status FROM esc_steps WHERE id = ?", (st["id"],)).fetchone()
            if cur["status"] != "pending":
                return
            if pol is None or st["tier"] >= len(pol.tiers):
                self.conn.execute(
                    "UPDATE esc_steps SET status = 'cancelled', cancelled_ns = ?, cancel_reason = ? WHERE id = ?",
                    (now, "policy no longer in the configuration", st["id"]),
                )
                return
            tier = pol.tiers[st["tier"]]
            event = "repeat" if st["seq"] else ("level_up" if "L" in st["episode"] else "raised")
            subject, text, data = alarm_message(a, event, self.site)
            data = {**data, "tier": st["tier"], "repeat": st["seq"]}
            self.conn.execute("UPDATE esc_steps SET status = 'fired', fired_ns = ? WHERE id = ?", (now, st["id"]))
            if tier.propose_hazard and self.propose_hazard is not None:
                # in a savepoint of the firing transaction: if registering the hazard fails, its writes are undone
                # but the tier still goes out (the people must hear of the alarm) and says to register it by hand
                self.conn.execute("SAVEPOINT propose")
                try:
                    data["hazard_id"] = self.propose_hazard(a)
                    text += f"\n已自动登记隐患 #{data['hazard_id']} (待确认 判定)"
                except Exception:
                    self.conn.execute("ROLLBACK TO propose")
                    log.exception("alarm %s: the hazard record could not be opened; the tier is sent anyway", a.id)
                    text += "\n自动登记隐患失败, 请手工登记 (register the hazard by hand)"
                self.conn.execute("RELEASE propose")
            self._enqueue(now, tier.roles, tier.channels, int(a.level), subject, text, data, st["id"], a.id, None)

    def _enqueue(
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
    ) -> None:
        people: dict[str, Person] = {}
        for role in roles:
            for p in self.roster.on_duty(role, now):
                people[p.id] = p
        ids = sorted(people)
        for ch in channels:
            status, err = ("queued", None) if ids else ("failed", f"nobody on duty for {', '.join(roles)}")
            if not ids:
                log.error("alarm %s: %s; message not sent on %s", alarm_id, err, ch)
            self.conn.execute(
                "INSERT INTO esc_outbox(step_id, alarm_id, hazard_id, channel, recipients, group_key, level, subject,"
                " text, data, created_ns, status, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (step_id, alarm_id, hazard_id, ch, json.dumps(ids), f"{ch}|{','.join(ids)}", level, subject, text,
                 json.dumps(data, ensure_ascii=False), now, status, err),
            )  # fmt: skip

    def _queue_hazards(self, now: int) -> None:
        assert self.hazard_source is not None and self.cfg.hazard_notices is not None
        hn = self.cfg.hazard_notices
        with tx(self.conn):  # the clocks are marked fired in the same transaction as their notice is queued
            for hazard_id, subject, text, data in self.hazard_source(now):
                self._enqueue(now, hn.roles, hn.channels, 2, subject, text, data, None, None, hazard_id)

    async def _deliver_ready(self, now: int) -> None:
        window = int(self.cfg.group_window_s * 1e9)
        jobs: list[int] = []
        groups = self.conn.execute(
            "SELECT group_key, MIN(created_ns) first FROM esc_outbox WHERE status = 'queued' GROUP BY group_key"
        ).fetchall()
        for g in groups:
            last = self.conn.execute(
                "SELECT MAX(created_ns) FROM esc_deliveries WHERE group_key = ?", (g["group_key"],)
            ).fetchone()[0]
            if last is not None and now < last + window:
                continue  # grouped: sent as one digest when the window ends
            with tx(self.conn):
                rows = self.conn.execute(
                    "SELECT * FROM esc_outbox WHERE status = 'queued' AND group_key = ? ORDER BY id", (g["group_key"],)
                ).fetchall()
                if not rows:
                    continue
                level, subject, text, data = digest(
                    [(r["level"], r["subject"], r["text"], json.loads(r["data"])) for r in rows]
                )
                cur = self.conn.execute(
                    "INSERT INTO esc_deliveries(channel, group_key, recipients, key, level, subject, text, data, items,"
                    " status, attempts, created_ns) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'retry', 0, ?)",
                    (rows[0]["channel"], g["group_key"], rows[0]["recipients"], f"sitegw:delivery:{rows[0]['id']}",
                     level, subject, text, json.dumps(data, ensure_ascii=False), len(rows), now),
                )  # fmt: skip
                did = cur.lastrowid
                assert did is not None
                self.conn.executemany(
                    "UPDATE esc_outbox SET status = 'sent', delivery_id = ? WHERE id = ?",
                    [(did, r["id"]) for r in rows],
                )
            jobs.append(did)
        retry = self.conn.execute(
            "SELECT id FROM esc_deliveries WHERE status = 'retry' AND COALESCE(next_try_ns, 0) <= ?", (now,)
        ).fetchall()
        jobs.extend(r["id"] for r in retry if r["id"] not in jobs)
        if jobs:
            await asyncio.gather(*(self._attempt(d) for d in dict.fromkeys(jobs)))

    async def _attempt(self, delivery_id: int) -> None:
        d = self.conn.execute("SELECT * FROM esc_deliveries WHERE id = ?", (delivery_id,)).fetchone()
        n = self.notifiers.get(d["channel"])
        attempts = d["attempts"] + 1
        with tx(self.conn):
            self.conn.execute(
                "UPDATE esc_deliveries SET status = 'sending', attempts = ? WHERE id = ?", (attempts, delivery_id)
            )
        if n is None:
            ok, retryable, detail = False, False, f"channel {d['channel']!r} is not configured"
        else:
            people = [self.roster.people[p] for p in json.loads(d["recipients"]) if p in self.roster.people]
            msg = Message(d["key"], d["level"], d["subject"], d["text"], json.loads(d["data"]))
            try:
                res = await n.send(msg, people)
                ok, retryable, detail = res.ok, res.retryable, res.detail
            except Exception as err:  # a notifier bug must not stop escalation of other alarms
                log.exception("channel %s: unexpected error", d["channel"])
                ok, retryable, detail = False, True, f"{type(err).__name__}"
        now = self.clock()
        if ok:
            status, nxt = "sent", None
        elif retryable and attempts < self.cfg.max_attempts:
            status = "retry"
            nxt = now + int(min(self.cfg.retry_max_s, self.cfg.retry_base_s * 2 ** (attempts - 1)) * 1e9)
        else:
            status, nxt = "failed", None
        with tx(self.conn):
            self.conn.execute(
                "UPDATE esc_deliveries SET status = ?, next_try_ns = ?, sent_ns = ?, last_error = ? WHERE id = ?",
                (status, nxt, now if ok else None, None if ok else detail, delivery_id),
            )
        if status == "failed":
            log.error("delivery %s on %s failed after %d attempt(s): %s", delivery_id, d["channel"], attempts, detail)
        elif status == "retry":
            log.warning("delivery %s on %s: %s; retrying", delivery_id, d["channel"], detail)
        if self.on_delivery:
            self.on_delivery(d["channel"], status)
        self._wake.set()

    # ---- queries for the API ----

    def steps(self, alarm_id: int) -> list[dict[str, Any]]:
        rows = self.conn.execute("SELECT * FROM esc_steps WHERE alarm_id = ? ORDER BY due_ns, id", (alarm_id,))
        return [dict(r) for r in rows]

    def deliveries(self, alarm_id: int | None = None, limit: int = 500) -> list[dict[str, Any]]:
        if alarm_id is None:
            rows = self.conn.execute("SELECT * FROM esc_deliveries ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        else:
            rows = self.conn.execute(
                "SELECT DISTINCT d.* FROM esc_deliveries d JOIN esc_outbox o ON o.delivery_id = d.id"
                " WHERE o.alarm_id = ? ORDER BY d.id DESC LIMIT ?",
                (alarm_id, limit),
            ).fetchall()
        out = []
        for r in rows:
            x = dict(r)
            x["recipients"] = json.loads(x["recipients"])
            x.pop("data", None)
            out.append(x)
        return out
