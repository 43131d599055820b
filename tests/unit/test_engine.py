"""The composed alarm engine (as the gateway builds it) with a fake clock: readings -> alarms -> escalation,
offline suppression by design, a hazard from an alarm, and an overdue hazard clock notified exactly once."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from alerting.alarms import AlarmEvent, AlarmState
from alerting.engine import AlarmEngine
from alerting.roles import Role
from alerting.rules import HazardBasis, Level
from alerting.setup import AlarmSetup
from alerting.transition import Transition
from gateway.spool import Spool
from telemetry.reading import Reading
from tests.receivers import HttpReceiver, http_receiver
from tests.sites import write_site
from tests.unit.test_escalation import Commits

T0 = int(datetime(2026, 11, 23, 2, 0, tzinfo=UTC).timestamp() * 1e9)  # Monday 10:00 in Shanghai
S = 10**9


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def hook() -> Iterator[HttpReceiver]:
    with http_receiver() as rx:
        yield rx


FIRST_TIER = {"after_s": 0, "roles": ["safety_officer"], "channels": ["hook"]}


def alarm_setup(
    tmp_path: Path,
    hook: HttpReceiver,
    policies: list[dict[str, Any]] | None = None,
    group_window_s: float = 0,
    **extra: Any,
) -> AlarmSetup:
    cfg = write_site(
        tmp_path / "site.yaml",
        influx_port=18086,
        mqtt_port=1883,
        devices=[{"id": "G1", "profile": "gas_4in1_mqtt_v1", "broker": "b", "topic": "g/+", "name": "1号井"}],
        escalation={
            "people": [{"id": "wang", "name": "王工"}],
            "duty": [{"role": "safety_officer", "people": ["wang"]}],
            "channels": [{"id": "hook", "type": "webhook", "url": f"{hook.url}/n"}],
            "policies": policies or [{"id": "all", "tiers": [FIRST_TIER]}],
            "hazard_notices": {"roles": ["safety_officer"], "channels": ["hook"]},
            "group_window_s": group_window_s,
        },
        hazards={"reporting_unit": "测试建设公司 项目部"},
        **extra,
    )
    return cfg.alarm_setup()


def engine(tmp_path: Path, hook: HttpReceiver, clock: Clock) -> AlarmEngine:
    return AlarmEngine(alarm_setup(tmp_path, hook), clock)


def posts(hook: HttpReceiver) -> list[dict[str, object]]:
    return [r.json for r in hook.requests if r.path == "/n"]


async def test_reading_to_alarm_to_notification_and_offline_suppression(tmp_path: Path, hook: HttpReceiver) -> None:
    clock = Clock()
    eng = engine(tmp_path, hook, clock)
    try:
        eng.on_readings([Reading("G1", "lel", 30.0, T0)])
        (a,) = eng.lifecycle.open_alarms()
        assert (a.rule, a.level, a.state, a.value) == ("gas.lel", Level.ALARM, AlarmState.ACTIVE_UNACKED, 30.0)
        await eng.escalation.step(eng.lifecycle.get)
        (msg,) = posts(hook)
        assert msg["data"]["alarm_id"] == a.id and "1号井" in msg["subject"]  # type: ignore[index,operator]
        assert "%LEL" in msg["text"] and "GB/T 50493-2019" in msg["text"]  # type: ignore[operator]

        # the detector goes silent: health.stale is raised, the value alarm is suppressed by design (not notified)
        clock.now += 5 * S
        eng.on_readings([Reading("G1", "up", 0.0, clock.now)])
        by_rule = {x.rule: x for x in eng.lifecycle.open_alarms()}
        assert by_rule["gas.lel"].suppressed_by == "offline" and not by_rule["gas.lel"].notifiable
        assert by_rule["health.stale"].notifiable and by_rule["health.stale"].suppressed_by is None
        eng.on_readings([Reading("G1", "up", 1.0, clock.now + S)])
        assert eng.lifecycle.get(a.id).suppressed_by is None
        assert eng.metrics.alarm_errors == 0 and eng.metrics.alarm_transitions >= 3
    finally:
        await eng.aclose()


async def test_hazard_from_alarm_and_overdue_clock_notified_once(tmp_path: Path, hook: HttpReceiver) -> None:
    clock = Clock()
    eng = engine(tmp_path, hook, clock)
    try:
        eng.on_readings([Reading("G1", "lel", 55.0, T0)])
        (a,) = eng.lifecycle.open_alarms()
        hid = eng.propose_hazard(a, "zhang", Role.OFFICER)
        assert eng.propose_hazard(a, "zhang", Role.OFFICER) == hid  # one open hazard per alarm
        h = eng.hazards.get(hid)
        assert h["status"] == "found" and h["alarm_id"] == a.id and h["unit_name"] == "测试建设公司 项目部"
        assert h["proposed_class"] == "major" and h["proposed_article"] == "11(二)"
        basis = HazardBasis(version="2024", article="11(二)", text_zh="有限空间作业未先检测")
        eng.hazards.confirm(hid, actor="li", role=Role.MANAGER, klass="major", basis=basis)
        eng.hazards.mark_reported(hid, actor="li", role=Role.MANAGER, to="区住建局")
        plan = {"funds": 5000, "emergency_plan": "有限空间应急预案", "measures": "强制通风, 重新检测"}
        eng.hazards.assign(hid, actor="li", role=Role.MANAGER, responsible="王工", deadline=date(2026, 11, 25), **plan)
        await eng.escalation.step(eng.lifecycle.get)
        n_before = len(posts(hook))
        clock.now = T0 + 3 * 86400 * S  # Thursday: the deadline (end of Wednesday, local) has passed
        await eng.escalation.step(eng.lifecycle.get)
        overdue = [p for p in posts(hook)[n_before:] if p["data"].get("type") == "hazard_clock"]  # type: ignore[union-attr]
        assert len(overdue) == 1
        assert overdue[0]["data"]["clock"] == "rectify_deadline" and overdue[0]["data"]["hazard_id"] == hid  # type: ignore[index]
        assert "整改期限已过" in overdue[0]["subject"] and "王工" in overdue[0]["text"]  # type: ignore[operator]
        clock.now += 600 * S
        await eng.escalation.step(eng.lifecycle.get)
        assert [p for p in posts(hook)[n_before:] if p["data"].get("type") == "hazard_clock"] == overdue  # type: ignore[union-attr]
    finally:
        await eng.aclose()


async def test_restart_restores_active_levels_and_closes_orphaned_pending(tmp_path: Path, hook: HttpReceiver) -> None:
    clock = Clock()
    eng = engine(tmp_path, hook, clock)
    eng.on_readings([Reading("G1", "lel", 30.0, T0)])
    eng.lifecycle.apply(Transition("gas.h2s", "G1", "h2s", Level.NORMAL, Level.ALARM, 8.0, None, T0, "pending"))
    assert {a.rule: a.state for a in eng.lifecycle.open_alarms()} == {
        "gas.lel": AlarmState.ACTIVE_UNACKED,
        "gas.h2s": AlarmState.PENDING,
    }
    await eng.aclose()  # the process dies; a new one starts on the same state file
    clock.now += 10 * S
    again = engine(tmp_path, hook, clock)
    try:
        # the pending candidate did not survive in the evaluator: its row is closed, not left open forever
        assert {a.rule: a.state for a in again.lifecycle.open_alarms()} == {"gas.lel": AlarmState.ACTIVE_UNACKED}
        again.on_readings([Reading("G1", "lel", 31.0, clock.now)])  # still high: no second alarm, no new raise
        assert [a.rule for a in again.lifecycle.open_alarms()] == ["gas.lel"]
        assert again.metrics.alarm_transitions == 0
        again.on_readings([Reading("G1", "lel", 1.0, clock.now + S)])  # back to normal: the restored level clears
        (a,) = again.lifecycle.open_alarms()
        assert a.state is AlarmState.RTN_UNACKED
    finally:
        await again.aclose()


async def test_alarm_events_from_readings_wait_for_the_pipelines_fsync_and_an_operators_are_durable_at_once(
    tmp_path: Path, hook: HttpReceiver
) -> None:
    """An alarm raised inline in the pipeline put its InfluxDB event line in the spool with an fsync of its own,
    in the event loop before the siren (~0.3 ms, up to 5 on a busy disk); the pipeline fsyncs it with its batch
    now. Events of an operator's action are still durable when stored, at the next tick or the next batch."""
    clock = Clock()
    spool = Spool(tmp_path / "spool", max_bytes=1 << 20, segment_bytes=1 << 16, sync_interval_s=1.0)
    spool.open()
    eng = AlarmEngine(alarm_setup(tmp_path, hook), clock, event_sink=spool.append, event_write=spool.write)
    try:
        eng.on_readings([Reading("G1", "lel", 30.0, T0)])
        (a,) = eng.lifecycle.open_alarms()
        written = spool.segments[-1].path.read_bytes()
        assert written.startswith(b"alarm_events,") and b'event="raised"' in written
        assert spool.sync_due_in() is not None  # in the file, not yet fsynced: the pipeline's sync comes next
        spool.sync()
        eng.lifecycle.ack(a.id, "wang", "on my way")  # through the API: its event waits for the tick
        clock.now += S
        eng.on_readings([Reading("G1", "lel", 31.0, clock.now)])  # a batch comes first
        assert b'event="acked"' in spool.segments[-1].path.read_bytes()
        assert spool.sync_due_in() is None  # fsynced when stored
        eng.lifecycle.shelve(a.id, "wang", "sensor being replaced", 600)
        eng.tick()
        assert b'event="shelved"' in spool.segments[-1].path.read_bytes() and spool.sync_due_in() is None
    finally:
        await eng.aclose()
        spool.close()


