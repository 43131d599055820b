"""The evaluator's older-reading guard (a reading older than a rule's newest judged one is history: it neither raises
by its own value nor clears or lowers a level; LevelState.is_history) for a rule that has never left rest on its
point, for a reading judged while its rule's gate is closed, and across a restart: the judged times go into the
evaluator's memory file, and an open alarm gives back the time of the reading behind its level. Real evaluators and
engines on their real files, with an injected clock."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from alerting.alarms import AlarmState
from alerting.derived import DeviceContext
from alerting.engine import AlarmEngine
from alerting.evaluator import Evaluator
from alerting.memory import EvaluatorMemory, memory_path
from alerting.overrides import resolve_rules
from alerting.rules import Level, default_rules
from telemetry.reading import Reading
from tests.sites import write_site

S = 1_000_000_000
T0 = int(datetime(2026, 11, 23, 2, 0, tzinfo=UTC).timestamp()) * S
EVERY_S = 60  # a confined-space gas detector reporting once a minute: its guard lasts 3 minutes
LEL = "gas.lel"  # 报警 at 25 %LEL, deadband 2


def detector() -> Evaluator:
    ctx = {"G1": DeviceContext("gas", expected_interval_s=EVERY_S)}
    return Evaluator(resolve_rules(default_rules(), None, ctx), ctx)


def lel(ev: Evaluator, value: float, ts: int, now: int | None = None) -> list[tuple[str, Level, Level, int | None]]:
    """G1's %LEL at `ts`, heard at `now` (at once by default): the LEL rule's transitions."""
    got = ev.observe(Reading("G1", "lel", value, ts), ts if now is None else now)
    return [(t.phase, t.old, t.new, t.source_ns) for t in got if t.rule == LEL]


# ---- a rule that has never left rest keeps its newest time -----------------------------------------------------------


def test_a_back_filled_reading_above_a_rule_that_never_left_rest_is_history() -> None:
    """Three readings at 3 %LEL, then one from the detector's buffer, older than the newest, at 30 %LEL: history, no
    alarm (it raised 报警, and the next live reading cleared it). The present at 30 %LEL raises it at once."""
    ev = detector()
    for i in range(3):
        assert lel(ev, 3.0, T0 + i * EVERY_S * S) == []
    assert lel(ev, 30.0, T0 + 90 * S, now=T0 + 150 * S) == []
    assert ev.level(LEL, "G1") is Level.NORMAL
    now = T0 + 180 * S
    assert lel(ev, 30.0, now) == [("confirmed", Level.NORMAL, Level.ALARM, now)]


def test_the_guard_of_a_rule_at_rest_lapses_after_three_silent_intervals_as_a_states_does() -> None:
    """Past 3 expected intervals (by the gateway's clock) after the newest reading, an older one is the present: the
    detector's clock went back (or was set right), and its readings are judged, as for a rule that left rest."""
    ev = detector()
    for i in range(3):
        lel(ev, 3.0, T0 + i * EVERY_S * S)
    heard = T0 + 2 * EVERY_S * S + 3 * EVERY_S * S + S
    assert lel(ev, 30.0, T0 + 30 * S, now=heard) == [("confirmed", Level.NORMAL, Level.ALARM, T0 + 30 * S)]


def test_a_reading_judged_while_its_gate_is_closed_is_the_newest() -> None:
    """A crane's tilt is judged idle and in calm wind only (tc.tilt_x's gate). Loaded, it reads 5 ‰ (over 4 ‰): the
    level waits for the gate, but the reading is the point's newest. Unloaded, a reading from before it (the crane's
    buffer) at 6 ‰ is history (it raised 报警 as the present); the present at 5 ‰ raises it."""
    ctx = {"TC": DeviceContext("tower_crane", expected_interval_s=10)}
    ev = Evaluator(resolve_rules(default_rules(), None, ctx), ctx)

    def tilt(value: float, ts: int, now: int) -> list[tuple[str, Level, int | None]]:
        got = ev.observe(Reading("TC", "tilt_x", value, ts), now)
        return [(t.phase, t.new, t.source_ns) for t in got if t.rule == "tc.tilt_x"]

    ev.observe_batch([Reading("TC", "load", 5.0, T0), Reading("TC", "wind_speed", 1.0, T0)], T0)
    assert tilt(5.0, T0 + 10 * S, T0 + 10 * S) == []
    ev.observe(Reading("TC", "load", 0.0, T0 + 20 * S), T0 + 20 * S)
    assert tilt(6.0, T0 + 5 * S, T0 + 20 * S) == []
    assert tilt(5.0, T0 + 30 * S, T0 + 30 * S) == [("confirmed", Level.ALARM, T0 + 30 * S)]


# ---- across a restart: the engine as the gateway builds it, stopped and started on the same files --------------------


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now


def engine(tmp_path: Path, clock: Clock) -> AlarmEngine:
    cfg = write_site(
        tmp_path / "site.yaml",
        influx_port=18086,
        mqtt_port=1883,
        devices=[{"id": "G1", "profile": "gas_4in1_mqtt_v1", "broker": "b", "topic": "g/+", "expected_interval_s": 60}],
    )
    return AlarmEngine(cfg.alarm_setup(), clock)


def read(eng: AlarmEngine, clock: Clock, value: float, ts: int, now: int | None = None) -> None:
    clock.now = ts if now is None else now
    eng.on_readings([Reading("G1", "lel", value, ts)])


def lel_alarm(eng: AlarmEngine) -> AlarmState | None:
    return next((a.state for a in eng.lifecycle.open_alarms() if a.rule == LEL), None)


async def test_after_a_restart_a_back_filled_reading_above_its_threshold_raises_nothing(tmp_path: Path) -> None:
    """Readings at 3 %LEL, a clean stop, a start 30 s later: a reading from before the stop at 30 %LEL (the
    detector's buffer, a message the broker delivers again) is history, as without the stop (the evaluator started
    with no newest time and raised 报警 on it). The present at 30 %LEL raises it."""
    clock = Clock()
    eng = engine(tmp_path, clock)
    read(eng, clock, 3.0, T0)
    read(eng, clock, 3.0, T0 + 60 * S)
    await eng.aclose()
    clock.now = T0 + 90 * S
    again = engine(tmp_path, clock)
    try:
        read(again, clock, 30.0, T0 + 30 * S, now=T0 + 90 * S)
        assert lel_alarm(again) is None and again.metrics.alarm_transitions == 0
        read(again, clock, 30.0, T0 + 120 * S)
        assert lel_alarm(again) is AlarmState.ACTIVE_UNACKED
    finally:
        await again.aclose()


async def test_after_a_restart_an_older_reading_does_not_clear_an_open_alarm(tmp_path: Path) -> None:
    """报警 at 30 %LEL, 28 at the next reading (within the deadband: held), a clean stop; after the start a reading
    from before the stop at 1 %LEL is history: 报警 holds (the restored level started with no newest time and the
    old reading cleared it). The present at 1 %LEL clears it."""
    clock = Clock()
    eng = engine(tmp_path, clock)
    read(eng, clock, 30.0, T0)
    read(eng, clock, 28.0, T0 + 60 * S)
    assert lel_alarm(eng) is AlarmState.ACTIVE_UNACKED
    await eng.aclose()
    clock.now = T0 + 90 * S
    again = engine(tmp_path, clock)
    try:
        read(again, clock, 1.0, T0 + 30 * S, now=T0 + 90 * S)
        assert lel_alarm(again) is AlarmState.ACTIVE_UNACKED
        read(again, clock, 1.0, T0 + 120 * S)
        assert lel_alarm(again) is AlarmState.RTN_UNACKED
    finally:
        await again.aclose()


async def test_after_a_kill_the_open_alarm_gives_back_the_time_of_the_reading_behind_its_level(
    tmp_path: Path,
) -> None:
    """The memory saved at 3 %LEL (T0), then 报警 at 30 %LEL (T0 + 60 s), stored in the alarm database at once, and
    a `kill -9` before the memory's next save. After the start, a reading between the two (T0 + 30 s) at 1 %LEL is
    older than the one behind 报警: history, the level holds (judged from the memory's T0, it cleared 报警)."""
    clock = Clock()
    eng = engine(tmp_path, clock)
    read(eng, clock, 3.0, T0)
    assert eng.memory.save()
    read(eng, clock, 30.0, T0 + 60 * S)
    assert lel_alarm(eng) is AlarmState.ACTIVE_UNACKED
    eng.memory.close()  # killed: no last save
    eng.conn.close()
    clock.now = T0 + 90 * S
    again = engine(tmp_path, clock)
    try:
        read(again, clock, 1.0, T0 + 30 * S, now=T0 + 90 * S)
        assert lel_alarm(again) is AlarmState.ACTIVE_UNACKED
    finally:
        await again.aclose()


# ---- what the memory file keeps of them --------------------------------------------------------------------------


def _data(path: Path) -> dict[str, object]:
    (text,) = sqlite3.connect(path).execute("SELECT data FROM memory").fetchone()
    return dict(json.loads(text))


async def test_judged_times_alone_make_no_periodic_save_and_a_clean_stop_writes_them(tmp_path: Path) -> None:
    """A gas detector's %LEL has no window: its newest judged time, moving with every reading, does not make the file
    be written every `memory_s` (a crane site's would be, whole, for nothing else); it goes with the next save that
    writes anything, and with a clean stop's."""
    ev = detector()
    memory = EvaluatorMemory(ev, memory_path(tmp_path / "state.db"), 0.01)
    lel(ev, 3.0, T0)
    assert memory.save()
    lel(ev, 3.0, T0 + 60 * S, now=T0 + 61 * S)
    task = asyncio.create_task(memory.run())
    await asyncio.sleep(0.1)  # ten periods
    task.cancel()
    assert memory.saves == 1 and _data(memory.path)["rest"] == [["G1", T0, {"lel": T0}]]
    memory.stop()
    assert memory.saves == 2 and _data(memory.path)["rest"] == [["G1", T0 + 61 * S, {"lel": T0 + 60 * S}]]


def test_a_memory_saved_without_judged_times_loads_whole_with_them_unknown(tmp_path: Path) -> None:
    """The release before wrote no `judged` or `rest`: its file loads as it did (windows, days, counts), not set
    aside, the judged times unknown; and that release reads this one's file, ignoring the two keys (same format)."""
    ev = detector()
    path = memory_path(tmp_path / "state.db")
    for i in range(3):
        lel(ev, 3.0, T0 + i * EVERY_S * S)
        ev.observe(Reading("G1", "co", 5.0, T0 + i * EVERY_S * S), T0 + i * EVERY_S * S)  # (a TWA window: samples)
    EvaluatorMemory(ev, path, 60).save()
    assert {"judged", "rest"} <= set(_data(path))
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE memory SET data = json_remove(data, '$.judged', '$.rest')")
    fresh = detector()
    memory = EvaluatorMemory(fresh, path, 60)
    memory.load()
    assert memory.loaded.startswith("2 windows (6 samples)") and "0 judged times" in memory.loaded, memory.loaded
    assert fresh.states.judged_times(fresh.devices) == {} and fresh.states.rest == {} and path.exists()
    assert lel(fresh, 30.0, T0 + 90 * S, now=T0 + 150 * S) == [("confirmed", Level.NORMAL, Level.ALARM, T0 + 90 * S)]
    memory.close()


def test_judged_times_are_saved_for_points_reported_every_minute_or_less_often(tmp_path: Path) -> None:
    """A point reporting every few seconds (a crane, a gas detector in the open) has its guard lapse within 3 of its
    intervals, before a gateway is back: its judged times are not saved. 24 000 of them (2 000 cranes) made each
    save's JSON 2 MB and the gateway's RSS 3 MB more, past the 100 MB target (measured by bench --only memory)."""
    ctx = {
        "G1": DeviceContext("gas", expected_interval_s=EVERY_S),
        "G2": DeviceContext("gas", expected_interval_s=5.0),
    }
    ev = Evaluator(resolve_rules(default_rules(), None, ctx), ctx)
    for dev in ("G1", "G2"):
        ev.observe(Reading(dev, "lel", 3.0, T0), T0)  # at rest: the point's newest judged time
        ev.observe(Reading(dev, "lel", 30.0, T0 + S), T0 + S)  # raised: the rule's state has it
    path = memory_path(tmp_path / "state.db")
    EvaluatorMemory(ev, path, 60).save()
    data = _data(path)
    assert {d for _r, d, *_ in data["judged"]} == {"G1"}
    assert {d for d, *_ in data["rest"]} <= {"G1"}
