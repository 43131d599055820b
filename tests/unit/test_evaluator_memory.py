"""What the evaluator remembers survives a restart (alerting/memory.py): a surveyor's counts in a row, a survey
rate's previous reading, an automated gauge's 24 h window, a gas detector's TWA. Each test runs the same data
through one evaluator without a stop and through two with a stop between, and asks for the same alarms; the
evaluator started without the memory (the tree before) gets them wrong, which the control cases show."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from alerting.baselines import Baselines
from alerting.db import connect
from alerting.derived import DeviceContext, WarningLimit
from alerting.evaluator import Evaluator
from alerting.memory import EvaluatorMemory, memory_path
from alerting.overrides import resolve_rules
from alerting.rules import Level, default_rules
from alerting.transition import Transition
from telemetry.reading import Reading
from tests.surveys import SURVEYS
from tests.unit.test_excavation_surveys import DAY, T0, WARNING, Q, levels

S = 1_000_000_000
HOUR = 3600 * S
RATE = "exc.horizontal_displacement_rate"


def evaluator(tmp_path: Path, interval_s: float = 86400) -> Evaluator:
    """ZQT-3 against the designer's 预警值 (30 mm, 3 mm/d), its baseline set; the same state file each time."""
    ctx = DeviceContext(
        "excavation", expected_interval_s=interval_s, warning_values={Q: WarningLimit.resolve(Q, WARNING, None)}
    )
    baselines = Baselines(connect(tmp_path / "state.db"), lambda: T0)
    if baselines.get("ZQT-3", Q) is None:
        baselines.set("ZQT-3", Q, 0.0, "surveyor", why="初始值")
    return Evaluator(resolve_rules(default_rules(), None, {"ZQT-3": ctx}), {"ZQT-3": ctx}, baselines)


def feed(ev: Evaluator, series: list[tuple[int, float]]) -> list[Transition]:
    out: list[Transition] = []
    for ts, value in series:
        out += ev.observe(Reading("ZQT-3", Q, value, ts), ts)
    return out


def restarted(
    tmp_path: Path, series: list[tuple[int, float]], stop_after: int, interval_s: float = 86400
) -> list[Transition]:
    """The series through an evaluator saved after `stop_after` readings, then through a new one loaded from it."""
    path = memory_path(tmp_path / "state.db")
    first = evaluator(tmp_path, interval_s)
    got = feed(first, series[:stop_after])
    assert EvaluatorMemory(first, path, 60).save()
    second = evaluator(tmp_path, interval_s)
    memory = EvaluatorMemory(second, path, 60)
    memory.load()
    for t in got:  # the open alarms' levels, as the engine gives them back from the alarm database
        if t.phase == "confirmed":
            second.restore(t.rule, t.device, t.quantity, t.new)
    got += feed(second, series[stop_after:])
    memory.close()
    return got


SURVEY_SERIES = [(T0 + day * DAY, value) for day, value in enumerate(SURVEYS)]


@pytest.mark.parametrize("stop_after", [4, 5, 12])
def test_a_restart_between_surveys_changes_no_level(tmp_path: Path, stop_after: int) -> None:
    """Stopped after the rate's first or second day above 70 % (days 3, 4; days 11, 12): the 报警 of three days in a
    row still comes on the third (days 5 and 13), as without a stop: the days are kept (`daily` in the memory).
    Started empty, the first survey after the start has no day before it to give a rate."""
    whole = feed(evaluator(tmp_path / "whole"), SURVEY_SERIES)
    (tmp_path / "stopped").mkdir()
    assert levels(restarted(tmp_path / "stopped", SURVEY_SERIES, stop_after), RATE) == levels(whole, RATE)
    assert levels(whole, RATE) == [(1, 3), (2, 5), (0, 8), (1, 11), (2, 13), (0, 14)]


def test_control_an_evaluator_started_empty_misses_the_third_day(tmp_path: Path) -> None:
    """Without the memory, the stop after day 4 loses the two days above 70 % before day 5 and the rate."""
    first = evaluator(tmp_path)
    got = feed(first, SURVEY_SERIES[:5])
    got += feed(evaluator(tmp_path), SURVEY_SERIES[5:])
    assert (2, 5) not in levels(got, RATE)


TEN_MIN = 600 * S


def gauge(hours: int, mm_per_day: float, start_ns: int = T0) -> list[tuple[int, float]]:
    """An automated gauge read every 10 minutes (too close together for a survey rate), moving steadily."""
    return [(start_ns + i * TEN_MIN, i * mm_per_day / 144) for i in range(6 * hours)]


def test_an_automated_gauge_s_rate_is_not_blind_after_a_restart(tmp_path: Path) -> None:
    """A 24 h rate needs 12 h of readings: stopped after 11 h of 3.6 mm/d (120 % of 3 mm/d), 报警 comes after
    12 h of readings counted across the stop, as without one; started empty it came 12 h after the start."""
    series = gauge(30, 3.6)
    whole = feed(evaluator(tmp_path / "whole", 600), series)
    (tmp_path / "stopped").mkdir()
    got = restarted(tmp_path / "stopped", series, 66, 600)
    assert hours_raised(got) == hours_raised(whole) == [(2, 12)]
    (tmp_path / "empty").mkdir()
    control = feed(evaluator(tmp_path / "empty", 600), series[:66])
    control += feed(evaluator(tmp_path / "empty", 600), series[66:])
    assert hours_raised(control) == [(2, 23)]


