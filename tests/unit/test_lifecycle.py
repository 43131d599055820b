"""ISA-18.2 alarm lifecycle on a real SQLite file: transitions, operator actions, hooks, suppression, restart."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from alerting.alarms import (
    Alarm,
    AlarmEvent,
    AlarmState,
    BadRequest,
    Lifecycle,
    LifecycleError,
    UnknownAlarm,
)
from alerting.db import audit_rows, connect
from alerting.rules import Level, Rule, default_rules
from alerting.transition import Transition

S = 1_000_000_000
T0 = 1_700_000_000 * S
ROOT = Path(__file__).resolve().parents[2]

LEL = default_rules()["gas.lel"]  # ALARM 25, DANGER 50 (%LEL), value category
H2S_LATCH = default_rules()["gas.h2s"].model_copy(update={"latch": True})
OFFLINE = Rule.model_validate(
    {
        "id": "gas.offline",
        "title_zh": "气体探测器离线",
        "title_en": "gas detector offline",
        "kind": "gas",
        "quantity": "up",
        "direction": "low",
        "thresholds": [{"level": 2, "value": 0.5, "source": {"standard": "project", "confidence": "rec"}}],
        "category": "health",
    }
)
RULES = {r.id: r for r in (LEL, H2S_LATCH, OFFLINE)}


class FakeClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += int(seconds * S)


def tr(
    rule: Rule,
    old: Level,
    new: Level,
    at: int,
    *,
    device: str = "g1",
    phase: str = "confirmed",
    value: float | None = None,
) -> Transition:
    th = next((t for t in rule.thresholds if t.level == new), None)
    if value is None:
        value = th.value if th is not None and th.value is not None else 0.0
    return Transition(rule.id, device, rule.quantity, old, new, value, th, at, phase)  # type: ignore[arg-type]


def kinds(events: list[AlarmEvent]) -> list[str]:
    return [e.kind for e in events]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state.db"


@pytest.fixture
def lc(db: Path, clock: FakeClock) -> Iterator[Lifecycle]:
    conn = connect(db)
    yield Lifecycle(conn, RULES, clock)
    conn.close()


def raise_(lc: Lifecycle, clock: FakeClock, rule: Rule = LEL, level: Level = Level.ALARM, **kw: str) -> Alarm:
    ev = lc.apply(tr(rule, Level.NORMAL, level, clock(), **kw))  # type: ignore[arg-type]
    assert kinds(ev)[0] == "raised"
    return ev[0].alarm


def dump(conn: sqlite3.Connection) -> list[list[tuple[object, ...]]]:
    """Everything this module and audit() write, to prove a refused action changed nothing."""
    tables = ("alarm_alarms", "alarm_log", "alarm_raises", "alarm_suppressions", "audit")
    return [[tuple(r) for r in conn.execute(f"SELECT * FROM {t} ORDER BY rowid")] for t in tables]


# ---- raise / ack / clear -------------------------------------------------------------------------------------


def test_raise_ack_clear_closes(lc: Lifecycle, clock: FakeClock) -> None:
    ev = lc.apply(tr(LEL, Level.NORMAL, Level.ALARM, clock(), value=31.0))
    assert kinds(ev) == ["raised"]
    a = ev[0].alarm
    assert (a.state, a.level, a.max_level, a.value, a.threshold) == (
        AlarmState.ACTIVE_UNACKED,
        Level.ALARM,
        Level.ALARM,
        31.0,
        25.0,
    )
    assert a.source == LEL.thresholds[0].source.cite() and "GB/T 50493" in a.source
    assert (a.kind, a.category, a.title_zh, a.raised_ns, a.raise_count) == ("gas", "value", LEL.title_zh, T0, 1)
    assert a.notifiable and a.condition_level is Level.ALARM and ev[0].actor == "system"

    clock.advance(10)
    ev = lc.ack(a.id, "zhang", "checked the pit")
    assert kinds(ev) == ["acked"] and ev[0].text == "checked the pit" and ev[0].actor == "zhang"
    a = lc.get(a.id)
    assert (a.state, a.acked_ns, a.acked_by, a.notifiable) == (AlarmState.ACTIVE_ACKED, T0 + 10 * S, "zhang", False)

    clock.advance(10)
    ev = lc.apply(tr(LEL, Level.ALARM, Level.NORMAL, clock(), value=3.0))
    assert kinds(ev) == ["cleared", "closed"]
    a = lc.get(a.id)
    assert (a.state, a.cleared_ns, a.closed_ns, a.value) == (AlarmState.NORMAL, clock(), clock(), 3.0)
    assert lc.open_alarms() == []
    assert [h["kind"] for h in lc.history(a.id)] == ["raised", "acked", "cleared", "closed"]
    assert lc.history(a.id)[1] | {"level": Level.ALARM} == {
        "at_ns": T0 + 10 * S,
        "kind": "acked",
        "actor": "zhang",
        "text": "checked the pit",
        "level": Level.ALARM,
        "value": 31.0,
        "state": "active_acked",
    }


def test_return_to_normal_unacked_then_ack_closes(lc: Lifecycle, clock: FakeClock) -> None:
    a = raise_(lc, clock)
    assert kinds(lc.apply(tr(LEL, Level.ALARM, Level.NORMAL, clock()))) == ["cleared"]
    a = lc.get(a.id)
    assert (a.state, a.notifiable, a.condition_level, a.level) == (
        AlarmState.RTN_UNACKED,
        False,
        Level.NORMAL,
        Level.ALARM,
    )
    ev = lc.ack(a.id, "li")
    assert kinds(ev) == ["acked", "closed"]
    assert ev[1].alarm.state is AlarmState.NORMAL and ev[1].alarm.acked_by == "li"


def test_condition_returning_re_raises_the_same_row(lc: Lifecycle, clock: FakeClock) -> None:
    a = raise_(lc, clock)
    lc.apply(tr(LEL, Level.ALARM, Level.NORMAL, clock()))
    clock.advance(120)  # outside the chatter window
    ev = lc.apply(tr(LEL, Level.NORMAL, Level.ALARM, clock()))
    assert kinds(ev) == ["raised"]
    b = ev[0].alarm
    assert (b.id, b.state, b.raise_count, b.cleared_ns, b.raised_ns) == (
        a.id,
        AlarmState.ACTIVE_UNACKED,
        2,
        None,
        clock(),
    )


def test_level_up_needs_a_new_ack_and_level_down_keeps_the_state(lc: Lifecycle, clock: FakeClock) -> None:
    a = raise_(lc, clock)
    lc.ack(a.id, "zhang")
    ev = lc.apply(tr(LEL, Level.ALARM, Level.DANGER, clock(), value=55.0))
    assert kinds(ev) == ["level_up"]
    a = ev[0].alarm
    assert (a.state, a.level, a.max_level, a.threshold, a.acked_ns, a.notifiable) == (
        AlarmState.ACTIVE_UNACKED,
        Level.DANGER,
        Level.DANGER,
        50.0,
        None,
        True,
    )
    lc.ack(a.id, "zhang")
    ev = lc.apply(tr(LEL, Level.DANGER, Level.ALARM, clock(), value=40.0))
    assert kinds(ev) == ["level_down"]
    a = ev[0].alarm
    assert (a.state, a.level, a.max_level, a.threshold) == (AlarmState.ACTIVE_ACKED, Level.ALARM, Level.DANGER, 25.0)


def test_the_same_transition_twice_emits_nothing_the_second_time(lc: Lifecycle, clock: FakeClock) -> None:
    up = tr(LEL, Level.NORMAL, Level.ALARM, clock())
    down = tr(LEL, Level.ALARM, Level.NORMAL, clock())
    assert kinds(lc.apply(up)) == ["raised"]
    assert lc.apply(up) == []
    assert kinds(lc.apply(down)) == ["cleared"]
    assert lc.apply(down) == []
    (a,) = lc.open_alarms()
    assert (a.state, a.raise_count) == (AlarmState.RTN_UNACKED, 1)
    assert [h["kind"] for h in lc.history(a.id)] == ["raised", "cleared"]


def test_unknown_rule_raises_keyerror_and_writes_nothing(lc: Lifecycle, clock: FakeClock) -> None:
    before = dump(lc.conn)
    with pytest.raises(KeyError):
        lc.apply(Transition("no.such", "g1", "lel", Level.NORMAL, Level.ALARM, 30.0, None, clock()))
    assert dump(lc.conn) == before


# ---- pending -------------------------------------------------------------------------------------------------


def test_pending_is_visible_never_notified_and_promoted_in_place(lc: Lifecycle, clock: FakeClock) -> None:
    assert lc.apply(tr(LEL, Level.NORMAL, Level.ALARM, clock(), phase="pending")) == []
    (p,) = lc.open_alarms()
    assert (p.state, p.pending_ns, p.raised_ns, p.notifiable, p.condition_level) == (
        AlarmState.PENDING,
        T0,
        None,
        False,
        Level.NORMAL,
    )
    with pytest.raises(LifecycleError, match="pending"):
        lc.ack(p.id, "zhang")
    clock.advance(5)
    ev = lc.apply(tr(LEL, Level.NORMAL, Level.ALARM, clock()))
    assert kinds(ev) == ["raised"] and ev[0].alarm.id == p.id
    a = ev[0].alarm
    assert (a.state, a.pending_ns, a.raised_ns, a.raise_count) == (AlarmState.ACTIVE_UNACKED, T0, T0 + 5 * S, 1)
    assert [h["kind"] for h in lc.history(p.id)] == ["pending", "raised"]


def test_cancelled_pending_closes_without_ever_raising(lc: Lifecycle, clock: FakeClock) -> None:
    lc.apply(tr(LEL, Level.NORMAL, Level.ALARM, clock(), phase="pending"))
    clock.advance(2)
    assert lc.apply(tr(LEL, Level.NORMAL, Level.ALARM, clock(), phase="cancelled")) == []
    assert lc.open_alarms() == []
    (p,) = lc.query()
    assert (p.state, p.raised_ns, p.closed_ns, p.raise_count) == (AlarmState.NORMAL, None, T0 + 2 * S, 0)
    assert [h["kind"] for h in lc.history(p.id)] == ["pending", "cancelled"]
    lc.apply(tr(LEL, Level.NORMAL, Level.ALARM, clock(), phase="pending"))
    (q,) = lc.open_alarms()
    assert q.id != p.id  # the history row stays; a new candidate is a new row


def test_pending_and_cancel_leave_an_open_alarm_alone(lc: Lifecycle, clock: FakeClock) -> None:
    a = raise_(lc, clock)
    assert lc.apply(tr(LEL, Level.ALARM, Level.DANGER, clock(), phase="pending")) == []
    assert lc.apply(tr(LEL, Level.ALARM, Level.DANGER, clock(), phase="cancelled")) == []
    assert lc.open_alarms() == [lc.get(a.id)] and lc.get(a.id).state is AlarmState.ACTIVE_UNACKED


# ---- latch / reset -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("acked_first", [False, True])
def test_latching_rule_latches_whatever_the_ack_state(lc: Lifecycle, clock: FakeClock, acked_first: bool) -> None:
    a = raise_(lc, clock, H2S_LATCH)
    if acked_first:
        lc.ack(a.id, "wang")
    clock.advance(1)
    ev = lc.apply(tr(H2S_LATCH, Level.ALARM, Level.NORMAL, clock()))
    assert kinds(ev) == ["latched"]
    a = ev[0].alarm
    assert (a.state, a.cleared_ns, a.notifiable, a.condition_level) == (
        AlarmState.LATCHED,
        clock(),
        False,
        Level.NORMAL,
    )
    if not acked_first:  # a latched alarm records its ack and stays latched
        assert kinds(lc.ack(a.id, "wang")) == ["acked"]
        assert lc.get(a.id).state is AlarmState.LATCHED
    assert lc.get(a.id).acked_by == "wang"
    with pytest.raises(LifecycleError, match="already acknowledged"):
        lc.ack(a.id, "wang")
    with pytest.raises(BadRequest):
        lc.reset(a.id, "chen", "  ")
    ev = lc.reset(a.id, "chen", "sensor recalibrated, ventilation checked")
    assert kinds(ev) == ["reset", "closed"]
    a = ev[1].alarm
    assert (a.state, a.acked_by) == (AlarmState.NORMAL, "wang")


def test_reset_counts_as_the_ack_and_only_latched_alarms_reset(lc: Lifecycle, clock: FakeClock) -> None:
    a = raise_(lc, clock, H2S_LATCH)
    with pytest.raises(LifecycleError, match="only a latched alarm"):
        lc.reset(a.id, "chen", "fine")
    lc.apply(tr(H2S_LATCH, Level.ALARM, Level.NORMAL, clock()))
    clock.advance(60)
    lc.reset(a.id, "chen", "fine")
    a = lc.get(a.id)
    assert (a.state, a.acked_by, a.acked_ns, a.closed_ns) == (AlarmState.NORMAL, "chen", clock(), clock())


def test_latched_alarm_re_raises_when_the_condition_returns(lc: Lifecycle, clock: FakeClock) -> None:
    a = raise_(lc, clock, H2S_LATCH)
    lc.apply(tr(H2S_LATCH, Level.ALARM, Level.NORMAL, clock()))
    lc.ack(a.id, "wang")
    ev = lc.apply(tr(H2S_LATCH, Level.NORMAL, Level.DANGER, clock()))
    assert kinds(ev) == ["raised"]
    b = ev[0].alarm
    assert (b.id, b.state, b.level, b.acked_ns, b.notifiable) == (
        a.id,
        AlarmState.ACTIVE_UNACKED,
        Level.DANGER,
        None,
        True,
    )


# ---- refused actions -----------------------------------------------------------------------------------------


def _to_state(lc: Lifecycle, clock: FakeClock, state: AlarmState) -> int:
    if state is AlarmState.PENDING:
        lc.apply(tr(LEL, Level.NORMAL, Level.ALARM, clock(), phase="pending"))
        return lc.open_alarms()[0].id
    a = raise_(lc, clock)
    if state in (AlarmState.ACTIVE_ACKED, AlarmState.NORMAL):
        lc.ack(a.id, "zhang")
    if state is AlarmState.NORMAL:
        lc.apply(tr(LEL, Level.ALARM, Level.NORMAL, clock()))
    assert lc.get(a.id).state is state
    return a.id


@pytest.mark.parametrize("state", [AlarmState.PENDING, AlarmState.ACTIVE_ACKED, AlarmState.NORMAL])
def test_refused_ack_says_why_and_changes_nothing(lc: Lifecycle, clock: FakeClock, state: AlarmState) -> None:
    alarm_id = _to_state(lc, clock, state)
    before = dump(lc.conn)
    with pytest.raises(LifecycleError) as err:
        lc.ack(alarm_id, "zhang")
    assert f"alarm {alarm_id} cannot be acknowledged" in str(err.value)
    assert not isinstance(err.value, UnknownAlarm)
    assert dump(lc.conn) == before


def test_unknown_alarm_everywhere(lc: Lifecycle) -> None:
    calls: list[Callable[[], object]] = [
        lambda: lc.get(7),
        lambda: lc.ack(7, "a"),
        lambda: lc.shelve(7, "a", "why", 60),
        lambda: lc.unshelve(7, "a"),
        lambda: lc.reset(7, "a", "ok"),
        lambda: lc.comment(7, "a", "hi"),
        lambda: lc.history(7),
    ]
    for call in calls:
        with pytest.raises(UnknownAlarm, match="no alarm 7"):
            call()
    assert issubclass(UnknownAlarm, LifecycleError) and issubclass(BadRequest, LifecycleError)
    # the API maps exceptions by MRO: a bad argument must reach the ValueError (422) handler, not the 409 one
    assert BadRequest.__mro__.index(ValueError) < BadRequest.__mro__.index(LifecycleError)


# ---- shelving ------------------------------------------------------------------------------------------------


def test_shelve_expires_on_tick_and_unshelve_by_hand(lc: Lifecycle, clock: FakeClock) -> None:
    a = raise_(lc, clock)
    for reason, duration in (("", 60.0), ("  ", 60.0), ("noisy", 0.0), ("noisy", 8 * 3600 + 1)):
        with pytest.raises(BadRequest):
            lc.shelve(a.id, "zhang", reason, duration)
    ev = lc.shelve(a.id, "zhang", "sensor being replaced", 600)
    assert kinds(ev) == ["shelved"] and ev[0].text == "sensor being replaced"
    a = ev[0].alarm
    assert (a.shelved_until_ns, a.shelved_by, a.shelve_reason, a.notifiable) == (
        T0 + 600 * S,
        "zhang",
        "sensor being replaced",
        False,
    )
    clock.advance(599)
    assert lc.tick() == []
    clock.advance(1)
    ev = lc.tick()
    assert kinds(ev) == ["unshelved"] and ev[0].actor == "system"
    assert ev[0].alarm.notifiable and ev[0].alarm.shelved_until_ns is None
    assert lc.tick() == []
    with pytest.raises(LifecycleError, match="not shelved"):
        lc.unshelve(a.id, "zhang")
    lc.shelve(a.id, "zhang", "again", 60)
    assert kinds(lc.unshelve(a.id, "li")) == ["unshelved"]
    assert lc.get(a.id).notifiable
    assert [r["action"] for r in audit_rows(lc.conn, f"alarm:{a.id}")] == [
        "alarm.unshelve",
        "alarm.shelve",
        "alarm.shelve",
    ]


def test_closed_alarms_cannot_be_shelved_and_tick_ignores_them(lc: Lifecycle, clock: FakeClock) -> None:
    a = raise_(lc, clock)
    lc.shelve(a.id, "zhang", "noisy", 60)
    lc.ack(a.id, "zhang")
    lc.apply(tr(LEL, Level.ALARM, Level.NORMAL, clock()))
    with pytest.raises(LifecycleError, match="closed"):
        lc.shelve(a.id, "zhang", "noisy", 60)
    with pytest.raises(LifecycleError, match="not shelved"):  # its shelve ended with it
        lc.unshelve(a.id, "zhang")
    clock.advance(3600)
    assert lc.tick() == []


# ---- suppression by design -----------------------------------------------------------------------------------


def test_suppression_hides_value_alarms_never_health_alarms(lc: Lifecycle, clock: FakeClock) -> None:
    value = raise_(lc, clock)
    health = raise_(lc, clock, OFFLINE)
    other = raise_(lc, clock, device="g2")
    ev = lc.suppress("g1", "offline")
    assert [(e.kind, e.alarm.id, e.text) for e in ev] == [("suppressed", value.id, "offline")]
    assert lc.get(value.id).suppressed_by == "offline" and not lc.get(value.id).notifiable
    assert lc.get(health.id).suppressed_by is None and lc.get(health.id).notifiable
    assert lc.get(other.id).notifiable
    assert lc.suppress("g1", "offline") == []  # idempotent
    assert lc.suppress("g1", "out_of_service", actor="zhou") == []  # already suppressed: no second event
    assert lc.get(value.id).suppressed_by == "offline,out_of_service"
    assert [(d, r, a) for d, r, _, a in lc.suppressions()] == [
        ("g1", "offline", "system"),
        ("g1", "out_of_service", "zhou"),
    ]
    # a future value alarm of the device starts suppressed
    fut = raise_(lc, clock, H2S_LATCH)
    assert fut.suppressed_by == "offline,out_of_service" and not fut.notifiable

    assert lc.unsuppress("g1", "offline") == []  # one reason left
    assert lc.get(value.id).suppressed_by == "out_of_service"
    assert lc.unsuppress("g1", "nothing") == []
    ev = lc.unsuppress("g1", "out_of_service", actor="zhou")
    assert sorted((e.kind, e.alarm.id) for e in ev) == [("unsuppressed", value.id), ("unsuppressed", fut.id)]
    assert lc.get(value.id).notifiable and lc.suppressions("g1") == []
    # only the operator's changes are audited, as device actions
    assert [r["action"] for r in audit_rows(lc.conn, "device:g1")] == ["alarm.unsuppress", "alarm.suppress"]


# ---- chatter -------------------------------------------------------------------------------------------------


def _flap(lc: Lifecycle, clock: FakeClock, gap_s: float, ack: bool) -> list[list[str]]:
    out = []
    for _ in range(4):
        ev = lc.apply(tr(LEL, Level.NORMAL, Level.ALARM, clock()))
        out.append(kinds(ev))
        if ack:
            lc.ack(ev[0].alarm.id, "zhang")
        lc.apply(tr(LEL, Level.ALARM, Level.NORMAL, clock()))
        clock.advance(gap_s)
    return out


@pytest.mark.parametrize("ack", [False, True])
def test_chattering_flagged_once_per_episode(lc: Lifecycle, clock: FakeClock, ack: bool) -> None:
    got = _flap(lc, clock, gap_s=20, ack=ack)
    if not ack:  # one row re-raised: flagged on the third raise, once
        assert got == [["raised"], ["raised"], ["raised", "chattering"], ["raised"]]
        (a,) = lc.open_alarms()
        assert (a.chattering, a.raise_count) == (True, 4)
        lc.ack(a.id, "zhang")
        assert not lc.get(a.id).chattering  # the flag clears when the alarm closes
    else:  # acked alarms close and reopen as new rows: the raises still count per rule x device
        assert got == [["raised"], ["raised"], ["raised", "chattering"], ["raised", "chattering"]]
        assert [a.chattering for a in lc.query()] == [False] * 4


def test_raises_spread_beyond_the_window_do_not_chatter(lc: Lifecycle, clock: FakeClock) -> None:
    assert _flap(lc, clock, gap_s=31, ack=False) == [["raised"]] * 4
    assert not lc.open_alarms()[0].chattering


# ---- audit, comments, queries --------------------------------------------------------------------------------


def test_every_operator_action_is_audited(lc: Lifecycle, clock: FakeClock) -> None:
    a = raise_(lc, clock, H2S_LATCH)
    lc.comment(a.id, "zhang", "crew evacuated")
    lc.shelve(a.id, "zhang", "fan running", 60)
    lc.unshelve(a.id, "zhang")
    lc.ack(a.id, "zhang", "seen")
    lc.apply(tr(H2S_LATCH, Level.ALARM, Level.NORMAL, clock()))
    lc.reset(a.id, "chen", "readings normal for 30 min")
    lc.comment(a.id, "chen", "closed alarms take comments too")
    with pytest.raises(BadRequest):
        lc.comment(a.id, "chen", " ")
    rows = list(reversed(audit_rows(lc.conn, f"alarm:{a.id}")))
    assert [(r["actor"], r["action"], r["why"]) for r in rows] == [
        ("zhang", "alarm.comment", "crew evacuated"),
        ("zhang", "alarm.shelve", "fan running"),
        ("zhang", "alarm.unshelve", None),
        ("zhang", "alarm.ack", "seen"),
        ("chen", "alarm.reset", "readings normal for 30 min"),
        ("chen", "alarm.comment", "closed alarms take comments too"),
    ]
    assert rows[1]["detail"] == {"until_ns": T0 + 60 * S, "duration_s": 60}
    assert [h["kind"] for h in lc.history(a.id)][-3:] == ["reset", "closed", "comment"]


def test_query_filters(lc: Lifecycle, clock: FakeClock) -> None:
    a = raise_(lc, clock)  # g1 lel ALARM, will close
    lc.ack(a.id, "z")
    lc.apply(tr(LEL, Level.ALARM, Level.NORMAL, clock()))
    clock.advance(100)
    b = raise_(lc, clock, level=Level.DANGER, device="g2")
    clock.advance(100)
    c = raise_(lc, clock, OFFLINE)

    def ids(**kw: object) -> list[int]:
        return [x.id for x in lc.query(**kw)]  # type: ignore[arg-type]

    assert ids() == [c.id, b.id, a.id]
    assert ids(open_only=True) == [c.id, b.id]
    assert ids(state=AlarmState.NORMAL) == [a.id]
    assert ids(device="g2") == [b.id]
    assert ids(rule="gas.offline") == [c.id]
    assert ids(min_level=Level.DANGER) == [b.id]
    assert ids(since_ns=T0 + 100 * S) == [c.id, b.id]
    assert ids(since_ns=T0 + 1, until_ns=T0 + 200 * S) == [b.id]
    assert ids(limit=1) == [c.id]


# ---- transactions and hooks ----------------------------------------------------------------------------------


def test_a_hook_that_raises_rolls_the_whole_ack_back(lc: Lifecycle, clock: FakeClock) -> None:
    a = raise_(lc, clock)
    before = dump(lc.conn)

    def boom(conn: sqlite3.Connection, ev: AlarmEvent) -> None:
        assert conn.in_transaction
        # the hook sees the change it is part of
        assert conn.execute("SELECT state FROM alarm_alarms WHERE id = ?", (ev.alarm.id,)).fetchone()[0] == (
            "active_acked"
        )
        raise RuntimeError("escalation store unavailable")

    lc.hooks.append(boom)
    with pytest.raises(RuntimeError, match="escalation store"):
        lc.ack(a.id, "zhang")
    assert dump(lc.conn) == before
    assert lc.get(a.id).state is AlarmState.ACTIVE_UNACKED and not lc.conn.in_transaction


def test_a_hook_write_commits_with_the_change(lc: Lifecycle, clock: FakeClock, db: Path) -> None:
    lc.conn.execute("CREATE TABLE esc_pending (alarm_id INTEGER, kind TEXT)")
    seen: list[tuple[str, bool]] = []

    def record(conn: sqlite3.Connection, ev: AlarmEvent) -> None:
        seen.append((ev.kind, ev.alarm.notifiable))
        conn.execute("INSERT INTO esc_pending VALUES (?, ?)", (ev.alarm.id, ev.kind))

    lc.hooks.append(record)
    a = raise_(lc, clock)
    lc.ack(a.id, "zhang")
    assert seen == [("raised", True), ("acked", False)]
    other = sqlite3.connect(db)  # a separate connection sees only committed data
    assert other.execute("SELECT alarm_id, kind FROM esc_pending ORDER BY rowid").fetchall() == [
        (a.id, "raised"),
        (a.id, "acked"),
    ]
    other.close()


# ---- persistence ---------------------------------------------------------------------------------------------


def test_reopening_without_shutdown_carries_on(db: Path, clock: FakeClock) -> None:
    conn = connect(db)
    lc = Lifecycle(conn, RULES, clock, chatter_count=3)
    a = raise_(lc, clock)
    lc.apply(tr(LEL, Level.ALARM, Level.NORMAL, clock()))
    lc.apply(tr(LEL, Level.NORMAL, Level.ALARM, clock()))  # second raise
    lc.shelve(a.id, "zhang", "noisy", 60)
    lc.suppress("g1", "out_of_service", actor="zhou")
    raise_(lc, clock, OFFLINE)
    before = lc.open_alarms()
    conn.close()  # no shutdown call of any kind

    lc2 = Lifecycle(connect(db), RULES, clock, chatter_count=3)
    assert lc2.open_alarms() == before
    assert lc2.suppressions("g1")[0][:2] == ("g1", "out_of_service")
    assert lc2.apply(tr(LEL, Level.NORMAL, Level.ALARM, clock())) == []  # re-emitted after restart: nothing
    lc2.apply(tr(LEL, Level.ALARM, Level.NORMAL, clock()))
    assert kinds(lc2.apply(tr(LEL, Level.NORMAL, Level.ALARM, clock()))) == ["raised", "chattering"]
    clock.advance(60)
    assert kinds(lc2.tick()) == ["unshelved"]
    lc2.conn.close()


def test_kill_9_keeps_every_committed_change(db: Path) -> None:
    child = textwrap.dedent(
        f"""
        import os, signal
        from alerting.db import connect
        from alerting.transition import Transition
        from alerting.alarms import Lifecycle
        from alerting.rules import Level, default_rules
        lc = Lifecycle(connect({str(db)!r}), default_rules(), lambda: {T0})
        ev = lc.apply(Transition("gas.lel", "g1", "lel", Level.NORMAL, Level.DANGER, 60.0, None, {T0}))
        lc.ack(ev[0].alarm.id, "zhang")
        lc.shelve(ev[0].alarm.id, "zhang", "fan on", 300)
        lc.suppress("g1", "offline")
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", child], cwd=ROOT, capture_output=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    conn = connect(db)
    lc = Lifecycle(conn, default_rules(), lambda: T0)
    (a,) = lc.open_alarms()
    assert (a.state, a.level, a.threshold, a.acked_by, a.shelved_until_ns, a.suppressed_by) == (
        AlarmState.ACTIVE_ACKED,
        Level.DANGER,
        50.0,
        "zhang",
        T0 + 300 * S,
        "offline",
    )
    assert [h["kind"] for h in lc.history(a.id)] == ["raised", "acked", "shelved", "suppressed"]
    conn.close()
    assert os.path.exists(db)


