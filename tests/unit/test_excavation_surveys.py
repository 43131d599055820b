"""A designer's 预警值 and a surveyor's daily results (GB 50497-2019 chapter 8): each level on the survey where the
monitoring plan says it is reached, the rate level cleared when the rate falls back, 报警 (never 危险) at 100 %."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from alerting.baselines import Baselines
from alerting.config import WarningValues
from alerting.db import connect
from alerting.derived import DeviceContext, WarningLimit
from alerting.evaluator import Evaluator
from alerting.overrides import RulesConfig, resolve_rules
from alerting.rules import Level, Source, default_rules
from alerting.transition import Transition
from telemetry.reading import Reading
from tests.surveys import SURVEYS  # the surveyor's daily cumulative change at point ZQT-3, mm

S = 1_000_000_000
DAY = 86400 * S
TZ = ZoneInfo("Asia/Shanghai")
T0 = int(dt.datetime(2026, 3, 2, 9, 0, tzinfo=TZ).timestamp()) * S  # the first survey, 09:00 local
Q = "horizontal_displacement"
PLAN = Source(standard="XX基坑监测方案", clause="表3 冠梁水平位移", confidence="P")  # type: ignore[arg-type]
# the designer: cumulative 预警值 30 mm, rate 预警值 3 mm/d (the pack: watch at 70 %, rate on 3 surveys in a row)
WARNING = WarningValues(cumulative=30.0, rate_per_day=3.0, source=PLAN)


def evaluator(tmp_path: Path, rules: RulesConfig | None = None) -> tuple[Evaluator, Baselines]:
    ctx = DeviceContext(
        "excavation", expected_interval_s=86400, warning_values={Q: WarningLimit.resolve(Q, WARNING, None)}
    )
    baselines = Baselines(connect(tmp_path / "state.db"), lambda: T0)
    baselines.set("ZQT-3", Q, 0.0, "surveyor", why="初始值: 3 次观测平均")
    rules_by_device = resolve_rules(default_rules(), rules, {"ZQT-3": ctx})
    return Evaluator(rules_by_device, {"ZQT-3": ctx}, baselines), baselines


def run(ev: Evaluator, surveys: list[float]) -> list[Transition]:
    out: list[Transition] = []
    for day, value in enumerate(surveys):
        ts = T0 + day * DAY
        out += ev.observe(Reading("ZQT-3", Q, value, ts), ts)  # evaluated on the survey's time
    return out


def levels(got: list[Transition], rule: str) -> list[tuple[int, int]]:
    """(new level, survey day) of the confirmed transitions of one rule."""
    return [(int(t.new), (t.at_ns - T0) // DAY) for t in got if t.rule == rule and t.phase == "confirmed"]


def test_fifteen_daily_surveys_against_the_design_values(tmp_path: Path) -> None:
    ev, _ = evaluator(tmp_path)
    got = run(ev, SURVEYS)
    # rate: 77 %, 77 %, 80 % of 3 mm/d on days 3-5: 预警 on day 5, the third survey (not a day later);
    # 3.5 mm/d on day 7: 报警; 1.5 mm/d on day 8: cleared; again 83 %, 83 %, 73 % on days 11-13; 60 % on day 14
    assert levels(got, "exc.horizontal_displacement_rate") == [(1, 5), (2, 7), (0, 8), (1, 13), (0, 14)]
    # cumulative: 21 mm (70 % of 30) on day 10: 预警; 30 mm on day 14: 报警, not 危险
    assert levels(got, "exc.horizontal_displacement") == [(1, 10), (2, 14)]
    assert Level.DANGER not in {t.new for t in got}
    alarm = next(t for t in got if t.rule == "exc.horizontal_displacement" and t.new is Level.ALARM)
    assert alarm.value == pytest.approx(100.0)
    assert alarm.threshold is not None and alarm.threshold.source.cite() == "XX基坑监测方案 表3 冠梁水平位移 [P]"
    assert "100 % of the design 预警值 30 mm: 30 mm" in (alarm.threshold.source.note or "")
    rate = next(t for t in got if t.rule == "exc.horizontal_displacement_rate" and t.new is Level.ALARM)
    assert rate.value == pytest.approx(3.5 / 3 * 100)  # % of the rate 预警值: 3.5 mm/d


def test_the_cumulative_level_does_not_clear_while_it_stays_above(tmp_path: Path) -> None:
    ev, _ = evaluator(tmp_path)
    got = run(ev, [*SURVEYS, 30.2, 30.1, 30.3])
    assert levels(got, "exc.horizontal_displacement") == [(1, 10), (2, 14)]
    assert ev.level("exc.horizontal_displacement", "ZQT-3") is Level.ALARM


def test_surveys_at_other_hours_are_day_normalised(tmp_path: Path) -> None:
    ev, _ = evaluator(tmp_path)
    out: list[Transition] = []
    # 09:00 then 21:00 the next day (1.5 d): 4.5 mm in 1.5 d is 3 mm/d, the rate 预警值 itself
    for ts, v in ((T0, 0.0), (T0 + DAY, 1.0), (T0 + DAY + DAY * 3 // 2, 5.5)):
        out += ev.observe(Reading("ZQT-3", Q, v, ts), ts)
    (t,) = [t for t in out if t.rule == "exc.horizontal_displacement_rate"]
    assert t.new is Level.ALARM and t.value == pytest.approx(100.0)


def test_the_plan_sets_its_own_fraction_and_count(tmp_path: Path) -> None:
    # "rate 预警 when above 80 % on 2 consecutive surveys" (a metro-side plan)
    plan = RulesConfig.model_validate(
        {"overrides": [{"rule": "exc.horizontal_displacement_rate", "thresholds": {1: 80}, "consecutive": {1: 2},
                        "source": PLAN.model_dump()}]}
    )  # fmt: skip
    ev, _ = evaluator(tmp_path, plan)
    got = run(ev, SURVEYS)
    # 77 % and 77 % on days 3-4 are below 80; 80 % on day 5 and 83 % on day 6: 预警 on day 6
    assert levels(got, "exc.horizontal_displacement_rate")[:1] == [(1, 6)]


def test_percent_of_h_and_the_smaller_governs() -> None:
    w = WarningValues(cumulative=30.0, cumulative_percent_h=0.2, source=PLAN)
    lim = WarningLimit.resolve(Q, w, 12.0)  # 0.2 % of 12 m = 24 mm < 30 mm
    assert lim.cumulative == pytest.approx(24.0)
    assert lim.basis == "min(30 mm, 0.2 %h x 12 m = 24 mm) = 24 mm"


def test_check_config_shows_the_whole_rule_per_device(capsys: pytest.CaptureFixture[str]) -> None:
    from pathlib import Path as P

    from gateway.cli import main

    demo = P(__file__).parents[2] / "simulators" / "sites" / "demo.yaml"
    assert main(["check-config", str(demo)]) == 0
    out = capsys.readouterr().out
    rate = out.split("  exc.horizontal_displacement_rate ", 1)[1].split("\n  exc.", 1)[0]
    assert "PIT-D01, PIT-D02: 预警 |x| ≥ 70 % on 3 readings in a row; 报警 |x| ≥ 100 %" in rate
    assert "deadband 0 %; on-delay 0 s; off-delay 0 s; window 86400 s (from the rule pack)" in rate
    assert (
        "预警 70: 演示 基坑监测方案 (demo values) 表3 冠梁水平位移 [P] (70 % of the design 预警值 3 mm/d: 2.1 mm/d;"
        in rate
    )
    assert "预警 count 3: GB 50497-2009 Table 8.0.4 note [R]" in rate
    cumulative = out.split("  exc.horizontal_displacement ", 1)[1].split("\n  exc.", 1)[0]
    assert "(70 % of the design 预警值 30 mm: 21 mm; the fraction: domain.md §2.4 practice pattern [R])" in cumulative
    assert "PIT-CX1: inactive: needs warning_values.deep_displacement.cumulative" in out


def test_an_alarm_carries_the_surveys_time_and_the_time_it_was_raised(tmp_path: Path) -> None:
    """Surveys brought in a day late: evaluated on their own times, raised at the gateway's; both are kept."""
    from alerting.alarms import Lifecycle
    from alerting.hazards import HazardConfig, Hazards
    from alerting.messages import SiteInfo, alarm_message
    from alerting.roles import Role

    ev, _ = evaluator(tmp_path)
    late = T0 + 16 * DAY  # the surveyor's report arrives the day after the last survey
    got: list[Transition] = []
    for day, value in enumerate(SURVEYS):
        got += ev.observe(Reading("ZQT-3", Q, value, T0 + day * DAY), late)
    conn = connect(tmp_path / "alarms.db")
    lc = Lifecycle(conn, default_rules(), lambda: late)
    for t in got:
        lc.apply(t)
    (a,) = [a for a in lc.open_alarms() if a.rule == "exc.horizontal_displacement"]
    assert (a.level, a.raised_ns, a.source_ns) == (Level.ALARM, late, T0 + 14 * DAY)
    site = SiteInfo("演示工地", "Asia/Shanghai", None, {"ZQT-3": "冠梁 ZQT-3"}, {"ZQT-3": "excavation"}, {})
    _subject, text, data = alarm_message(a, "raised", site)
    assert "时间: 2026-03-18 09:00:00" in text and "测量时间: 2026-03-16 09:00:00" in text
    assert (data["raised_ns"], data["source_ns"]) == (late, T0 + 14 * DAY)
    hz = Hazards(conn, lambda: late, HazardConfig())
    hid = hz.propose_from_alarm(
        actor="system", role=Role.ADMIN, unit_name="演示工地", alarm_id=a.id, device="冠梁 ZQT-3", point=Q,
        title_zh=a.title_zh, level=a.level, value=a.value, threshold=a.threshold, value_unit="%",
        provenance=a.source, hazard_basis=None, alarm_at_ns=a.raised_ns, measured_ns=a.source_ns,
    )  # fmt: skip
    assert "（测量时间 2026-03-16 09:00，报警时间 2026-03-18 09:00）" in hz.get(hid)["description"]
