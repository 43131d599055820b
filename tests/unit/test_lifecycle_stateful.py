"""Random transitions, operator actions, clock steps and restarts against an independent reference model."""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

from alerting.alarms import AlarmEvent, AlarmState, Lifecycle, LifecycleError, UnknownAlarm
from alerting.db import connect
from alerting.rules import Level, Rule, default_rules
from alerting.transition import Transition

S = 1_000_000_000
T0 = 1_800_000_000 * S
CHATTER, WINDOW_S, MAX_SHELVE_S = 2, 60, 3600  # 2: chattering episodes happen often enough
UNKNOWN_ID = 10**6

LEL = default_rules()["gas.lel"]  # value, ALARM / DANGER
H2S = default_rules()["gas.h2s"].model_copy(update={"id": "gas.h2s_latch", "latch": True})  # value, latching
STALE = Rule.model_validate(
    {
        "id": "gas.stale",
        "title_zh": "离线",
        "title_en": "stale",
        "kind": "gas",
        "quantity": "up",
        "direction": "low",
        "thresholds": [{"level": 2, "value": 0.5, "source": {"standard": "project", "confidence": "rec"}}],
        "category": "health",
    }
)
RULES = {r.id: r for r in (LEL, H2S, STALE)}
DEVICES = ("g1", "g2")
# few keys, so that random steps keep meeting the same alarms; g2 has only the health rule (never suppressed)
KEYS = [(LEL.id, "g1"), (H2S.id, "g1"), (STALE.id, "g2")]
REASONS = ("offline", "out_of_service")
# ack listed three times: most interesting paths (level_up after an ack, latching an acked alarm) start with one
ACTIONS = ("ack", "ack", "ack", "reset", "shelve", "unshelve", "comment")

Key = tuple[str, str]
Expected = list[tuple[str, int | None]]  # (event kind, alarm id); None = the id of a row this step creates


@dataclass
class Open:
    """The model of one open alarm."""

    id: int | None
    state: str
    level: int
    acked: bool = False  # only LATCHED alarms remember an ack without changing state
    shelved_until: int | None = None
    chattering: bool = False


def dump(conn: sqlite3.Connection) -> list[list[tuple[object, ...]]]:
    tables = ("alarm_alarms", "alarm_log", "alarm_raises", "alarm_suppressions", "audit")
    return [[tuple(r) for r in conn.execute(f"SELECT * FROM {t} ORDER BY rowid")] for t in tables]


class LifecycleMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="lifecycle-"))
        self.now = T0
        self.seen: list[AlarmEvent] = []
        self.lc = self._open()
        # the reference model
        self.cond: dict[Key, int] = dict.fromkeys(KEYS, 0)  # the evaluator's confirmed level
        self.cand: dict[Key, int | None] = dict.fromkeys(KEYS, None)  # its pending candidate
        self.last: dict[Key, Transition | None] = dict.fromkeys(KEYS, None)
        self.open: dict[Key, Open] = {}
        self.closed: set[int] = set()
        self.raises: dict[Key, list[int]] = {k: [] for k in KEYS}
        self.supp: dict[str, set[str]] = {d: set() for d in DEVICES}

    def _open(self) -> Lifecycle:
        lc = Lifecycle(
            connect(self.dir / "state.db"),
            RULES,
            lambda: self.now,
            chatter_count=CHATTER,
            chatter_window_s=WINDOW_S,
            max_shelve_s=MAX_SHELVE_S,
        )
        # power-loss durability is not what this test checks (a restart here is close + reopen): skip the fsyncs
        lc.conn.execute("PRAGMA synchronous=OFF")
        lc.hooks.append(lambda _conn, ev: self.seen.append(ev))
        return lc

    def teardown(self) -> None:
        self.lc.conn.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    # ---- helpers ----

    def _ids(self) -> list[int]:
        return sorted({m.id for m in self.open.values() if m.id is not None} | self.closed)

    def _key_of(self, alarm_id: int) -> Key | None:
        return next((k for k, m in self.open.items() if m.id == alarm_id), None)

    def _close(self, key: Key) -> None:
        m = self.open.pop(key)
        assert m.id is not None
        self.closed.add(m.id)

    def _raise(self, key: Key, m: Open) -> Expected:
        self.raises[key].append(self.now)
        n = sum(1 for t in self.raises[key] if t >= self.now - WINDOW_S * S)
        out: Expected = [("raised", m.id)]
        if n >= CHATTER and not m.chattering:
            m.chattering = True
            out.append(("chattering", m.id))
        return out

    def _check(self, got: list[AlarmEvent], expected: Expected, *, condition_changed: bool = False) -> None:
        assert got == self.seen, "hooks must see exactly the returned events"
        self.seen.clear()
        assert [e.kind for e in got] == [k for k, _ in expected]
        if not condition_changed:
            assert "raised" not in [e.kind for e in got]
        new_ids = {e.alarm.id for e, (_, i) in zip(got, expected, strict=True) if i is None}
        assert len(new_ids) <= 1 and not new_ids & set(self._ids())
        for e, (_, i) in zip(got, expected, strict=True):
            if i is not None:
                assert e.alarm.id == i
        for m in self.open.values():
            if m.id is None and new_ids:
                (m.id,) = new_ids

    def _refused(self, call: Callable[[], object], alarm_id: int) -> None:
        before = dump(self.lc.conn)
        with pytest.raises(LifecycleError) as err:
            call()
        assert isinstance(err.value, UnknownAlarm) == (alarm_id == UNKNOWN_ID)
        assert dump(self.lc.conn) == before and self.seen == []

    def _transition(self, key: Key, old: int, new: int, phase: str) -> Transition:
        r = RULES[key[0]]
        th = next((t for t in r.thresholds if t.level == new), None)
        value = th.value if th is not None and th.value is not None else 0.0
        return Transition(r.id, key[1], r.quantity, Level(old), Level(new), value, th, self.now, phase)  # type: ignore[arg-type]

    @staticmethod
    def _levels(key: Key) -> list[int]:
        return [int(t.level) for t in RULES[key[0]].thresholds]

    # ---- the evaluator's side ----

    @rule(data=st.data())
    def confirm(self, data: st.DataObject) -> None:
        # half the time a key with an open alarm, so that alarms go through several changes
        busy = sorted(self.open)
        keys = st.one_of(st.sampled_from(busy), st.sampled_from(KEYS)) if busy else st.sampled_from(KEYS)
        key = data.draw(keys, label="key")
        old = self.cond[key]
        new = data.draw(st.sampled_from([lv for lv in [0, *self._levels(key)] if lv != old]), label="new")
        t = self._transition(key, old, new, "confirmed")
        self.cond[key], self.cand[key], self.last[key] = new, None, t
        m = self.open.get(key)
        expected: Expected = []
        if new > 0:
            if m is None:
                m = self.open[key] = Open(None, "active_unacked", new)
                expected = self._raise(key, m)
            elif m.state in ("pending", "rtn_unacked", "latched"):
                m.state, m.level, m.acked = "active_unacked", new, False
                expected = self._raise(key, m)
            elif new > m.level:
                m.state, m.level = "active_unacked", new
                expected = [("level_up", m.id)]
            else:
                m.level = new
                expected = [("level_down", m.id)]
        elif m is not None and m.state in ("active_unacked", "active_acked"):
            if RULES[key[0]].latch:
                m.acked, m.state = m.state == "active_acked", "latched"
                expected = [("latched", m.id)]
            elif m.state == "active_unacked":
                m.state = "rtn_unacked"
                expected = [("cleared", m.id)]
            else:
                expected = [("cleared", m.id), ("closed", m.id)]
                self._close(key)
        self._check(self.lc.apply(t), expected, condition_changed=new > old)

    def _keys(self, want: Callable[[Key], bool]) -> list[Key]:
        return [k for k in KEYS if want(k)]

    @precondition(lambda self: self._keys(lambda k: max(self._levels(k)) > self.cond[k]))
    @rule(data=st.data())
    def pending(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(self._keys(lambda k: max(self._levels(k)) > self.cond[k])), label="key")
        new = data.draw(st.sampled_from([lv for lv in self._levels(key) if lv > self.cond[key]]), label="candidate")
        self.cand[key] = new
        if key not in self.open:
            self.open[key] = Open(None, "pending", new)
        got = self.lc.apply(self._transition(key, self.cond[key], new, "pending"))
        self._check(got, [])
        m = self.open[key]
        if m.id is None:  # the row is not in any event: find it by key
            (a,) = [a for a in self.lc.open_alarms() if (a.rule, a.device) == key]
            assert a.id not in self._ids()
            m.id = a.id

    @precondition(lambda self: self._keys(lambda k: self.cand[k] is not None))
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(self._keys(lambda k: self.cand[k] is not None)), label="key")
        cand = self.cand[key]
        assert cand is not None
        self.cand[key] = None
        m = self.open.get(key)
        if m is not None and m.state == "pending":
            self._close(key)
        self._check(self.lc.apply(self._transition(key, self.cond[key], cand, "cancelled")), [])

    @precondition(lambda self: self._keys(lambda k: self.last[k] is not None and self.cand[k] is None))
    @rule(data=st.data())
    def repeat(self, data: st.DataObject) -> None:
        """The evaluator re-emits its last confirmed transition (as after a restart): nothing happens."""
        key = data.draw(st.sampled_from(self._keys(lambda k: self.last[k] is not None and self.cand[k] is None)))
        t = self.last[key]
        assert t is not None
        before = dump(self.lc.conn)
        self._check(self.lc.apply(t), [])
        assert dump(self.lc.conn) == before

    # ---- operators ----

    def _operate(self, action: str, alarm_id: int, duration: int) -> None:
        """Run one operator action; the model decides whether it is legal and what it emits."""
        key = self._key_of(alarm_id)
        m = self.open[key] if key is not None else None
        lc = self.lc
        expected: Expected | None = None  # None: the model says the action is refused
        if action == "ack":
            call: Callable[[], list[AlarmEvent]] = partial(lc.ack, alarm_id, "op")
            if m is not None and m.state == "active_unacked":
                m.state, expected = "active_acked", [("acked", alarm_id)]
            elif m is not None and m.state == "rtn_unacked":
                expected = [("acked", alarm_id), ("closed", alarm_id)]
            elif m is not None and m.state == "latched" and not m.acked:
                m.acked, expected = True, [("acked", alarm_id)]
        elif action == "reset":
            call = partial(lc.reset, alarm_id, "op", "inspected")
            if m is not None and m.state == "latched":
                expected = [("reset", alarm_id), ("closed", alarm_id)]
        elif action == "shelve":
            call = partial(lc.shelve, alarm_id, "op", "noisy", duration)
            if m is not None:
                m.shelved_until, expected = self.now + duration * S, [("shelved", alarm_id)]
        elif action == "unshelve":
            call = partial(lc.unshelve, alarm_id, "op")
            if m is not None and m.shelved_until is not None:
                m.shelved_until, expected = None, [("unshelved", alarm_id)]
        else:
            call = partial(lc.comment, alarm_id, "op", "note")
            if alarm_id != UNKNOWN_ID:
                expected = [("comment", alarm_id)]
        if expected is None:
            self._refused(call, alarm_id)
            return
        if key is not None and expected[-1][0] == "closed":
            self._close(key)
        self._check(call(), expected)

    # durations and clock steps from small sets, so that a step often lands exactly on a shelve's expiry
    @rule(action=st.sampled_from(ACTIONS), data=st.data(), duration=st.sampled_from([30, 60, 120, MAX_SHELVE_S]))
    def operate(self, action: str, data: st.DataObject, duration: int) -> None:
        """An operator action, mostly on an open alarm, sometimes on a closed or an unknown one."""
        open_ids = sorted(m.id for m in self.open.values() if m.id is not None)
        others = st.sampled_from([*sorted(self.closed), UNKNOWN_ID])
        on_open = st.sampled_from(open_ids)
        target = st.one_of(on_open, on_open, on_open, others) if open_ids else others
        self._operate(action, data.draw(target, label="alarm"), duration)

    def _value_alarms(self, device: str) -> list[int]:
        return sorted(
            m.id for (r, d), m in self.open.items() if d == device and RULES[r].category == "value" and m.id is not None
        )

    @rule(
        on=st.booleans(),
        device=st.sampled_from(DEVICES),
        reason=st.sampled_from(REASONS),
        actor=st.sampled_from(["system", "op"]),
    )
    def suppression(self, on: bool, device: str, reason: str, actor: str) -> None:
        reasons = self.supp[device]
        expected: Expected = []
        if on and reason not in reasons:
            if not reasons:
                expected = [("suppressed", i) for i in self._value_alarms(device)]
            reasons.add(reason)
        elif not on and reason in reasons:
            reasons.discard(reason)
            if not reasons:
                expected = [("unsuppressed", i) for i in self._value_alarms(device)]
        call = self.lc.suppress if on else self.lc.unsuppress
        self._check(call(device, reason, actor), expected)

    # ---- time and restarts ----

    @rule(seconds=st.sampled_from([0, 10, 30, 60, 2 * WINDOW_S]), restart=st.booleans(), tick=st.booleans())
    def advance(self, seconds: int, restart: bool, tick: bool) -> None:
        """Time passes. `restart`: the process died meanwhile; the connection goes away without any shutdown
        and a new Lifecycle opens the same file. `tick`: the periodic shelve-expiry check runs."""
        self.now += seconds * S
        if restart:
            self.lc.conn.close()
            self.lc = self._open()
        if tick:
            due = [m for m in self.open.values() if m.shelved_until is not None and m.shelved_until <= self.now]
            due.sort(key=lambda m: m.id or 0)
            for m in due:
                m.shelved_until = None
            self._check(self.lc.tick(), [("unshelved", m.id) for m in due])

    # ---- invariants ----

    @invariant()
    def one_open_alarm_per_key(self) -> None:
        dupes = self.lc.conn.execute(
            "SELECT rule, device, quantity FROM alarm_alarms WHERE state != 'normal'"
            " GROUP BY rule, device, quantity HAVING COUNT(*) > 1"
        ).fetchall()
        assert dupes == []

    @invariant()
    def matches_the_model(self) -> None:
        got = {(a.rule, a.device): a for a in self.lc.open_alarms()}
        assert set(got) == set(self.open)
        for key, m in self.open.items():
            a = got[key]
            suppressed = RULES[key[0]].category == "value" and bool(self.supp[key[1]])
            assert (a.id, a.state.value, int(a.level), a.shelved_until_ns, a.chattering) == (
                m.id,
                m.state,
                m.level,
                m.shelved_until,
                m.chattering,
            )
            assert a.suppressed_by == (",".join(sorted(self.supp[key[1]])) if suppressed else None)
            assert a.notifiable == (m.state == "active_unacked" and m.shelved_until is None and not suppressed)
            if m.state == "latched":
                assert (a.acked_ns is not None) == m.acked
        closed = self.lc.query(state=AlarmState.NORMAL, limit=10**6)
        assert {a.id for a in closed} == self.closed
        assert not any(a.chattering or a.notifiable or a.shelved for a in closed)
        assert {s[:2] for s in self.lc.suppressions()} == {(d, r) for d, rs in self.supp.items() for r in rs}


def test_lifecycle_against_the_model() -> None:
    run_state_machine_as_test(
        LifecycleMachine,
        settings=settings(
            max_examples=60,
            stateful_step_count=40,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