def test_unique_index_rejects_a_second_open_row_even_by_hand(lc: Lifecycle, clock: FakeClock) -> None:
    a = raise_(lc, clock)
    copy = (
        "INSERT INTO alarm_alarms(rule, device, quantity, kind, category, state, level, max_level, value, source,"
        " title_zh, title_en) SELECT rule, device, quantity, kind, category, ?, level, max_level, value, source,"
        " title_zh, title_en FROM alarm_alarms WHERE id = ?"
    )
    with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
        lc.conn.execute(copy, ("pending", a.id))
    lc.conn.execute(copy, ("normal", a.id))  # history rows of the same key are fine
    assert len(lc.query(rule=LEL.id)) == 2 and len(lc.open_alarms()) == 1


def test_a_state_file_without_source_times_gets_the_column(tmp_path: Path) -> None:
    """A state file written before alarms carried the reading's time: its rows read with source_ns None."""
    import sqlite3

    from alerting.schema_v1 import V1

    # the first version's tables as that release wrote them, without the column, and no schema version yet
    old_schema = V1.replace(",\n    source_ns INTEGER\n);", "\n);", 1)
    assert "source_ns" not in old_schema.split("CREATE TABLE IF NOT EXISTS alarm_log")[0]
    db = tmp_path / "old.db"
    conn = sqlite3.connect(db)
    conn.executescript(old_schema)
    conn.execute(
        "INSERT INTO alarm_alarms(rule, device, quantity, kind, category, state, level, max_level, value, source,"
        " title_zh, title_en, raised_ns) VALUES ('gas.lel', 'G', 'lel', 'gas', 'value', 'active_unacked', 2, 2, 30,"
        " 'x', 'x', 'x', 1)"
    )
    conn.commit()
    conn.close()
    lc = Lifecycle(connect(db), default_rules(), lambda: T0)
    (a,) = lc.open_alarms()
    assert (a.rule, a.source_ns) == ("gas.lel", None)
