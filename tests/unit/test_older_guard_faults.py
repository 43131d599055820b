"""The older-reading guard under faults: a clock set back, a silent point, a kill -9 after a level change, bad files."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

import alerting.binding
from alerting.alarms import AlarmState
from alerting.derived import DeviceContext
from alerting.evaluator import Evaluator
from alerting.memory import EvaluatorMemory, memory_path
from alerting.overrides import resolve_rules
from alerting.rules import Level, default_rules
from telemetry.reading import Quality, Reading
from tests.unit.test_older_readings import LEL, T0, Clock, engine, lel_alarm, read

S = 1_000_000_000
MIN = 60 * S


def detector(every_s: float = 60) -> Evaluator:
    ctx = {"G1": DeviceContext("gas", expected_interval_s=every_s)}
    return Evaluator(resolve_rules(default_rules(), None, ctx), ctx)


def raised(ev: Evaluator, quantity: str, value: float, ts: int, now: int, rule: str = LEL) -> list[Level]:
    return [
        t.new for t in ev.observe(Reading("G1", quantity, value, ts), now) if t.rule == rule and t.phase == "confirmed"
    ]


# ---- A. the gateway's clock set back: the guard never lapses (is_history has no lower bound) -------------------------


def test_gateway_clock_set_back_does_not_silence_a_gateway_stamped_detector_at_rest() -> None:
    """A Modbus gas detector with no register clock (honeywell_midas_modbus_v1): every poll is stamped with the
    gateway's time. The gateway ran 1 h ahead; NTP steps it back. The detector then reads 30 %LEL on every poll for
    10 minutes: live readings, yet each is older than the newest judged and `now - judged_at` is negative, so
    LevelState.is_history holds for the whole hour. At 76ce9ad (no newest time for a rule at rest) 报警 came at
    once; at HEAD it does not come within 10 minutes (not within the README's 3 expected intervals either)."""
    ev = detector()
    for i in range(5):
        t = T0 + i * MIN
        raised(ev, "lel", 3.0, t, t)
    back = T0 + 5 * MIN - 3600 * S  # the gateway's clock after the step, and the poll's stamp
    got: list[Level] = []
    for i in range(10):
        t = back + i * MIN
        got += raised(ev, "lel", 30.0, t, t)
    assert Level.ALARM in got, "10 minutes at 30 %LEL after an NTP step back: no 报警"


def test_after_a_restart_with_the_gateway_clock_behind_the_memory_live_readings_raise(tmp_path: Path) -> None:
    """The same across a restart: the memory keeps judged_at in the gateway's time. After a power cut the gateway
    boots with its clock 30 min behind (fake-hwclock's last save, no NTP yet); a gateway-stamped detector's 30 %LEL
    is history for 30 min + 3 intervals. Before 887afda the restart started with no judged times: 报警 at once."""
    path = memory_path(tmp_path / "state.db")
    first = detector()
    for i in range(5):
        t = T0 + i * MIN
        raised(first, "lel", 3.0, t, t)
        first.observe(Reading("G1", "co", 5.0, t), t)
    assert EvaluatorMemory(first, path, 60).save()
    second = detector()
    memory = EvaluatorMemory(second, path, 60)
    memory.load()
    boot = T0 + 5 * MIN - 30 * MIN
    got: list[Level] = []
    for i in range(10):
        t = boot + i * MIN
        got += raised(second, "lel", 30.0, t, t)
    memory.close()
    assert Level.ALARM in got, "10 minutes at 30 %LEL after a restart with the gateway's clock behind: no 报警"


# ---- B. `rest_at` is per device, not per point: another point keeps a point's guard from lapsing -------------------


def _co_warms_up_then_clock_steps_back(ev: Evaluator) -> list[tuple[int, Level]]:
    """lel and co at 60 s; the co cell is replaced (NOT_READY while it warms up, 40 min) while lel reads 3 %LEL;
    then the detector's clock is stepped back 30 min (NTP). lel's readings are older than its newest (T0+39 min)
    until the device clock passes it (gateway minute 69); co's, valid again, are newer than co's newest (T0) and
    move the device's `rest_at` every minute. At gateway minute 55 (lel's own guard lapsed at minute 42) lel goes
    to 30 %LEL. (minute, level) of the lel rule's confirmed transitions."""
    got: list[tuple[int, Level]] = []
    for i in range(40):
        t = T0 + i * MIN
        raised(ev, "lel", 3.0, t, t)
        ev.observe(Reading("G1", "co", 0.0, t, Quality.GOOD if i == 0 else Quality.NOT_READY), t)
    for i in range(40, 62):
        heard = T0 + i * MIN
        ts = heard - 30 * MIN
        ev.observe(Reading("G1", "co", 2.0, ts), heard)  # (the message's co first)
        got += [(i, lv) for lv in raised(ev, "lel", 3.0 if i < 55 else 30.0, ts, heard)]
    return got


def test_a_points_guard_lapses_three_intervals_after_its_own_newest_not_the_devices() -> None:
    """lel's newest came at T0+39 min: by the README its guard lapses 3 intervals later (minute 42), and the
    30 %LEL read from minute 55 raises 报警 at once. At HEAD the state made for lel at minute 55 inherits
    `rest_at["G1"]`, which co's reading moved a moment before: 4 more minutes of 30 %LEL before 报警 (minute 59)."""
    got = _co_warms_up_then_clock_steps_back(detector())
    assert got[:1] == [(55, Level.ALARM)], f"(minute, level) raised: {got}"


def test_the_quiet_path_and_stepping_agree_when_the_guard_lapses() -> None:
    """The commit's own invariant (test_evaluator_quiet.py) with an expected interval set, which the property test
    never sets (its DeviceContexts have none, so the guard never lapses there): stepping every reading raises 报警 at
    minute 55, the quiet path at minute 59."""
    fast = detector()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(alerting.binding, "quiet_limit", lambda rule, thresholds: None)
        full = detector()
    assert _co_warms_up_then_clock_steps_back(fast) == _co_warms_up_then_clock_steps_back(full)


# ---- D. the engine's restore gives judged_at = raised_ns (the first raise), older than the memory's -----------------


@pytest.mark.parametrize("late_s", [590, 630])
async def test_after_a_kill_a_level_raised_long_ago_then_raised_again_is_not_lowered_by_an_older_reading(
    tmp_path: Path, late_s: int
) -> None:
    """报警 at 30 %LEL from T0 (the row's raised_ns), the memory saved at T0+600 s, 危险 at 55 %LEL at T0+660 s
    (level_up: source_ns moves, raised_ns does not), kill -9, start at T0+700 s. A buffered 30 %LEL reading from
    T0+590 s (older than the memory's newest, T0+600 s) or T0+630 s (older than the 危险 reading) is history: 危险
    holds. At HEAD `restore` sets judged_at_ns to raised_ns (T0), 700 s before the start: the guard has lapsed and the
    old reading lowers 危险 to 报警. With 590 s the restore even undoes the memory's guard (judged_at T0+600 s)."""
    clock = Clock()
    eng = engine(tmp_path, clock)
    for i in range(11):
        read(eng, clock, 30.0, T0 + i * MIN)
    assert eng.memory.save()
    read(eng, clock, 55.0, T0 + 660 * S)
    assert eng.evaluator.level(LEL, "G1") is Level.DANGER
    eng.memory.close()  # killed: no last save
    eng.conn.close()
    clock.now = T0 + 700 * S
    again = engine(tmp_path, clock)
    try:
        read(again, clock, 30.0, T0 + late_s * S, now=T0 + 700 * S)
        assert again.evaluator.level(LEL, "G1") is Level.DANGER, "an older reading lowered 危险 after the restart"
        assert lel_alarm(again) is AlarmState.ACTIVE_UNACKED
    finally:
        await again.aclose()


# ---- B'. the memory: a corrupt judged/rest entry is not set aside, it stops the start -----------------------------


@pytest.mark.parametrize(
    "patch",
    [
        lambda d: d.__setitem__("judged", [["gas.lel", "G1", "lel", float("inf"), 0, 0.0]]),  # OverflowError
        lambda d: d.__setitem__("rest", [["G1", 0, [["lel", 1]]]]),  # AttributeError: 'list' has no items
    ],
)
def test_a_corrupt_judged_time_sets_the_memory_aside_rather_than_failing_the_start(tmp_path: Path, patch) -> None:
    """load() promises: a file that cannot be read is set aside and the evaluator starts empty. A judged time of
    Infinity (JSON allows it; 1e400 reads as it) raises OverflowError, a malformed `rest` AttributeError: neither
    is in load()'s except, so AlarmEngine.__init__ raises and the gateway does not start."""
    ev = detector()
    path = memory_path(tmp_path / "state.db")
    raised(ev, "lel", 3.0, T0, T0)
    assert EvaluatorMemory(ev, path, 60).save()
    with sqlite3.connect(path) as conn:
        (text,) = conn.execute("SELECT data FROM memory").fetchone()
        data = json.loads(text)
        patch(data)
        conn.execute("UPDATE memory SET data = ?", (json.dumps(data),))
    memory = EvaluatorMemory(detector(), path, 60)
    memory.load()  # must not raise
    assert memory.loaded.startswith("unreadable")