def hours_raised(got: list[Transition]) -> list[tuple[int, int]]:
    return [(int(t.new), (t.at_ns - T0) // HOUR) for t in got if t.rule == RATE and t.phase == "confirmed"]


def test_a_stop_with_the_rate_s_alarm_open_changes_no_level(tmp_path: Path) -> None:
    """Stopped at 20 h with 报警 open, the gauge slowing to 1.8 mm/d from then: 报警 falls to 预警 at 29 h and
    clears at 37 h as the 24 h slope comes down, as without a stop. Started empty, the slope of the new readings
    alone (60 %) cleared 报警 at 32 h, with no 预警 between."""
    series = gauge(20, 3.6)
    slower = gauge(40, 0, series[-1][0])[1:]
    series += [(ts, series[-1][1] + (i + 1) * 1.8 / 144) for i, (ts, _) in enumerate(slower)]
    whole = feed(evaluator(tmp_path / "whole", 600), series)
    (tmp_path / "stopped").mkdir()
    got = restarted(tmp_path / "stopped", series, 120, 600)
    assert hours_raised(got) == hours_raised(whole) == [(2, 12), (1, 29), (0, 37)]
    (tmp_path / "empty").mkdir()
    control = feed(evaluator(tmp_path / "empty", 600), series[:120])
    second = evaluator(tmp_path / "empty", 600)
    second.restore(RATE, "ZQT-3", Q, control[-1].new)
    assert hours_raised(control + feed(second, series[120:])) == [(2, 12), (0, 32)]


def test_saves_write_only_the_new_samples_and_drop_those_that_left_the_window(tmp_path: Path) -> None:
    path = memory_path(tmp_path / "state.db")
    ev = evaluator(tmp_path, 600)
    memory = EvaluatorMemory(ev, path, 60)
    feed(ev, gauge(10, 1.0))
    assert memory.save()
    assert not memory.save()  # nothing changed
    feed(ev, gauge(40, 1.0)[60:])  # 40 h: the 24 h window keeps the last 145 (the one in force at its start too)
    assert memory.save()
    rows = sqlite3.connect(path).execute("SELECT ts FROM samples ORDER BY ts").fetchall()
    assert [ts for (ts,) in rows] == [ts for ts, _ in gauge(40, 1.0)[-145:]]
    memory.close()


def tampered(tmp_path: Path, series: list[tuple[int, float]], sql: str, interval_s: float = 86400) -> EvaluatorMemory:
    """A memory saved after `series`, then changed by `sql` as another run or release could leave it; not loaded."""
    path = memory_path(tmp_path / "state.db")
    ev = evaluator(tmp_path, interval_s)
    feed(ev, series)
    EvaluatorMemory(ev, path, 60).save()
    with sqlite3.connect(path) as conn:
        conn.execute(sql)
    return EvaluatorMemory(evaluator(tmp_path, interval_s), path, 60)


def test_an_unreadable_memory_is_set_aside_said_and_the_evaluator_starts_empty(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    memory = tampered(tmp_path, SURVEY_SERIES[:5], "UPDATE memory SET data = '{\"daily\": 5}'")
    path, fresh = memory.path, memory.evaluator
    with caplog.at_level(logging.ERROR, "sitegw.alarms"):
        memory.load()
    assert "unreadable (TypeError" in memory.loaded and "set aside as state.memory.db.unreadable-" in memory.loaded
    assert any(str(path) in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)
    assert len(list(tmp_path.glob("state.memory.db.unreadable-*[0-9]"))) == 1 and not path.exists()
    assert fresh.states.runs() == {}
    feed(fresh, SURVEY_SERIES[5:7])
    assert memory.save() and path.exists()  # a new memory begins
    memory.close()


def test_a_memory_of_another_format_is_not_misread(tmp_path: Path) -> None:
    memory = tampered(tmp_path, SURVEY_SERIES[:5], "UPDATE memory SET format = 2")
    memory.load()
    assert "format 2; this release reads format 1" in memory.loaded
    memory.close()


def test_a_device_no_longer_configured_is_left_out_and_its_samples_deleted(tmp_path: Path) -> None:
    memory = tampered(tmp_path, gauge(1, 1.0), "UPDATE samples SET device = 'GONE-1'", 600)
    memory.load()
    assert memory.loaded.startswith("0 windows (0 samples)")  # read, not given to the evaluator
    assert memory.evaluator.measures.saved({}).windows == []
    assert sqlite3.connect(memory.path).execute("SELECT count(*) FROM samples").fetchone() == (0,)
    memory.close()


@pytest.mark.parametrize("stop", [False, True])
def test_a_survey_heard_twice_is_counted_once(tmp_path: Path, stop: bool) -> None:
    """QoS 1 delivers at least once: day 4's result again (after a restart, the broker's redelivery of a message
    whose acknowledgement the kill cut off) is not a third day in a row; the 报警 waits for day 5's, on day 5."""
    again = [*SURVEY_SERIES[:5], SURVEY_SERIES[4], *SURVEY_SERIES[5:]]
    got = restarted(tmp_path, again, 5) if stop else feed(evaluator(tmp_path), again)
    assert levels(got, RATE) == [(1, 3), (2, 5), (0, 8), (1, 11), (2, 13), (0, 14)]


def test_a_window_whose_span_no_rule_asks_for_is_left_out_and_deleted(tmp_path: Path) -> None:
    """A rule's window_s changed between runs: the old span's samples are neither loaded nor kept in the file."""
    memory = tampered(tmp_path, gauge(2, 1.0), "UPDATE samples SET span = 43200", 600)
    memory.load()
    assert memory.evaluator.measures.saved({}).windows == []
    assert sqlite3.connect(memory.path).execute("SELECT count(*) FROM samples").fetchone() == (0,)
    memory.close()


async def test_a_stop_during_a_periodic_save_writes_no_sample_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stop cancels the saving task while its thread is on its way to write (a slow SD card); the stop saves
    everything first, and the thread's write, after it, writes nothing and opens nothing. Before, the same samples
    were written twice, and the restarted evaluator's 24 h slope weighed them twice."""
    ev = evaluator(tmp_path, 600)
    memory = EvaluatorMemory(ev, memory_path(tmp_path / "state.db"), 0.01)
    feed(ev, gauge(10, 3.6))
    writing = asyncio.Event()
    loop = asyncio.get_running_loop()
    write = EvaluatorMemory._write

    def slow(self: EvaluatorMemory, snap: Any) -> None:  # (in the worker thread)
        loop.call_soon_threadsafe(writing.set)
        time.sleep(0.2)
        try:
            write(self, snap)
        finally:
            written.set()

    written = threading.Event()

    monkeypatch.setattr(EvaluatorMemory, "_write", slow)
    task = asyncio.create_task(memory.run())
    await writing.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    feed(ev, gauge(11, 3.6)[60:])  # an hour more while the thread still writes
    memory.stop()
    assert written.wait(5)  # the thread's write came after the stop's
    rows = sqlite3.connect(memory.path).execute("SELECT ts FROM samples ORDER BY ts").fetchall()
    assert [ts for (ts,) in rows] == [ts for ts, _ in gauge(11, 3.6)]
    assert memory._conn is None  # (it opened nothing after the stop closed the file)


def test_the_time_of_the_last_survey_counted_is_kept_when_its_count_is_back_to_zero(tmp_path: Path) -> None:
    """Two surveys at 70 % of the rate, then one below (its count back to 0), then a stop: a survey older than the
    last counted one that arrives after the start is not counted, as without a stop."""
    late = SURVEY_SERIES[2][0] + DAY // 2
    series = [*SURVEY_SERIES[:4], (late, 4.0), *SURVEY_SERIES[4:9]]
    whole = feed(evaluator(tmp_path / "whole"), series)
    (tmp_path / "stopped").mkdir()
    assert levels(restarted(tmp_path / "stopped", series, 4), RATE) == levels(whole, RATE)


def test_a_late_survey_that_completes_a_run_right_after_a_restart_raises_at_once(tmp_path: Path) -> None:
    """Surveys at 80 % of the rate from day 2, day 3's sent after day 4's (test_excavation_runs.py), and a stop
    between the two. As without the stop, day 3's completes days 2, 3 and 4 above 70 %: 报警 at once, judged as of
    day 4's survey (its time, its value), the newest judged time being kept in the memory. The restarted evaluator
    knew no newest survey: the late one was neither the present (no rate of its own) nor history, and 报警 waited
    for day 5's survey."""
    path = memory_path(tmp_path / "state.db")
    first = evaluator(tmp_path)
    got = feed(first, [(T0 + d * DAY, v) for d, v in ((0, 0.0), (1, 1.0), (2, 3.4), (4, 8.2))])
    assert EvaluatorMemory(first, path, 60).save()
    second = evaluator(tmp_path)
    memory = EvaluatorMemory(second, path, 60)
    memory.load()
    for t in got:  # (the levels alone, as the engine gave them back before the readings' times)
        if t.phase == "confirmed":
            second.restore(t.rule, t.device, t.quantity, t.new)
    assert second.level(RATE, "ZQT-3") is Level.PREWARNING
    heard = T0 + 4 * DAY + 2 * HOUR
    late = [t for t in second.observe(Reading("ZQT-3", Q, 5.8, T0 + 3 * DAY), heard) if t.rule == RATE]
    assert [(t.phase, t.old, t.new, t.at_ns, t.source_ns, t.value) for t in late] == [
        ("confirmed", Level.PREWARNING, Level.ALARM, heard, T0 + 4 * DAY, 80.0)
    ]
    memory.close()
