"""Days of automated excavation gauge data (a reading every 10 min, with noise) through the evaluator in ms."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest
import yaml

from alerting.baselines import Baselines
from alerting.config import WarningValues
from alerting.db import connect
from alerting.derived import DeviceContext, WarningLimit
from alerting.evaluator import Evaluator
from alerting.overrides import RulesConfig, resolve_rules
from alerting.rules import Confidence, Level, Source, default_rules
from alerting.transition import Transition
from telemetry.reading import Reading

S = 1_000_000_000
DAY = 86400 * S
STEP = 600 * S  # an automated gauge reading every 10 min
T0 = int(dt.datetime(2025, 6, 1, tzinfo=ZoneInfo("Asia/Shanghai")).timestamp()) * S  # local midnight, day 0
Q = "horizontal_displacement"

# the project's monitoring plan: 预警值 30 mm cumulative and 3 mm/d (the pack: watch from 70 %, 报警 at 100 % and for a
# rate above 70 % on 3 days in a row); a 2 % deadband on the cumulative level; frozen after 6 identical samples
PLAN = Source(standard="XX基坑监测方案", clause="表3", confidence=Confidence.PRIMARY)
WARNING = WarningLimit.resolve(Q, WarningValues(cumulative=30.0, rate_per_day=3.0, source=PLAN), None)
PROJECT = RulesConfig.model_validate(
    yaml.safe_load(
        """
overrides:
  - rule: exc.horizontal_displacement
    deadband: 2
    source: {standard: "XX基坑监测方案", clause: "表3", confidence: P}
  - rule: exc.horizontal_displacement_frozen
    thresholds: {2: 6}
    source: {standard: "XX基坑监测方案", clause: "自动化监测 数据异常", confidence: P}
