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


def evaluator(
    tmp_path: Path, rules: RulesConfig | None = None, day_starts: dt.time | None = None
) -> tuple[Evaluator, Baselines]:
    """ZQT-3 surveyed daily; its survey day from `day_starts` when given (else calendar days, the default)."""
    starts = {} if day_starts is None else {"survey_day_starts": day_starts}
    ctx = DeviceContext(
        "excavation", expected_interval_s=86400, warning_values={Q: WarningLimit.resolve(Q, WARNING, None)}, **starts
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
    # rate, % of 3 mm/d per day: 33, 50, 77, 77, 80, 83, 117, 50, 67, 67, 83, 83, 73, 60 on days 1-14.
    # 77 % on day 3: 预警; above 70 % on days 3, 4 and 5: 报警 on day 5, the third survey (GB 50497-2009's table
    # note: as reaching the 预警值), held through 83 % and 117 %; 50 % on day 8: cleared; 83 % on day 11: 预警;
    # 83, 83, 73 % on days 11-13: 报警 on day 13; 60 % on day 14: cleared
    assert levels(got, "exc.horizontal_displacement_rate") == [(1, 3), (2, 5), (0, 8), (1, 11), (2, 13), (0, 14)]
    # cumulative: 21 mm (70 % of 30) on day 10: 预警; 30 mm on day 14: 报警, not 危险
    assert levels(got, "exc.horizontal_displacement") == [(1, 10), (2, 14)]
    assert Level.DANGER not in {t.new for t in got}
    alarm = next(t for t in got if t.rule == "exc.horizontal_displacement" and t.new is Level.ALARM)
    assert alarm.value == pytest.approx(100.0)
    assert alarm.threshold is not None and alarm.threshold.source.cite() == "XX基坑监测方案 表3 冠梁水平位移 [P]"
    assert "100 % of the design 预警值 30 mm: 30 mm" in (alarm.threshold.source.note or "")
    rate = next(t for t in got if t.rule == "exc.horizontal_displacement_rate" and t.new is Level.ALARM)
    assert rate.value == pytest.approx(2.4 / 3 * 100)  # % of the rate 预警值: 2.4 mm/d on day 5
    assert rate.threshold is not None and rate.threshold.value == pytest.approx(70.0)  # above it 3 days in a row
    assert rate.threshold.source.cite() == "GB 50497-2009 Table 8.0.4 note, 3 days in a row > 70 % [R]"
    assert (rate.threshold.source.note or "").startswith(
        "70 % = 2.1 mm/d: 70 % of the 报警 threshold 100 % (XX基坑监测方案 表3 冠梁水平位移 [P]); 70 % on 3"
    )


def test_seventy_percent_exactly_is_not_above_it(tmp_path: Path) -> None:
    """ "Exceeds 70 %" (GB 50497-2009's note): three days at 70 % exactly raise 预警 (watch from 70 %), not 报警;
    a plan that says "reaches" sets `inclusive: true` and gets 报警 on the third. 2.1 mm/d is 70 % of 3 mm/d
    although 6.3 - 4.2 is 2.0999999999999996 in binary and 0.7 x 3 is 2.0999999999999996 too."""
    surveys = [0.0, 2.1, 4.2, 6.3, 8.4]
    got = run(evaluator(tmp_path / "a")[0], surveys)
    assert levels(got, "exc.horizontal_displacement_rate") == [(1, 1)]
    plan = RulesConfig.model_validate(
        {"overrides": [{"rule": "exc.horizontal_displacement_rate", "source": PLAN.model_dump(),
                        "consecutive_days": {"days": 3, "fraction": 0.7, "inclusive": True}}]}
    )  # fmt: skip
    (tmp_path / "b").mkdir()
    got = run(evaluator(tmp_path / "b", plan)[0], surveys)
    assert levels(got, "exc.horizontal_displacement_rate") == [(1, 1), (2, 3)]


def test_a_survey_at_the_rate_warning_value_reaches_it(tmp_path: Path) -> None:
    """3.6 then 6.6 mm: 3 mm/d, the rate 预警值 itself (§8.0.8: reaching it warns), though 6.6 - 3.6 is
    2.9999999999999996 in binary."""
    assert 6.6 - 3.6 < 3.0  # the premise
    got = run(evaluator(tmp_path)[0], [0.0, 0.5, 1.3, 3.6, 6.6])  # 17, 27, 77, 100 % of 3 mm/d
    assert levels(got, "exc.horizontal_displacement_rate") == [(1, 3), (2, 4)]


def test_a_day_without_a_survey_breaks_the_run(tmp_path: Path) -> None:
    """Days 3 and 5 are above 70 % with day 4 missing: two days with data, not three in a row; day 6 makes days 5
    and 6 (and the 2-day span before them counts for day 5 alone): still no three."""
    ev, _ = evaluator(tmp_path)
    out: list[Transition] = []
    for day, value in ((0, 0.0), (1, 1.0), (2, 2.0), (3, 4.4), (5, 9.2), (6, 11.6)):
        ts = T0 + day * DAY
        out += ev.observe(Reading("ZQT-3", Q, value, ts), ts)
    # rates: day 3 2.4 (80 %), day 5 (9.2 - 4.4) / 2 = 2.4 (80 %), day 6 2.4 (80 %): 预警 only
    assert levels(out, "exc.horizontal_displacement_rate") == [(1, 3)]
    ts = T0 + 7 * DAY  # day 7 at 80 % too: days 5, 6 and 7 in a row
    out = ev.observe(Reading("ZQT-3", Q, 14.0, ts), ts)
    assert [(int(t.new), t.phase) for t in out if t.rule == "exc.horizontal_displacement_rate"] == [(2, "confirmed")]


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
    # a metro-side plan: "rate 预警 when above 80 % on 2 consecutive surveys; 报警 at the rate 预警值 on 2
    # consecutive days" (project plans use 2 days, domain.md §2.3 [S])
    plan = RulesConfig.model_validate(
        {"overrides": [{"rule": "exc.horizontal_displacement_rate", "thresholds": {1: 80}, "consecutive": {1: 2},
                        "consecutive_days": {"days": 2, "fraction": 1.0, "inclusive": True},
                        "source": PLAN.model_dump()}]}
    )  # fmt: skip
    ev, _ = evaluator(tmp_path, plan)
    got = run(ev, SURVEYS)
    # 77 % and 77 % on days 3-4 are below 80; 80 % on day 5 and 83 % on day 6: 预警 on day 6; 117 % on day 7 is
    # one day at the 预警值, not two: 报警 at once all the same (§8.0.8: reaching it); 50 % on day 8: cleared
    assert levels(got, "exc.horizontal_displacement_rate")[:3] == [(1, 6), (2, 7), (0, 8)]
    ths = [t.threshold for t in got if t.rule == "exc.horizontal_displacement_rate" and t.new is Level.ALARM]
    assert ths[0] is not None and ths[0].value == 100.0  # the 预警值 itself, not the 2-day run (7 is one day)
    ctx = DeviceContext("excavation", warning_values={Q: WarningLimit.resolve(Q, WARNING, None)})
    rule = next(
        r
        for r in resolve_rules(default_rules(), plan, {"ZQT-3": ctx})["ZQT-3"]
        if r.id == "exc.horizontal_displacement_rate"
    )
    assert rule.consecutive_days is not None and rule.consecutive_days.source is not None
    assert rule.consecutive_days.source.cite() == "XX基坑监测方案 表3 冠梁水平位移 [P]"  # the override's source


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
    assert "PIT-D01, PIT-D02: 预警 |x| ≥ 70 %; 报警 |x| ≥ 100 %; 报警 also |x| > 70 % on 3 days in a row" in rate
    assert "deadband 0 %; on-delay 0 s; off-delay 0 s; window 86400 s (from the rule pack)" in rate
    assert (
        "预警 70: 演示 基坑监测方案 (demo values) 表3 冠梁水平位移 [P] (70 % of the design 预警值 3 mm/d: 2.1 mm/d;"
        in rate
    )
    assert (
        "报警 3 days: GB 50497-2009 Table 8.0.4 note, 3 days in a row > 70 % [R] (70 % = 2.1 mm/d: 70 % of the 报警"
        in rate
    )
    assert "count" not in rate
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
