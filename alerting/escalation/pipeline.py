"""The escalation loop: alarm changes into the schedule, due tiers into the outbox, ready groups out for delivery."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from alerting.alarms.model import Alarm, AlarmEvent
from alerting.config import EscalationConfig, TierConfig
from alerting.db import after_commit, tx
from alerting.escalation.delivery import Delivery
from alerting.escalation.outbox import Outbox, ProposeHazard
from alerting.escalation.roster import Roster
from alerting.escalation.schedule import Schedule
from alerting.messages import Notice, SiteInfo
from alerting.notifiers import Notifier
from telemetry.clock import Clock

log = logging.getLogger("sitegw.escalation")

_STOP = {"acked": "acknowledged", "closed": "closed", "reset": "reset", "shelved": "shelved",
         "suppressed": "suppressed by design", "cleared": "returned to normal"}  # fmt: skip

HazardSource = Callable[[int], list[Notice]]
"""now -> the hazard notices that fell due (overdue clocks), marked fired in the caller's transaction."""


class Escalation:
    """Schedules tiers when an alarm is raised and cancels them when it is acknowledged, in the same SQLite
    transaction as the alarm change (a lifecycle hook). A loop fires due tiers into the outbox, groups the outbox per
    channel and recipients, and delivers with retries; every attempt is in the delivery log. Each stage's rows are
    the only state, so a crash or a restart of the loop loses nothing that fell due meanwhile."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        cfg: EscalationConfig,
        notifiers: Mapping[str, Notifier],
        clock: Clock,
        site: SiteInfo,
        on_delivery: Callable[[str, str], None] | None = None,
        hazard_source: HazardSource | None = None,
        propose_hazard: ProposeHazard | None = None,
    ) -> None:
        self.conn = conn
        self.cfg = cfg
        self.notifiers = notifiers
        self.clock = clock
        self.roster = Roster(cfg, site.tz)
        self.hazard_source = hazard_source
        self.propose_hazard = propose_hazard
        self.schedule = Schedule(cfg, site.device_kinds)
        self.outbox = Outbox(conn, self.roster, site, on_delivery)
        self.delivery = Delivery(conn, cfg, notifiers, self.roster, clock, on_delivery, site.site_id)
        self._wake = asyncio.Event()
        # deliveries started in the transaction of the alarm changes that made them due (fire_at_once), to be sent
        # by the loop as soon as that transaction has committed
        self._ready: list[sqlite3.Row] = []
        self._followed = False  # a follow-up ("back to normal") was queued in the alarm change's transaction
        self.delivery.recover()

    # ---- the lifecycle hook (inside the alarm change's transaction) ----

    def on_event(self, conn: sqlite3.Connection, ev: AlarmEvent) -> None:
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
            self.schedule.plan(conn, a, episode, ev.at_ns)
        elif ev.kind == "cleared" and a.chattering:
            pass  # flapping: neither stop chasing nor send a "back to normal" per swing; the ack stops it
        elif ev.kind in _STOP:
            self._cancel(conn, a.id, ev.at_ns, _STOP[ev.kind])
            if ev.kind in ("acked", "cleared"):
                self.outbox.follow_up(conn, a, ev.kind, ev.at_ns, ev.actor)
                self._followed = True
        self._wake.set()

    def fire_at_once(self, lookup_alarm: Callable[[int], Alarm]) -> None:
        """In the caller's transaction (a batch of alarm changes): fire the tiers due now and start their
        deliveries, with the follow-ups the changes queued ("back to normal"), to be sent as soon as it commits. The
        siren then waits for that one commit (an fsync), not for another of the loop's own and a turn of the loop.
        Alarms raised together still go out as one digest: when a tier that registers a hazard is due, all of them
        wait for the loop, as they do when this fails (the alarm changes stand)."""
        followed, self._followed = self._followed, False
        now = self.clock()
        due = self.schedule.due(self.conn, now)
        if not (due or followed) or any(self._proposes(st) for st in due):
            return  # a hazard tier is due with them: the loop fires them all in one step, one digest
        started: list[sqlite3.Row] = []
        try:
            with tx(self.conn):  # a savepoint: if it fails, the alarm changes stand and the loop fires the tiers
                if not after_commit(self.conn, lambda: self._send_soon(started)):
                    return  # not inside tx(): the loop fires them after the commit, as any other due tier
                self._fire_due(due, now, lookup_alarm)
                started.extend(self._start_ready(now))
        except Exception:  # whatever fails here, the alarm changes must stand: the loop does this again
            if not self.conn.in_transaction:
                raise  # SQLite gave up the caller's whole transaction: the caller rewinds its changes
            log.exception("tiers due at once could not be fired with their alarms; the escalation loop fires them")

    def _proposes(self, st: sqlite3.Row) -> bool:
        tier = self._tier(st)
        return tier is not None and tier.propose_hazard

    def _tier(self, st: sqlite3.Row) -> TierConfig | None:
        """A step's tier in the configuration; None when its policy or tier is no longer there."""
        pol = next((p for p in self.cfg.policies if p.id == st["policy"]), None)
        return pol.tiers[st["tier"]] if pol is not None and st["tier"] < len(pol.tiers) else None

    def _send_soon(self, started: list[sqlite3.Row]) -> None:
        if started:
            self._ready.extend(started)
            self._wake.set()

    def _cancel(self, conn: sqlite3.Connection, alarm_id: int, at_ns: int, reason: str) -> None:
        self.schedule.cancel(conn, alarm_id, at_ns, reason)
        self.outbox.cancel(conn, alarm_id, reason)

    # ---- the loop ----

    def wake(self) -> None:
        self._wake.set()

    async def run(self, lookup_alarm: Callable[[int], Alarm], max_sleep_s: float = 1.0) -> None:
        """The loop; its supervisor starts it again after a failure. No send is in flight when it starts, so a
        delivery still `sending` is one whose outcome was never written (the database locked past its busy timeout,
        or full): it goes again under its key. Those alarm changes started for it (`_ready`) are among them: they
        go out once, from their rows."""
        self._ready.clear()
        self.delivery.recover()
        while True:
            await self.step(lookup_alarm)
            self._wake.clear()
            if self._ready:  # started by alarm changes while this step was sending
                continue
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
        due = [t for t in (self.schedule.next_due(self.conn), self.delivery.next_due(now)) if t is not None]
        if not due:
            return cap
        return max(0.0, min(cap, (min(due) - now) / 1e9))

    async def step(self, lookup_alarm: Callable[[int], Alarm]) -> None:
        """One pass through the stages: due tiers into the outbox, hazard clocks, then every group and retry that
        is ready goes out."""
        if self._ready:  # started in their alarms' committed transaction: they go out first
            ready, self._ready = self._ready, []
            await self._send(ready)
        now = self.clock()
        due = self.schedule.due(self.conn, now)
        hn = self.cfg.hazard_notices if self.hazard_source is not None else None
        if not (due or hn or self.outbox.queued_groups() or self.delivery.due_retries(now)):
            return  # nothing to write: no transaction (a write lock held by another process must not fail the loop)
        # Every stage up to the send is one transaction: each commit is an fsync (synchronous=FULL), and a tier due
        # at once (the siren) waited for three of them after the alarm's own, ~0.4 ms each, more on a busy disk.
        # A stage that fails on its own (a step that cannot fire) still rolls back only its part (a savepoint).
        with tx(self.conn):
            self._fire_due(due, now, lookup_alarm)
            # Overdue hazard clocks are fired only with someone on duty to tell: every deadline falls due at local
            # midnight, and a notice with nobody on duty failed while its clock was marked fired: the day shift
            # never heard of it (a review). They wait, overdue and shown so on the console, for the next one on duty.
            if hn is not None and self.hazard_source is not None and self._on_duty(hn.roles, now):
                with tx(self.conn):  # the clocks are marked fired in the same transaction as their notice is queued
                    self.outbox.hazard_notices(now, self.hazard_source(now), hn.roles, hn.channels)
            started = self._start_ready(now)
        if started:
            await self._send(started)
            self._wake.set()

    def _on_duty(self, roles: Sequence[str], now: int) -> bool:
        return any(self.roster.on_duty(role, now) for role in roles)

    async def _send(self, deliveries: list[sqlite3.Row]) -> None:
        """One delivery (a siren's, usually) is awaited in this task: gather would give it a task of its own, which
        runs only at the loop's next turn, after whatever else is ready (a pipeline batch, its fsync)."""
        if len(deliveries) == 1:
            await self.delivery.send(deliveries[0])
            return
        # every send ends before one's error ends the loop: `run` starts again by resending what is still `sending`,
        # which would send a message still in flight a second time
        got = await asyncio.gather(*(self.delivery.send(d) for d in deliveries), return_exceptions=True)
        for err in got:
            if isinstance(err, BaseException):
                raise err

    def _fire_due(self, due: list[sqlite3.Row], now: int, lookup_alarm: Callable[[int], Alarm]) -> None:
        for st in due:
            try:
                self._fire(st, now, lookup_alarm)
            except sqlite3.OperationalError:
                raise  # the database itself (full, locked): the loop's supervisor reports it and restarts the loop
            except Exception:
                if not self.conn.in_transaction:
                    # SQLite rolled the whole step back (out of memory, a corrupt page): nothing of it stands, and a
                    # later stage would commit on its own; the pass ends, the supervisor restarts the loop
                    raise
                # one step that cannot fire (e.g. propose_hazard failed) must neither stop the other alarms'
                # escalation nor kill the loop; its transaction rolled back, so it stays pending and is tried again
                log.exception("escalation step %s of alarm %s could not fire; retrying", st["id"], st["alarm_id"])

    def _fire(self, st: sqlite3.Row, now: int, lookup_alarm: Callable[[int], Alarm]) -> None:
        a = lookup_alarm(st["alarm_id"])
        tier = self._tier(st)
        with tx(self.conn):
            if not self.schedule.is_pending(self.conn, st["id"]):
                return
            if tier is None:
                self.schedule.drop(self.conn, st["id"], now, "policy no longer in the configuration")
                return
            self.schedule.mark_fired(self.conn, st["id"], now)
            self.outbox.fire(st, tier, a, now, self.propose_hazard)

    def _start_ready(self, now: int) -> list[sqlite3.Row]:
        """Open a delivery for every group that is ready and start it, with every retry that is due (in the
        caller's transaction: they are sent once it is committed)."""
        jobs: list[int] = []
        for group in self.outbox.queued_groups():
            if self.delivery.grouping(group, now):
                continue  # sent to within the window: the queued ones go out as one digest when it ends
            with tx(self.conn):
                rows = self.outbox.queued(group)
                if not rows:
                    continue
                did = self.delivery.open(group, rows, now)
                self.outbox.mark_sent(did, rows)
            jobs.append(did)
        jobs.extend(self.delivery.due_retries(now))
        return [self.delivery.start(d) for d in dict.fromkeys(jobs)]

    # ---- queries for the API ----

    def steps(self, alarm_id: int) -> list[dict[str, Any]]:
        return [dict(r) for r in self.schedule.steps(self.conn, alarm_id)]

    def deliveries(self, alarm_id: int | None = None, limit: int = 500) -> list[dict[str, Any]]:
        return self.delivery.listing(alarm_id, limit)