"""
    )
)


class Site:
    """One excavation point on an evaluator with a baseline store on a temp SQLite file and a fake clock."""

    def __init__(self, db: Path) -> None:
        self.now = T0
        self.baselines = Baselines(connect(db), lambda: self.now)
        devices = {"P1": DeviceContext("excavation", expected_interval_s=600, warning_values={Q: WARNING})}
        self.ev = Evaluator(resolve_rules(default_rules(), PROJECT, devices), devices, self.baselines)
        self.got: list[Transition] = []

    def run(self, days: float, value: Callable[[float], float], start_day: float = 0.0) -> None:
        """Readings from start_day for `days`; value(t in days since T0) in mm."""
        for i in range(int(days * DAY / STEP)):
            self.now = T0 + int(start_day * DAY) + i * STEP
            t = (self.now - T0) / DAY
            self.got += self.ev.observe(Reading("P1", Q, value(t), self.now), self.now)

    def of(self, rule: str) -> list[tuple[int, float]]:
        """(new level, days since T0) of the confirmed transitions of one rule."""
        return [(int(t.new), (t.at_ns - T0) / DAY) for t in self.got if t.rule == rule and t.phase == "confirmed"]


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    yield Site(tmp_path / "state.db")


def noise(sigma: float, seed: int) -> Callable[[float], float]:
    rng = np.random.default_rng(seed)
    cache: dict[float, float] = {}
    return lambda t: cache.setdefault(t, float(rng.normal(0.0, sigma)))


def test_cumulative_crosses_the_watch_level(site: Site) -> None:
    n = noise(0.05, 1)
    offset = 100.0  # the gauge's raw reading at installation
    site.baselines.set("P1", Q, offset, "surveyor", why="初始值, 3 次测量平均")
    site.run(13, lambda t: offset + 1.8 * t + n(t))  # 1.8 mm/d: 60 %, below the rate watch
    # 21 mm (70 % of 30) at 21 / 1.8 = 11.7 days; once, the deadband keeps noise from chattering
    ((level, day),) = site.of("exc.horizontal_displacement")
    assert level == 1 and 11.6 < day < 11.75
    (t,) = [t for t in site.got if t.rule == "exc.horizontal_displacement"]
    assert t.value == pytest.approx(70.0, abs=0.7)
    assert t.threshold is not None and t.threshold.source.cite() == "XX基坑监测方案 表3 [P]"
    assert site.of("exc.horizontal_displacement_rate") == []
    assert site.of("exc.horizontal_displacement_frozen") == []


def test_a_rate_above_seventy_percent_is_watched_while_it_lasts(site: Site) -> None:
    n = noise(0.02, 2)
    # 2.2 mm/d (73 %) on days 1 and 2 only, quiet from day 3: the 24 h slope crosses 70 % during day 1, and the
    # watch clears once the day's rate has fallen back, not days later; two days above 70 % are not three (no 报警)
    site.run(6, lambda t: 50.0 + 2.2 * min(max(0.0, t - 1.0), 2.0) + n(t))
    (up, up_day), (down, down_day) = site.of("exc.horizontal_displacement_rate")
    assert (up, down) == (1, 0)
    assert 1.8 < up_day < 2.05 and 3.0 < down_day < 3.4
    (t,) = [t for t in site.got if t.rule == "exc.horizontal_displacement_rate" and t.new == 1]
    assert 70.0 <= t.value < 80.0  # % of the 3 mm/d rate 预警值
    # no baseline was set for this point: the cumulative rule stays silent however far it moved
    assert site.of("exc.horizontal_displacement") == []


def test_a_rate_above_seventy_percent_on_three_days_alarms_on_the_third(site: Site) -> None:
    n = noise(0.02, 7)
    # 2.4 mm/d (80 %) from day 1 to day 5, quiet after. 预警 during day 1 (the 24 h slope past 70 %); 报警 once
    # day 3 is over, on the first reading after midnight (GB 50497-2009's note: three days in a row; a gauge's
    # day is judged whole); held all of day 4 and day 5, whose slope falls back: cleared once day 5 is over
    site.run(8, lambda t: 50.0 + 2.4 * min(max(0.0, t - 1.0), 4.0) + n(t))
    ((watch, watch_day), (alarm, alarm_day), (clear, clear_day)) = site.of("exc.horizontal_displacement_rate")
    assert (watch, alarm, clear) == (1, 2, 0)
    assert 1.5 < watch_day < 2.0 and (alarm_day, clear_day) == (4.0, 6.0)
    (t,) = [t for t in site.got if t.rule == "exc.horizontal_displacement_rate" and t.new == 2]
    assert t.threshold is not None and t.threshold.value == pytest.approx(70.0)  # the run's limit, not 100 %
    assert (
        70.0 < t.value < 100.0
        and t.threshold.source.cite() == "GB 50497-2009 Table 8.0.4 note, 3 days in a row > 70 % [R]"
    )


def test_a_real_rate_alarms_and_clears(site: Site) -> None:
    n = noise(0.02, 4)
    # 4 mm/d from day 2 to day 3, quiet otherwise: the 24 h slope crosses 3 mm/d (100 %) during the movement
    site.run(6, lambda t: 50.0 + 4.0 * min(max(0.0, t - 2.0), 1.0) + n(t))
    got = site.of("exc.horizontal_displacement_rate")
    assert max(level for level, _ in got) == 2 and got[-1][0] == 0
    (alarm_day,) = [day for level, day in got if level == 2]
    assert 2.5 < alarm_day < 3.0 and 3.0 < got[-1][1] < 4.0


def test_quiet_series_raises_nothing(site: Site) -> None:
    n = noise(0.1, 5)
    site.baselines.set("P1", Q, 12.0, "surveyor")
    site.run(12, lambda t: 12.0 + n(t))
    assert site.got == []


def test_no_baseline_no_cumulative_alarm_until_one_is_set(site: Site) -> None:
    n = noise(0.05, 6)
    site.run(3, lambda t: 125.0 + n(t))  # 125 mm raw: far above 30, but raw is not cumulative
    assert site.got == []
    site.baselines.set("P1", Q, 100.0, "surveyor", why="初始值 from the survey before excavation")
    site.run(1, lambda t: 125.0 + n(t), start_day=3)
    ((level, day),) = site.of("exc.horizontal_displacement")
    assert (level, day) == (1, 3.0)  # the first reading after the baseline: 25 mm = 83 %, 预警 (below 报警 at 30)
    assert site.ev.level("exc.horizontal_displacement", "P1") is Level.PREWARNING


def test_frozen_gauge_after_six_identical_samples(site: Site) -> None:
    n = noise(0.05, 7)
    site.run(1, lambda t: 10.0 + n(t) if t < 0.5 else 10.0)
    ((level, day),) = site.of("exc.horizontal_displacement_frozen")
    assert level == 2 and day == pytest.approx(0.5 + 5 * STEP / DAY)  # the sixth identical reading