async def test_a_batchs_alarms_and_their_first_tier_are_one_commit_before_the_siren(
    tmp_path: Path, hook: HttpReceiver
) -> None:
    """Each commit is an fsync (synchronous=FULL), in the pipeline's path: a transition was one, and the tier due at
    once another in the escalation loop before its message went out. Now the batch's changes and the tier are one
    transaction; the message goes out when the loop next runs, and two alarms raised together are one digest."""
    clock = Clock()
    eng = engine(tmp_path, hook, clock)
    commits = Commits(eng.conn)
    commits.mark_sends(eng.escalation.notifiers)  # type: ignore[arg-type]
    try:
        eng.on_readings([Reading("G1", "lel", 30.0, T0), Reading("G1", "h2s", 20.0, T0)])
        assert sorted(a.rule for a in eng.lifecycle.open_alarms()) == ["gas.h2s", "gas.lel"]
        assert commits.log == ["commit"]
        [d] = eng.escalation.deliveries()
        assert (d["status"], d["items"], d["attempts"]) == ("sending", 2, 1)  # started, not sent before the loop
        assert posts(hook) == []
        await eng.escalation.step(eng.lifecycle.get)
        # the batch; the message; its outcome (then the pass's own transaction: hazard clocks are configured)
        assert commits.log[:3] == ["commit", "send", "commit"]
        [msg] = posts(hook)
        assert len(msg["data"]["items"]) == 2  # type: ignore[index]
        assert eng.escalation.deliveries()[0]["status"] == "sent" and eng.metrics.alarm_transitions == 2
    finally:
        await eng.aclose()


