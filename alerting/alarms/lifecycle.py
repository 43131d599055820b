"""The ISA-18.2 / OPC UA A&C alarm lifecycle: transitions and operator actions -> durable alarm rows and events."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from alerting.alarms.model import (
    ACTIVE_STATES,
    NS,
    SYSTEM,
    Alarm,
    AlarmEvent,
    AlarmState,
    BadRequest,
    EventKind,
    Hook,
    LifecycleError,
)
from alerting.alarms.store import AlarmStore
from alerting.db import audit, tx
from alerting.rules import Level, Rule
from alerting.transition import Transition
from telemetry.clock import Clock

_Kinds = Sequence[tuple[EventKind, str | None]]


class Lifecycle(AlarmStore):
    """Alarm records following ISA-18.2 / OPC UA Alarms & Conditions, all state in SQLite.

    - One open (non-NORMAL) alarm per (rule, device, quantity), enforced by a UNIQUE partial index.
    - apply(): pending -> a PENDING row (nothing if an open alarm exists); cancelled -> the PENDING row closes
      (NORMAL, no "raised" ever; kept as history). Confirmed to a level > NORMAL: no open alarm -> ACTIVE_UNACKED
      "raised" (a PENDING row is promoted); open at a lower level -> "level_up" and back to ACTIVE_UNACKED (a
      higher severity is acknowledged again); open at a higher level -> "level_down" (state unchanged); same level
      -> nothing (a re-emitted transition after a restart); RTN_UNACKED / LATCHED -> ACTIVE_UNACKED "raised" on the
      same row. Confirmed to NORMAL: ACTIVE_ACKED -> NORMAL ("cleared", "closed"); ACTIVE_UNACKED -> RTN_UNACKED
      ("cleared"); with rule.latch -> LATCHED ("latched") instead, whatever the ack state. Unknown rule: KeyError.
      PENDING rows and their cancellation are written to the alarm log ("pending", "cancelled") but emit no
      event: nothing about them is ever notified.
    - ack(): ACTIVE_UNACKED -> ACTIVE_ACKED; RTN_UNACKED -> NORMAL ("acked", "closed"); LATCHED -> stays latched,
      the ack is recorded (once); any other state -> LifecycleError.
    - reset(): LATCHED only, comment required; closes the alarm ("reset", "closed") and counts as its ack.
    - shelve(): open alarms, reason required, 0 < duration_s <= max_shelve_s (shelving again replaces the expiry);
      tick() unshelves expired ones (actor "system"); unshelve() ends it by hand.
    - suppress(device, reason): while a device has at least one reason, its open and future "value" alarms carry
      suppressed_by (health alarms never). "suppressed" is emitted per open alarm when its first reason arrives,
      "unsuppressed" when its last one goes; idempotent both ways. Suppressions persist.
    - Chatter: chatter_count or more raises of a rule x device x quantity within chatter_window_s flag the alarm
      chattering ("chattering" once per episode); the flag clears when the alarm closes.
    - Notifiable = ACTIVE_UNACKED and not shelved and not suppressed; consumers (escalation) decide from
      `event.alarm.notifiable` after each event.
    - Every event is written to alarm_log and passed to every hook inside the transaction of the change (a hook
      that raises rolls the change back). Operator actions also write an audit() row in that transaction.
    - Nothing authoritative is kept in memory: a new Lifecycle on the same file carries on after a crash.
    """

    def __init__(
        self,
        conn: sqlite3.Connection,
        rules: Mapping[str, Rule],
        clock: Clock,
        chatter_count: int = 3,
        chatter_window_s: float = 60.0,
        max_shelve_s: float = 8 * 3600,
        hooks: Sequence[Hook] = (),
    ) -> None:
        if chatter_count < 1 or chatter_window_s <= 0 or max_shelve_s <= 0:
            raise ValueError("chatter_count, chatter_window_s and max_shelve_s must be positive")
        self.conn = conn
        self.rules = rules
        self.clock = clock
        self.chatter_count = chatter_count
        self.chatter_window_ns = int(chatter_window_s * NS)
        self.max_shelve_s = max_shelve_s
        self.hooks: list[Hook] = list(hooks)  # run in this order inside the transaction of each change
        # one connection may be shared by threads (check_same_thread=False); tx() would let a second thread
        # silently join the first one's transaction, so this module's changes are serialised here
        self._lock = threading.RLock()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One transaction around several changes (each `apply` then a savepoint of it), serialised like them."""
        with self._lock, tx(self.conn) as conn:
            yield conn

    # ---- transitions from the evaluator -------------------------------------------------------------------

    def apply(self, t: Transition) -> list[AlarmEvent]:
        """Turn one evaluator transition into alarm changes (actor "system", at t.at_ns)."""
        rule = self.rules[t.rule]  # KeyError for an unknown rule, before anything is written
        with self._lock, tx(self.conn):
            row = self._open_row(t.rule, t.device, t.quantity)
            if t.phase == "pending":
                if row is None and t.new > Level.NORMAL:
                    alarm_id = self._insert(rule, t, AlarmState.PENDING)
                    self._log(alarm_id, "pending", SYSTEM, t.at_ns, None)
                return []
            if t.phase == "cancelled":
                if row is not None and row["state"] == AlarmState.PENDING:
                    self._close_pending(row["id"], t)
                return []
            if t.new > Level.NORMAL:
                return self._confirm_up(rule, t, row)
            return self._confirm_normal(rule, t, row)

    def _confirm_up(self, rule: Rule, t: Transition, row: sqlite3.Row | None) -> list[AlarmEvent]:
        th, src = self._threshold(rule, t)
        if row is None:
            alarm_id = self._insert(rule, t, AlarmState.ACTIVE_UNACKED)
            return self._emit(alarm_id, self._raised(alarm_id, t, first=True), SYSTEM, t.at_ns)
        alarm_id, state, level = row["id"], AlarmState(row["state"]), Level(row["level"])
        common = {"value": t.value, "threshold": th, "source": src, "source_ns": t.source_ns}
        if state in (AlarmState.PENDING, AlarmState.RTN_UNACKED, AlarmState.LATCHED):
            self._update(
                alarm_id,
                state=AlarmState.ACTIVE_UNACKED,
                level=t.new,
                # a PENDING row's max_level was only a candidate; a re-raise keeps the row's highest level
                max_level=t.new if state is AlarmState.PENDING else max(t.new, Level(row["max_level"])),
                raised_ns=t.at_ns,
                cleared_ns=None,
                acked_ns=None,
                acked_by=None,
                **common,
            )
            first = state is AlarmState.PENDING
            return self._emit(alarm_id, self._raised(alarm_id, t, first=first), SYSTEM, t.at_ns)
        if t.new == level:
            return []  # the same change again (e.g. re-emitted after a restart): never notify twice
        if t.new > level:
            self._update(
                alarm_id,
                state=AlarmState.ACTIVE_UNACKED,
                level=t.new,
                max_level=max(t.new, Level(row["max_level"])),
                acked_ns=None,
                acked_by=None,
                **common,
            )
            return self._emit(alarm_id, [("level_up", f"{level.zh}→{t.new.zh}")], SYSTEM, t.at_ns)
        self._update(alarm_id, level=t.new, **common)
        return self._emit(alarm_id, [("level_down", f"{level.zh}→{t.new.zh}")], SYSTEM, t.at_ns)

    def _confirm_normal(self, rule: Rule, t: Transition, row: sqlite3.Row | None) -> list[AlarmEvent]:
        if row is None:
            return []
        alarm_id, state = row["id"], AlarmState(row["state"])
        if state is AlarmState.PENDING:  # cannot come from the evaluator, but a stale candidate must not stay open
            self._close_pending(alarm_id, t)
            return []
        if state not in ACTIVE_STATES:
            return []  # already cleared (RTN_UNACKED / LATCHED): a repeat
        if rule.latch:
            self._update(alarm_id, state=AlarmState.LATCHED, value=t.value, cleared_ns=t.at_ns, source_ns=t.source_ns)
            return self._emit(alarm_id, [("latched", None)], SYSTEM, t.at_ns)
        if state is AlarmState.ACTIVE_UNACKED:
            self._update(
                alarm_id, state=AlarmState.RTN_UNACKED, value=t.value, cleared_ns=t.at_ns, source_ns=t.source_ns
            )
            return self._emit(alarm_id, [("cleared", None)], SYSTEM, t.at_ns)
        self._update(alarm_id, value=t.value, cleared_ns=t.at_ns, source_ns=t.source_ns, **self._closing(t.at_ns))
        return self._emit(alarm_id, [("cleared", None), ("closed", None)], SYSTEM, t.at_ns)

    def _raised(self, alarm_id: int, t: Transition, *, first: bool) -> list[tuple[EventKind, str | None]]:
        """Count a raise (row and chatter window); flag the alarm chattering when this raise makes it so."""
        c = self.conn
        c.execute("UPDATE alarm_alarms SET raise_count = raise_count + 1 WHERE id = ?", (alarm_id,))
        key = (t.rule, t.device, t.quantity)
        since = t.at_ns - self.chatter_window_ns
        c.execute("INSERT INTO alarm_raises(rule, device, quantity, at_ns) VALUES (?, ?, ?, ?)", (*key, t.at_ns))
        # older raises can never count again (the window only moves forward): keep the table small
        c.execute(
            "DELETE FROM alarm_raises WHERE rule = ? AND device = ? AND quantity = ? AND at_ns < ?", (*key, since)
        )
        (n,) = c.execute(
            "SELECT COUNT(*) FROM alarm_raises WHERE rule = ? AND device = ? AND quantity = ? AND at_ns >= ?",
            (*key, since),
        ).fetchone()
        out: list[tuple[EventKind, str | None]] = [("raised", None if first else "re-raised")]
        chattering = c.execute("SELECT chattering FROM alarm_alarms WHERE id = ?", (alarm_id,)).fetchone()[0]
        if n >= self.chatter_count and not chattering:
            self._update(alarm_id, chattering=1)
            out.append(("chattering", f"{n} raises within {self.chatter_window_ns / NS:g} s"))
        return out

    def _close_pending(self, alarm_id: int, t: Transition) -> None:
        self._update(alarm_id, value=t.value, **self._closing(t.at_ns))
        self._log(alarm_id, "cancelled", SYSTEM, t.at_ns, None)

    @staticmethod
    def _closing(at_ns: int) -> dict[str, Any]:
        # a shelve ends with the alarm (the log keeps who shelved it); chattering is per episode
        none = {"shelved_until_ns": None, "shelved_by": None, "shelve_reason": None}
        return {"state": AlarmState.NORMAL, "closed_ns": at_ns, "chattering": 0, **none}

    # ---- operator actions ---------------------------------------------------------------------------------

    def ack(self, alarm_id: int, actor: str, comment: str | None = None) -> list[AlarmEvent]:
        with self._lock, tx(self.conn):
            a = self._get(alarm_id)
            now = self.clock()
            kinds: list[tuple[EventKind, str | None]] = [("acked", comment)]
            if a.state is AlarmState.ACTIVE_UNACKED:
                self._update(alarm_id, state=AlarmState.ACTIVE_ACKED, acked_ns=now, acked_by=actor)
            elif a.state is AlarmState.RTN_UNACKED:
                self._update(alarm_id, acked_ns=now, acked_by=actor, **self._closing(now))
                kinds.append(("closed", None))
            elif a.state is AlarmState.LATCHED and a.acked_ns is None:
                self._update(alarm_id, acked_ns=now, acked_by=actor)
            else:
                raise LifecycleError(f"alarm {alarm_id} cannot be acknowledged: {self._why_not_ack(a)}")
            audit(self.conn, now, actor, "alarm.ack", f"alarm:{alarm_id}", comment, {"state": a.state.value})
            return self._emit(alarm_id, kinds, actor, now)

    @staticmethod
    def _why_not_ack(a: Alarm) -> str:
        if a.state is AlarmState.PENDING:
            return "it is still pending (its on-delay has not run out)"
        if a.state is AlarmState.NORMAL:
            return "it is closed"
        return f"it was already acknowledged by {a.acked_by}"

    def reset(self, alarm_id: int, actor: str, comment: str) -> list[AlarmEvent]:
        """Close a LATCHED alarm after an inspection; `comment` says what the inspection found."""
        if not comment or not comment.strip():
            raise BadRequest("a reset needs a comment: what the inspection found")
        with self._lock, tx(self.conn):
            a = self._get(alarm_id)
            if a.state is not AlarmState.LATCHED:
                raise LifecycleError(f"alarm {alarm_id} is {a.state.value}: only a latched alarm can be reset")
            now = self.clock()
            acked = {} if a.acked_ns is not None else {"acked_ns": now, "acked_by": actor}
            self._update(alarm_id, **acked, **self._closing(now))
            audit(self.conn, now, actor, "alarm.reset", f"alarm:{alarm_id}", comment)
            return self._emit(alarm_id, [("reset", comment), ("closed", None)], actor, now)

    def shelve(self, alarm_id: int, actor: str, reason: str, duration_s: float) -> list[AlarmEvent]:
        if not reason or not reason.strip():
            raise BadRequest("shelving needs a reason")
        if not 0 < duration_s <= self.max_shelve_s:
            raise BadRequest(f"shelve duration must be more than 0 s and at most {self.max_shelve_s:g} s")
        with self._lock, tx(self.conn):
            a = self._get(alarm_id)
            if not a.open:
                raise LifecycleError(f"alarm {alarm_id} is closed: only open alarms can be shelved")
            now = self.clock()
            until = now + int(duration_s * NS)
            self._update(alarm_id, shelved_until_ns=until, shelved_by=actor, shelve_reason=reason)
            detail = {"until_ns": until, "duration_s": duration_s}
            audit(self.conn, now, actor, "alarm.shelve", f"alarm:{alarm_id}", reason, detail)
            return self._emit(alarm_id, [("shelved", reason)], actor, now)

    def unshelve(self, alarm_id: int, actor: str) -> list[AlarmEvent]:
        with self._lock, tx(self.conn):
            a = self._get(alarm_id)
            if not a.open or not a.shelved:
                raise LifecycleError(f"alarm {alarm_id} is not shelved")
            now = self.clock()
            self._update(alarm_id, shelved_until_ns=None, shelved_by=None, shelve_reason=None)
            audit(self.conn, now, actor, "alarm.unshelve", f"alarm:{alarm_id}")
            return self._emit(alarm_id, [("unshelved", None)], actor, now)

    def comment(self, alarm_id: int, actor: str, text: str) -> list[AlarmEvent]:
        """Add a note to any alarm, open or closed."""
        if not text or not text.strip():
            raise BadRequest("a comment needs text")
        with self._lock, tx(self.conn):
            self._get(alarm_id)
            now = self.clock()
            audit(self.conn, now, actor, "alarm.comment", f"alarm:{alarm_id}", text)
            return self._emit(alarm_id, [("comment", text)], actor, now)

    def tick(self) -> list[AlarmEvent]:
        """Unshelve the alarms whose shelve expired; call every few seconds."""
        with self._lock, tx(self.conn):
            now = self.clock()
            ids = [
                r[0]
                for r in self.conn.execute(
                    "SELECT id FROM alarm_alarms WHERE state != 'normal' AND shelved_until_ns <= ? ORDER BY id", (now,)
                )
            ]
            out: list[AlarmEvent] = []
            for alarm_id in ids:
                self._update(alarm_id, shelved_until_ns=None, shelved_by=None, shelve_reason=None)
                out += self._emit(alarm_id, [("unshelved", "shelve expired")], SYSTEM, now)
            return out

    # ---- suppression by design ----------------------------------------------------------------------------

    def suppress(self, device: str, reason: str, actor: str = SYSTEM) -> list[AlarmEvent]:
        """Suppress the device's value alarms for `reason` (e.g. "offline", "out_of_service"); idempotent."""
        if not reason or not reason.strip():
            raise BadRequest("a suppression needs a reason")
        if self._has_suppression(device, reason):
            return []  # the common case (called per reading): no write transaction at all
        with self._lock, tx(self.conn):
            now = self.clock()
            cur = self.conn.execute(
                "INSERT OR IGNORE INTO alarm_suppressions(device, reason, since_ns, actor) VALUES (?, ?, ?, ?)",
                (device, reason, now, actor),
            )
            if cur.rowcount == 0:
                return []
            if actor != SYSTEM:
                audit(self.conn, now, actor, "alarm.suppress", f"device:{device}", reason)
            return self._resuppress(device, reason, actor, now)

    def unsuppress(self, device: str, reason: str, actor: str = SYSTEM) -> list[AlarmEvent]:
        """Remove one suppression reason; the alarms come back when the device has none left. Idempotent."""
        if not self._has_suppression(device, reason):
            return []  # the common case (called per reading): no write transaction at all
        with self._lock, tx(self.conn):
            now = self.clock()
            cur = self.conn.execute("DELETE FROM alarm_suppressions WHERE device = ? AND reason = ?", (device, reason))
            if cur.rowcount == 0:
                return []
            if actor != SYSTEM:
                audit(self.conn, now, actor, "alarm.unsuppress", f"device:{device}", reason)
            return self._resuppress(device, reason, actor, now)

    def _resuppress(self, device: str, reason: str, actor: str, now: int) -> list[AlarmEvent]:
        """Bring suppressed_by of the device's open value alarms up to date; events where suppression flips."""
        joined = self._suppressed_by(device)
        rows = self.conn.execute(
            "SELECT id, rule, suppressed_by FROM alarm_alarms"
            " WHERE device = ? AND state != 'normal' AND category = 'value' ORDER BY id",
            (device,),
        ).fetchall()
        out: list[AlarmEvent] = []
        for r in rows:
            rule = self.rules.get(r["rule"])
            if rule is not None and not rule.suppress_by_design:
                continue
            self._update(r["id"], suppressed_by=joined)
            if (r["suppressed_by"] is None) != (joined is None):
                kind: EventKind = "suppressed" if joined is not None else "unsuppressed"
                out += self._emit(r["id"], [(kind, reason)], actor, now)
        return out

    def _emit(self, alarm_id: int, kinds: _Kinds, actor: str, at_ns: int) -> list[AlarmEvent]:
        """Log the events and run the hooks, still inside the caller's transaction."""
        snap = self._get(alarm_id)
        out: list[AlarmEvent] = []
        for kind, text in kinds:
            self._log(alarm_id, kind, actor, at_ns, text)
            ev = AlarmEvent(kind, snap, at_ns, actor, text)
            for hook in self.hooks:
                hook(self.conn, ev)
            out.append(ev)
        return out