async def test_a_return_to_normal_is_started_in_the_clears_own_commit(tmp_path: Path, hook: HttpReceiver) -> None:
    """The "back to normal" message to whoever heard the siren was queued with the clear and started by the loop in
    a transaction of its own: one fsync more, and a turn of the loop, before it went out (0.9 ms of the clear's
    ~4 ms in bench/alarm_latency.py). It is started in the clear's transaction now, as a tier due at once is."""
    clock = Clock()
    eng = engine(tmp_path, hook, clock)
    try:
        eng.on_readings([Reading("G1", "lel", 30.0, T0)])
        await eng.escalation.step(eng.lifecycle.get)
        assert len(posts(hook)) == 1
        commits = Commits(eng.conn)
        commits.mark_sends(eng.escalation.notifiers)  # type: ignore[arg-type]
        clock.now += S
        eng.on_readings([Reading("G1", "lel", 2.0, clock.now)])
        (a,) = eng.lifecycle.open_alarms()
        assert a.state is AlarmState.RTN_UNACKED and commits.log == ["commit"]
        follow = eng.escalation.deliveries()[0]  # newest first
        assert (follow["status"], follow["attempts"]) == ("sending", 1)  # started with the clear
        await eng.escalation.step(eng.lifecycle.get)
        assert commits.log[:3] == ["commit", "send", "commit"]  # the clear; the message; its outcome
        assert [p["data"]["event"] for p in posts(hook)] == ["raised", "cleared"]  # type: ignore[index]
    finally:
        await eng.aclose()


async def test_an_alarms_way_to_the_siren_does_not_grow_with_the_messages_sent_before(
    tmp_path: Path, hook: HttpReceiver
) -> None:
    """The escalation's tables only grow (a row per message sent). The due retries and the next retry's time were a
    scan of every delivery ever made, and a clear's follow-up one of every message sent: in the transaction before
    the siren, and in every pass of the loop. Counted in SQLite's own steps (its progress handler), not in time."""
    clock = Clock()
    eng = engine(tmp_path, hook, clock)
    steps = [0]

    def counted() -> int:
        steps[0] += 1
        return 0

    async def raise_and_clear() -> int:
        steps[0] = 0
        eng.conn.set_progress_handler(counted, 100)
        try:
            clock.now += 120 * S  # (the chatter rule counts raises within 60 s)
            eng.on_readings([Reading("G1", "lel", 30.0, clock.now)])
            await eng.escalation.step(eng.lifecycle.get)
            eng.on_readings([Reading("G1", "lel", 2.0, clock.now + S)])
            await eng.escalation.step(eng.lifecycle.get)
            eng.escalation.delivery.next_due()
        finally:
            eng.conn.set_progress_handler(None, 0)
        return steps[0]

    try:
        await raise_and_clear()  # (first statements prepared)
        before = await raise_and_clear()
        with eng.conn:  # a year of another site's messages: 20 000 sent, one failed retry waiting far ahead
            eng.conn.executemany(
                "INSERT INTO esc_deliveries(channel, group_key, recipients, key, level, subject, text, data, items,"
                " status, attempts, created_ns, next_try_ns) VALUES ('hook', 'hook|li', '[]', ?, 2, 's', 't', '{}', 1,"
                " ?, 1, 0, ?)",
                [(f"old:{i}", "sent" if i else "retry", None if i else T0 + 10**15) for i in range(20000)],
            )
            eng.conn.executemany(
                "INSERT INTO esc_outbox(alarm_id, channel, recipients, group_key, level, subject, text, data,"
                " created_ns, status) VALUES (?, 'hook', '[]', 'hook|li', 2, 's', 't', '{}', 0, 'sent')",
                [(100000 + i,) for i in range(20000)],
            )
        after = await raise_and_clear()
        assert [p["data"]["event"] for p in posts(hook)][-2:] == ["raised", "cleared"]  # type: ignore[index]
        assert after < 2 * before, (before, after)  # a scan of 20 000 rows is hundreds of thousands of steps
    finally:
        await eng.aclose()


async def test_a_batch_the_database_gives_up_whole_is_rewound_and_stored_with_the_next_reading(
    tmp_path: Path, hook: HttpReceiver
) -> None:
    """SQLite rolls back the whole transaction on some errors (disk full, I/O): none of the batch's alarms
    happened, so none is notified, none of their events is written, and the evaluator asks for all of them again."""
    clock = Clock()
    failing = {"left": 1}

    def gives_up(conn: sqlite3.Connection, ev: AlarmEvent) -> None:
        if ev.alarm.rule == "gas.h2s" and failing["left"]:
            failing["left"] -= 1
            conn.execute("ROLLBACK")  # what SQLite does itself on SQLITE_FULL
            raise sqlite3.OperationalError("database or disk is full")

    lines: list[bytes] = []
    eng = AlarmEngine(
        alarm_setup(tmp_path, hook), clock, alarm_hooks=[gives_up], event_sink=lambda b, n: lines.append(b)
    )
    try:
        eng.on_readings([Reading("G1", "lel", 30.0, T0), Reading("G1", "h2s", 20.0, T0)])
        assert eng.lifecycle.open_alarms() == [] and eng.escalation.deliveries() == [] and lines == []
        assert eng.metrics.alarm_transitions == 0 and eng.metrics.state_store_failures == 1
        assert eng.metrics.state_store_error is not None and "disk is full" in eng.metrics.state_store_error
        await eng.escalation.step(eng.lifecycle.get)
        assert posts(hook) == []

        clock.now += S
        eng.on_readings([Reading("G1", "lel", 30.5, clock.now), Reading("G1", "h2s", 20.5, clock.now)])
        assert sorted(a.rule for a in eng.lifecycle.open_alarms()) == ["gas.h2s", "gas.lel"]
        assert eng.metrics.state_store_error is None and eng.metrics.alarm_transitions == 2
        await eng.escalation.step(eng.lifecycle.get)
        [msg] = posts(hook)
        assert len(msg["data"]["items"]) == 2
        assert sum(b.count(b'event="raised"') for b in lines) == 2
    finally:
        await eng.aclose()


async def test_a_bug_while_firing_the_tiers_at_once_leaves_the_alarms_stored_and_the_loop_sends(
    tmp_path: Path, hook: HttpReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    """The alarm changes must not depend on escalation: a failure in firing the tiers with them (here, opening the
    delivery) is logged, and the escalation loop fires them as for any other due tier."""
    clock = Clock()
    eng = engine(tmp_path, hook, clock)
    real_open = eng.escalation.delivery.open
    calls = {"n": 0}

    def open_once_broken(*a: Any) -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("a bug in the escalation stage")
        return real_open(*a)

    eng.escalation.delivery.open = open_once_broken  # type: ignore[method-assign]
    try:
        eng.on_readings([Reading("G1", "lel", 30.0, T0)])
        assert [a.rule for a in eng.lifecycle.open_alarms()] == ["gas.lel"] and eng.metrics.alarm_errors == 0
        assert "tiers due at once could not be fired" in caplog.text and eng.escalation.deliveries() == []
        await eng.escalation.step(eng.lifecycle.get)
        [msg] = posts(hook)
        assert msg["data"]["rule"] == "gas.lel"  # type: ignore[index]
    finally:
        await eng.aclose()


async def test_a_bug_in_an_alarm_hook_rewinds_the_whole_batch(tmp_path: Path, hook: HttpReceiver) -> None:
    """A hook that raises rolls the batch's transaction back: none of its alarms or events happened, and the
    evaluator asks for them again (they are stored with the next reading once the hook works)."""
    clock = Clock()
    broken = {"on": True}

    def hook_bug(conn: sqlite3.Connection, ev: AlarmEvent) -> None:
        if broken["on"] and ev.alarm.rule == "gas.h2s":
            raise RuntimeError("a bug in the console's stream")

    lines: list[bytes] = []
    eng = AlarmEngine(
        alarm_setup(tmp_path, hook), clock, alarm_hooks=[hook_bug], event_sink=lambda b, n: lines.append(b)
    )
    try:
        eng.on_readings([Reading("G1", "lel", 30.0, T0), Reading("G1", "h2s", 20.0, T0)])
        assert eng.lifecycle.open_alarms() == [] and eng.metrics.alarm_errors == 1
        broken["on"] = False
        clock.now += S
        eng.on_readings([Reading("G1", "lel", 30.5, clock.now), Reading("G1", "h2s", 20.5, clock.now)])
        assert sorted(a.rule for a in eng.lifecycle.open_alarms()) == ["gas.h2s", "gas.lel"]
        assert sum(b.count(b'event="raised"') for b in lines) == 2  # no line of the rolled-back batch
    finally:
        await eng.aclose()


async def test_a_lost_clear_behind_a_cancelled_candidate_is_asked_for_again(tmp_path: Path, hook: HttpReceiver) -> None:
    """One reading can cancel an upward candidate and clear the alarm ([cancelled 2->3, confirmed 2->0]); if the
    batch is lost, the evaluator must go back to the alarm's level from the clear, or the alarm never clears."""
    rules = {
        "overrides": [
            {"rule": "gas.lel", "on_delay_s": 5, "off_delay_s": 0, "source": {"standard": "test", "confidence": "P"}}
        ]
    }
    clock = Clock()
    give_up = {"on": False}

    def gives_up(conn: sqlite3.Connection, ev: AlarmEvent) -> None:
        if give_up["on"] and ev.kind == "cleared":
            give_up["on"] = False
            conn.execute("ROLLBACK")  # what SQLite does itself on SQLITE_FULL or an I/O error
            raise sqlite3.OperationalError("database or disk is full")

    eng = AlarmEngine(alarm_setup(tmp_path, hook, rules=rules), clock, alarm_hooks=[gives_up])
    try:
        eng.on_readings([Reading("G1", "lel", 30.0, T0)])  # a candidate at 报警, waiting for its on-delay
        clock.now += 6 * S
        eng.tick()
        [a] = eng.lifecycle.open_alarms()
        assert (a.level, a.state) == (Level.ALARM, AlarmState.ACTIVE_UNACKED)
        clock.now += S
        eng.on_readings([Reading("G1", "lel", 60.0, clock.now)])  # a candidate at 危险
        clock.now += S
        give_up["on"] = True
        eng.on_readings([Reading("G1", "lel", 1.0, clock.now)])  # cancelled 2->3, cleared 2->0: the batch is lost
        assert eng.metrics.state_store_failures == 1 and eng.lifecycle.open_alarms()[0].state is a.state
        clock.now += S
        eng.on_readings([Reading("G1", "lel", 1.0, clock.now)])
        [a] = eng.lifecycle.open_alarms()
        assert a.state is AlarmState.RTN_UNACKED
    finally:
        await eng.aclose()


async def test_alarms_of_one_batch_are_one_digest_when_one_of_their_tiers_registers_a_hazard(
    tmp_path: Path, hook: HttpReceiver
) -> None:
    """A tier that registers a hazard is fired by the escalation loop: the other tiers due with it wait for it there,
    so that both go out as one digest instead of one now and the other after the group window."""
    policies = [
        {"id": "lel", "match": {"rules": ["gas.lel"]}, "tiers": [{**FIRST_TIER, "propose_hazard": True}]},
        {"id": "all", "tiers": [FIRST_TIER]},
    ]
    clock = Clock()
    eng = AlarmEngine(alarm_setup(tmp_path, hook, policies, group_window_s=60), clock)
    try:
        eng.on_readings([Reading("G1", "lel", 30.0, T0), Reading("G1", "h2s", 20.0, T0)])
        assert eng.escalation.deliveries() == []  # nothing started with the alarms
        await eng.escalation.step(eng.lifecycle.get)
        [msg] = posts(hook)
        assert len(msg["data"]["items"]) == 2  # type: ignore[index]
        lel = next(a for a in eng.lifecycle.open_alarms() if a.rule == "gas.lel")
        assert "已自动登记隐患" in msg["text"] and eng.hazards.open_for_alarm(lel.id) is not None  # type: ignore[operator]
    finally:
        await eng.aclose()


async def test_an_alarm_change_leaves_its_fsync_to_the_checkpointer_and_a_persons_does_not(
    tmp_path: Path, hook: HttpReceiver
) -> None:
    """A raise from readings is committed without its fsync while the checkpointer runs (its thread makes it beside
    the siren); an acknowledgement, a person's change, fsyncs in its commit. Seen inside each transaction."""
    seen: list[tuple[str, int]] = []

    def sync_level(conn: sqlite3.Connection, ev: AlarmEvent) -> None:
        seen.append((ev.kind, int(conn.execute("PRAGMA synchronous").fetchone()[0])))

    clock = Clock()
    eng = AlarmEngine(alarm_setup(tmp_path, hook), clock, alarm_hooks=[sync_level])
    task = asyncio.create_task(eng.checkpoints.run())
    try:
        await asyncio.sleep(0)
        eng.on_readings([Reading("G1", "lel", 30.0, T0)])
        (a,) = eng.lifecycle.open_alarms()
        for _ in range(500):
            if eng.checkpoints.syncs:
                break
            await asyncio.sleep(0.01)
        assert eng.checkpoints.syncs == 1
        eng.lifecycle.ack(a.id, "王工")
        assert [level for _, level in seen] == [1, 2] and seen[0][0] != seen[1][0]  # NORMAL (raise), FULL (ack)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await eng.aclose()
