"""The excavation rate's run of days (报警 above 70 % on 3 days in a row) on gauges and surveys as they really come."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import pytest

from alerting.alarms import Lifecycle
from alerting.db import connect
from alerting.evaluator import Evaluator
from alerting.messages import SiteInfo, alarm_message
from alerting.overrides import RulesConfig
from alerting.rules import Level, default_rules
from alerting.transition import Transition
from telemetry.reading import Reading
from tests.surveys import SURVEYS
from tests.unit.test_excavation_days import DAY as GDAY
from tests.unit.test_excavation_days import T0 as G0
from tests.unit.test_excavation_days import Site
from tests.unit.test_excavation_surveys import DAY, PLAN, T0, Q, evaluator, levels, run

S = 1_000_000_000
H = 3600 * S
RATE = "exc.horizontal_displacement_rate"


def _feed(ev: Evaluator, surveys: list[tuple[int, float]], now: int | None = None) -> list[Transition]:
    """Surveys (time, cumulative mm) of ZQT-3, each evaluated at its own time (or at `now`)."""
    out: list[Transition] = []
    for ts, v in surveys:
        out += ev.observe(Reading("ZQT-3", Q, v, ts), ts if now is None else now)
    return out


def _confirmed(got: list[Transition]) -> list[tuple[int, int, float, float]]:
    """(old, new, value, days since the first survey) of the rate rule's confirmed transitions."""
    return [
        (int(t.old), int(t.new), round(t.value, 1), round((t.at_ns - T0) / DAY, 3))
        for t in got
        if t.rule == RATE and t.phase == "confirmed"
    ]


def _rate(got: list[Transition]) -> list[tuple[int, int, float]]:
    """(old, new, days since the gauge's T0) of the confirmed transitions of the rate rule."""
    return [(int(t.old), int(t.new), (t.at_ns - G0) / GDAY) for t in got if t.rule == RATE and t.phase == "confirmed"]


# ---- automated gauges: a day is judged once it is over --------------------------------------------------------------


def test_gauge_run_alarm_does_not_flap_on_each_reading_late_on_the_third_day(tmp_path: Path) -> None:
    """A gauge every 10 min moving a steady 2.25 mm/d (75 % of 3 mm/d) from day 1, with ±0.1 mm of reading noise
    (alternate readings). Each whole day's rate is exactly 75 %: above 70 % on days 1, 2 and 3, so 报警 once day 3 is
    over, once. (Judging the day's change so far on each reading raised and dropped it on every other reading from
    ~22:30 on day 3, a review.)"""
    site = Site(tmp_path / "state.db")
    site.run(5, lambda t: 50.0 + 2.25 * max(0.0, t - 1.0) + (0.1 if round(t * 144) % 2 else -0.1))
    got = _rate(site.got)
    raises = [d for old, new, d in got if new == 2]
    drops = [d for old, new, d in got if old == 2]
    assert len(raises) == 1, f"报警 raised {len(raises)} times, dropped at days {[round(d, 3) for d in drops]}"


def test_gauge_run_alarm_is_not_cleared_at_midnight_while_every_day_is_above_70_percent(tmp_path: Path) -> None:
    """A gauge moving 2.4 mm/d (80 %) from day 1 with a 0.2 mm daily (thermal) swing: every day's change, last
    value to last value, is exactly 2.4 mm, 80 %, every day. 报警 is due once day 3 is over and holds while the days
    stay above 70 %. (Holding it after midnight only while the 24 h slope, which the swing moves by ±13 %, was above
    70 % cleared it every night and raised it again at ~02:30, a review.)"""
    site = Site(tmp_path / "state.db")
    site.run(8, lambda t: 50.0 + 2.4 * max(0.0, t - 1.0) + 0.2 * math.sin(2 * math.pi * t))
    got = _rate(site.got)
    raises = [round(d, 3) for old, new, d in got if new == 2]
    cleared_at_midnight = [round(d, 3) for old, new, d in got if old == 2 and abs(d - round(d)) < 1e-9]
    assert cleared_at_midnight == [] and len(raises) == 1, f"报警 raised at {raises}, cleared at {cleared_at_midnight}"


# ---- surveys: a day's rate per day of the time between surveys -------------------------------------------------------


def test_surveys_at_varying_hours_each_at_80_percent_make_a_run(tmp_path: Path) -> None:
    """A point moving a steady 0.1 mm/h (2.4 mm/d, 80 %), surveyed at 17:00, 17:00, 08:00 (next morning) and 17:00
    on days 0-3. Every survey's day-normalised rate (domain.md §2.4: Δvalue / Δdays) is 80 %: three days in a row
    above 70 %, 报警 on day 3's survey. (A day's rate divided by calendar days, not the time between the surveys,
    made day 2 (15 h) 50 % and day 3 (33 h) 110 %: 报警 only on day 5.)"""
    ev, _ = evaluator(tmp_path)
    t0 = T0 + 8 * H  # 17:00 on day 0
    times = [t0, t0 + DAY, t0 + DAY + 15 * H, t0 + 3 * DAY, t0 + 4 * DAY, t0 + 5 * DAY]
    got = _feed(ev, [(ts, 0.1 * (ts - t0) / H) for ts in times])
    rate = [t for t in got if t.rule == RATE and t.phase == "confirmed"]
    assert all(t.value == 80.0 for t in rate)  # (each survey's own rate: 80 %)
    alarm = [(t.at_ns - t0) // DAY for t in rate if t.new is Level.ALARM]
    assert alarm[:1] == [3]


def test_surveys_at_60_percent_raise_no_alarm_whatever_their_hour(tmp_path: Path) -> None:
    """A steady 1.8 mm/d (60 %: below even 预警), surveyed at 00:30, 05:00, 10:00 and 15:00 on days 0-3. Every
    survey's rate is 60 %. (Each 28-29 h interval counted as one calendar day, 71-72 %, raised 报警 on day 3 with a
    value of 60 % under its own 70 % limit.)"""
    ev, _ = evaluator(tmp_path)
    start = T0 - 8 * H - 30 * 60 * 1_000_000_000  # 00:30 on day 0
    times = [start, start + DAY + 4 * H + H // 2, start + 2 * DAY + 9 * H + H // 2, start + 3 * DAY + 14 * H + H // 2]
    got = _feed(ev, [(ts, 1.8 * (ts - start) / DAY) for ts in times])
    assert [(int(t.new), t.value) for t in got if t.rule == RATE and t.phase == "confirmed"] == []


# ---- the run's limit to 9 places, as the rates ----------------------------------------------------------------------


def test_the_runs_limit_is_compared_to_nine_places_too(tmp_path: Path) -> None:
    """A plan: 报警 when the rate reaches 55 % of its 预警值 on 3 days in a row (inclusive). 1.65 mm/d is 55 % of 3
    mm/d, and 0.55 x 100 is 55.00000000000001 in binary: the limit is rounded to 9 places as the rates are, so the
    three days at 55 % are at it."""
    plan = RulesConfig.model_validate(
        {"overrides": [{"rule": RATE, "source": PLAN.model_dump(),
                        "consecutive_days": {"days": 3, "fraction": 0.55, "inclusive": True}}]}
    )  # fmt: skip
    got = run(evaluator(tmp_path, plan)[0], [0.0, 1.65, 3.3, 4.95])
    assert levels(got, RATE) == [(2, 3)]


# ---- what the run's alarm says ------------------------------------------------------------------------------------


def _run_alarm(tmp_path: Path) -> tuple[Transition, str, str]:
    ev, _ = evaluator(tmp_path)
    got = run(ev, [0.0, 1.0, 2.5, 4.8, 7.1, 9.5])  # 77, 77, 80 % on days 3-5: 报警 on day 5 by the run
    (t,) = [t for t in got if t.rule == RATE and t.new is Level.ALARM]
    lc = Lifecycle(connect(tmp_path / "alarms.db"), default_rules(), lambda: T0 + 5 * DAY)
    for x in got:
        lc.apply(x)
    (a,) = [a for a in lc.open_alarms() if a.rule == RATE]
    site = SiteInfo("演示工地", "Asia/Shanghai", None, {"ZQT-3": "冠梁 ZQT-3"}, {"ZQT-3": "excavation"}, {RATE: "%"})
    return t, a.source, alarm_message(a, "raised", site)[1]


def test_the_run_alarm_tells_its_reader_it_is_a_run_of_days(tmp_path: Path) -> None:
    """What travels with the alarm (its stored source and the message) is the cite: 报警 at 阈值 70 % says why, '依据:
    GB 50497-2009 表 8.0.4 注, 连续 3 天 > 70 %'."""
    _t, source, text = _run_alarm(tmp_path)
    assert source == "GB 50497-2009 Table 8.0.4 note, 3 days in a row > 70 % [R]"
    assert "依据: GB 50497-2009 表 8.0.4 注, 连续 3 天 > 70 %" in text, text


def test_the_run_alarm_cites_the_plan_and_its_limit_in_mm_per_day(tmp_path: Path) -> None:
    """The run's limit is 70 % of the plan's rate 预警值 (XX基坑监测方案 表3: 3 mm/d), 2.1 mm/d: the cited threshold's
    note gives both, as every other excavation threshold does."""
    t, _source, _text = _run_alarm(tmp_path)
    assert t.threshold is not None
    note = t.threshold.source.note or ""
    assert "XX基坑监测方案" in note and "2.1 mm/d" in note, note


# ---- a point's days end by its configuration (expected_interval_s), not by how full its window is -----------------


def test_twice_daily_surveys_keep_the_run_alarm_while_every_day_is_above_70_percent(tmp_path: Path) -> None:
    """GB 50497-2019 §7.0.4 (domain.md §2.5): once data reach the 预警值 the surveyor surveys more often, here at
    ~08:00 and 17:00. The point moves a steady 0.1 mm/h (2.4 mm/d, 80 %) on every survey and every day. A morning
    survey finds 2 readings in its 24 h window, an evening one 3: judged by its window, the point switched between
    days ending today and yesterday, and 报警 raised by the third day's morning survey was dropped by its evening
    survey (a review). A point reported daily (expected_interval_s 86400) is surveyed: its days end today."""
    ev, _ = evaluator(tmp_path)
    t0 = T0 - 1 * H  # 08:00 on day 0
    times = []
    for d in range(6):
        times += [t0 + d * DAY + d * 5 * 60 * S, t0 + d * DAY + 9 * H]  # 08:00 (+5 min a day), 17:00
    got: list[Transition] = []
    for ts in times:
        got += ev.observe(Reading("ZQT-3", Q, 0.1 * (ts - t0) / H, ts), ts)
    rate = _confirmed(got)
    assert all(v == 80.0 for _o, _n, v, _d in rate)
    dropped = [(o, n, d) for o, n, _v, d in rate if o == 2]
    assert dropped == [], f"报警 dropped while every day is at 80 %: {rate}"


def test_a_survey_delivered_twice_does_not_clear_the_run_alarm(tmp_path: Path) -> None:
    """Daily surveys at 09:00 moving 2.4 mm/d (80 %): 报警 on day 3's survey (three days above 70 %). The same
    survey delivered again a minute later (an MQTT QoS 1 redelivery: the pipeline evaluates before the spool's
    fsync and has the message delivered again when it fails; a broker after a reconnect or restart) is a third
    sample in the 24 h window; judged by its window, 报警 was cleared by a copy of the very reading that raised it
    (a review)."""
    ev, _ = evaluator(tmp_path)
    got = run(ev, [0.0, 2.4, 4.8, 7.2])
    assert ev.level(RATE, "ZQT-3") is Level.ALARM
    again = T0 + 3 * DAY
    got += ev.observe(Reading("ZQT-3", Q, 7.2, again), again + 60 * S)
    assert ev.level(RATE, "ZQT-3") is Level.ALARM, _confirmed(got)


def test_a_gauge_back_from_a_day_long_outage_does_not_re_raise_a_run_it_cleared(tmp_path: Path) -> None:
    """A gauge every 10 min moving 2.4 mm/d (80 %) from day 1 until day 4.5, then still. 报警 once day 3 is over.
    It goes silent at 04:48 on day 4 and comes back at 07:12 on day 5 (26 h). Judged by its window, its first
    reading back (too few in the window) judged today and cleared 报警, and twelve hours later, the slope back,
    raised it again on a still point (a review). A gauge's days end yesterday whatever its window holds."""
    site = Site(tmp_path / "state.db")
    f = lambda t: 50.0 + 2.4 * min(max(0.0, t - 1.0), 3.5)  # noqa: E731
    site.run(4.2, f)
    site.run(2.5, f, start_day=5.3)
    got = [(int(t.old), int(t.new), round(t.value, 1), round((t.at_ns - G0) / GDAY, 3))
           for t in site.got if t.rule == RATE and t.phase == "confirmed"]  # fmt: skip
    raises = [x for x in got if x[1] == 2]
    assert len(raises) == 1, f"报警 raised {len(raises)} times: {got}"


# ---- the value a run's 报警 shows ------------------------------------------------------------------------------


def test_a_gauge_run_alarm_does_not_show_a_value_below_its_threshold(tmp_path: Path) -> None:
    """A gauge moving 2.4 mm/d (80 %) from day 1 with a 0.2 mm daily (thermal) swing: every day's change is 80 %,
    and 报警 comes at day 4's midnight, when the 24 h slope is 67.5 %: the alarm shows the weakest day of its run,
    not a value under the threshold it cites ('数值: 67.5 %    阈值: 70 %', a review)."""
    site = Site(tmp_path / "state.db")
    site.run(6, lambda t: 50.0 + 2.4 * max(0.0, t - 1.0) + 0.2 * math.sin(2 * math.pi * t))
    (t,) = [t for t in site.got if t.rule == RATE and t.phase == "confirmed" and t.new is Level.ALARM]
    assert t.threshold is not None and t.threshold.value is not None
    assert abs(t.value) > t.threshold.value, (
        f"报警 at {t.value:.1f} %, its threshold {t.threshold.value:g} % ({t.threshold.source.cite()})"
    )


# ---- the time a run's 报警 is dated ----------------------------------------------------------------------------


def test_the_run_alarm_level_up_message_gives_the_time_of_the_alarm(tmp_path: Path) -> None:
    """Daily surveys (heard at once): 预警 on day 3 (03-05), 报警 by the run on day 5 (03-07 09:00). The 报警升级
    message gives the level-up's time, then the first raise's; it gave the 预警's alone and '测量时间: 2026-03-07
    09:00:00 (报警时间见上)', two days after the time it pointed to (a review)."""
    ev, _ = evaluator(tmp_path)
    got = run(ev, [0.0, 1.0, 2.5, 4.8, 7.1, 9.5])
    clock = [T0]
    lc = Lifecycle(connect(tmp_path / "alarms.db"), default_rules(), lambda: clock[0])
    ups = []
    for x in got:
        clock[0] = x.at_ns
        ups += [e for e in lc.apply(x) if e.kind == "level_up" and e.alarm.rule == RATE]
    (e,) = ups
    site = SiteInfo("演示工地", "Asia/Shanghai", None, {"ZQT-3": "冠梁 ZQT-3"}, {"ZQT-3": "excavation"}, {RATE: "%"})
    _subject, text, _data = alarm_message(e.alarm, "level_up", site, at_ns=e.at_ns)
    assert "时间: 2026-03-07 09:00:00\n首次报警时间: 2026-03-05 09:00:00" in text and "报警时间见上" not in text, text


def test_check_config_says_a_plans_own_run_comes_from_its_overrides() -> None:
    """`sitegw check-config` names where a rule's tuning comes from: a plan's run of days is the site's."""
    from alerting.derived import DeviceContext, WarningLimit
    from alerting.overrides import resolve_rules
    from gateway.rule_view import rule_plan
    from tests.unit.test_excavation_surveys import WARNING

    ctx = {"ZQT-3": DeviceContext("excavation", warning_values={Q: WarningLimit.resolve(Q, WARNING, None)})}
    plan = RulesConfig.model_validate(
        {"overrides": [{"rule": RATE, "source": PLAN.model_dump(), "consecutive_days": {"days": 3, "fraction": 0.5}}]}
    )
    for cfg, origin in ((None, "the rule pack"), (plan, "the site's rules.overrides")):
        lines = rule_plan(resolve_rules(default_rules(), cfg, ctx), ctx)
        rate = "\n".join(lines[lines.index(next(x for x in lines if x.startswith(f"  {RATE} "))) :][:4])
        assert f"window 86400 s (from {origin})" in rate, rate
    assert "报警 also |x| > 50 % on 3 days in a row" in rate


# ---- a late survey (older than the newest judged) that completes a run --------------------------------------------

CITE = "GB 50497-2009 Table 8.0.4 note, 3 days in a row > 70 % [R]"


def test_a_late_survey_that_completes_a_run_raises_its_alarm_at_once(tmp_path: Path) -> None:
    """Daily surveys moving 2.4 mm/d (80 %) from day 2; day 3's survey arrives after day 4's (the surveyor's report
    sent late). Before it, day 4's rate (against day 2, over 2 days: 80 %) is one day of a run, day 3 having no data:
    预警. With it, days 2, 3 and 4 are above 70 %: 报警 at once, citing the run, judged as of the newest survey (day
    4: its value, its time), not from the late survey's own value. (The late survey went into the days but was not
    judged: 报警 came only with day 5's survey, if that one still held the run; a known issue.)"""
    ev, _ = evaluator(tmp_path)
    _feed(ev, [(T0 + d * DAY, v) for d, v in ((0, 0.0), (1, 1.0), (2, 3.4), (4, 8.2))])
    assert ev.level(RATE, "ZQT-3") is Level.PREWARNING
    heard = T0 + 4 * DAY + 2 * H
    late = ev.observe(Reading("ZQT-3", Q, 5.8, T0 + 3 * DAY), heard)
    (t,) = [t for t in late if t.rule == RATE]
    assert (t.phase, t.old, t.new, t.at_ns, t.source_ns) == (
        "confirmed",
        Level.PREWARNING,
        Level.ALARM,
        heard,
        T0 + 4 * DAY,
    )
    assert t.value == 80.0 and t.threshold is not None and t.threshold.source.cite() == CITE
    assert ev.level(RATE, "ZQT-3") is Level.ALARM
    # heard again (a QoS 1 redelivery): nothing more
    assert [t for t in ev.observe(Reading("ZQT-3", Q, 5.8, T0 + 3 * DAY), heard + 60 * S) if t.rule == RATE] == []
    assert ev.level(RATE, "ZQT-3") is Level.ALARM


def test_a_late_survey_never_raises_from_its_own_value(tmp_path: Path) -> None:
    """Day 3's survey, late, at 9.0 mm: its own rate against day 2 is 187 % (报警 at 100 % if it were the present),
    but it is history; as the days now stand day 4's rate is -27 %, no run: nothing changes."""
    ev, _ = evaluator(tmp_path)
    _feed(ev, [(T0 + d * DAY, v) for d, v in ((0, 0.0), (1, 1.0), (2, 3.4), (4, 8.2))])
    late = ev.observe(Reading("ZQT-3", Q, 9.0, T0 + 3 * DAY), T0 + 4 * DAY + 2 * H)
    assert [t for t in late if t.rule == RATE] == []
    assert ev.level(RATE, "ZQT-3") is Level.PREWARNING


def test_a_late_survey_that_breaks_a_run_does_not_lower_its_alarm(tmp_path: Path) -> None:
    """报警 by the run of days 5, 6 and 7 (day 5's rate against day 3, over 2 days); day 4's survey, late, makes day
    5's rate 0 %: the run as the days now stand is broken, but an older survey never clears or lowers a level."""
    ev, _ = evaluator(tmp_path)
    days = ((0, 0.0), (1, 1.0), (2, 2.0), (3, 4.4), (5, 9.2), (6, 11.6), (7, 14.0))
    _feed(ev, [(T0 + d * DAY, v) for d, v in days])
    assert ev.level(RATE, "ZQT-3") is Level.ALARM
    late = ev.observe(Reading("ZQT-3", Q, 9.2, T0 + 4 * DAY), T0 + 7 * DAY + 2 * H)
    assert [t for t in late if t.rule == RATE] == []
    assert ev.level(RATE, "ZQT-3") is Level.ALARM


def test_a_gauge_s_late_reading_that_completes_a_run_raises_its_alarm_at_once(tmp_path: Path) -> None:
    """A gauge every 10 min moving 2.4 mm/d (80 %) from day 1, silent through day 3; its first reading of day 4 is
    judged on days 1-3 (a gauge's days end yesterday), day 3 without data: no run. A reading of day 3 from its buffer
    then arrives (older than the newest): days 1, 2 and 3 are above 70 %, 报警 at once, judged as of the day-4
    reading, not only with the next one."""
    site = Site(tmp_path / "state.db")
    f = lambda t: 50.0 + 2.4 * max(0.0, t - 1.0)  # noqa: E731
    site.run(3, f)
    now = G0 + 4 * GDAY
    site.got += site.ev.observe(Reading("P1", Q, f(4.0), now), now)
    assert site.ev.level(RATE, "P1") is Level.PREWARNING
    late = site.ev.observe(Reading("P1", Q, f(3.5), G0 + int(3.5 * GDAY)), now + 60 * S)
    (t,) = [t for t in late if t.rule == RATE]
    assert (t.phase, t.new, t.source_ns) == ("confirmed", Level.ALARM, now)
    assert t.threshold is not None and t.threshold.source.cite() == CITE and t.value > 70.0


def test_a_late_survey_that_completes_a_run_keeps_its_alarm_against_a_pending_lowering(tmp_path: Path) -> None:
    """A plan with a 12 h off-delay on the rate rule. 报警 by the run of days 2, 3 and 4 (80 % each). Day 5's survey
    is sent late; day 6's (80 % over 2 days) breaks the run (day 5 without data): the level is to go down to 预警
    after 12 h. Day 5's survey then arrives: as the days now stand at day 6, days 4, 5 and 6 are above 70 %, the
    run holds. With no off-delay the same surveys leave 报警 (lowered by day 6, raised again by the late day 5); with
    one, the lowering the late survey contradicts is confirmed at the tick, and day 7's survey raises 报警 again."""
    plan = RulesConfig.model_validate(
        {"overrides": [{"rule": RATE, "source": PLAN.model_dump(), "off_delay_s": 43200}]}
    )
    ev, _ = evaluator(tmp_path, plan)
    _feed(ev, [(T0 + d * DAY, v) for d, v in ((0, 0.0), (1, 1.0), (2, 3.4), (3, 5.8), (4, 8.2), (6, 13.0))])
    assert ev.level(RATE, "ZQT-3") is Level.ALARM  # (lowering to 预警 waits for its off-delay)
    heard = T0 + 6 * DAY + 2 * H
    ev.observe(Reading("ZQT-3", Q, 10.6, T0 + 5 * DAY), heard)
    got = ev.tick(T0 + 6 * DAY + 13 * H)
    assert [(t.old, t.new) for t in got if t.rule == RATE] == []
    assert ev.level(RATE, "ZQT-3") is Level.ALARM


def test_a_late_survey_does_not_raise_a_run_the_newest_survey_heard_while_gated_broke(tmp_path: Path) -> None:
    """A plan gating the rate rule on `up == 1`. Surveys on days 0, 1 and 3 (80 % each, day 3's over 2 days): 预警.
    The gate closes; day 4's survey (no movement: 0 %) goes into the days but is not judged; the gate opens. Day 2's
    survey then arrives late: the run is re-judged as of day 3 (the newest *judged*), days 1-3 above 70 %, and 报警
    is raised citing day 3 while the newest survey in the days (day 4) breaks the run; day 5's survey clears it."""
    plan = RulesConfig.model_validate(
        {
            "overrides": [
                {"rule": RATE, "source": PLAN.model_dump(), "when": [{"quantity": "up", "op": "==", "value": 1}]}
            ]
        }
    )
    ev, _ = evaluator(tmp_path, plan)
    ev.observe(Reading("ZQT-3", "up", 1.0, T0 - H), T0 - H)
    _feed(ev, [(T0 + d * DAY, v) for d, v in ((0, 0.0), (1, 2.4), (3, 7.2))])
    assert ev.level(RATE, "ZQT-3") is Level.PREWARNING
    ev.observe(Reading("ZQT-3", "up", 0.0, T0 + 4 * DAY - H), T0 + 4 * DAY - H)
    _feed(ev, [(T0 + 4 * DAY, 7.2)])
    ev.observe(Reading("ZQT-3", "up", 1.0, T0 + 4 * DAY + H), T0 + 4 * DAY + H)
    late = ev.observe(Reading("ZQT-3", Q, 4.8, T0 + 2 * DAY), T0 + 4 * DAY + 2 * H)
    assert [(t.phase, t.new, t.source_ns) for t in late if t.rule == RATE] == []
    assert ev.level(RATE, "ZQT-3") is Level.PREWARNING


# ---- surveys at night: a run counts survey days from the point's survey_day_starts --------------------------------

NOON = dt.time(12, 0)
MIDNIGHT = T0 + 15 * H  # 00:00 on 2026-03-03, the first midnight after the first daily survey
M20 = 20 * 60 * S


def _nights(ev: Evaluator, offsets: dict[int, int], late: int | None = None) -> list[Transition]:
    """ZQT-3 surveyed on nights 0, 1, ... at `offsets[night]` from that night's midnight (-M20: 23:40 the evening
    before, M20: 00:20), moving a steady 0.1 mm/h (2.4 mm/d, 80 % of 3 mm/d on every survey); night `late`'s survey
    is sent after the next one, heard 2 h after it. Each heard at its own time."""
    t = {k: MIDNIGHT + k * DAY + off for k, off in offsets.items()}
    order = sorted(k for k in t if k != late)
    out: list[Transition] = []
    for k in order:
        out += ev.observe(Reading("ZQT-3", Q, 0.1 * (t[k] - t[0]) / H, t[k]), t[k])
        if late is not None and k == late + 1:
            out += ev.observe(Reading("ZQT-3", Q, 0.1 * (t[late] - t[0]) / H, t[late]), t[k] + 2 * H)
    return out


def _by_night(got: list[Transition]) -> list[tuple[int, int]]:
    """(new level, the night heard) of the rate rule's confirmed transitions."""
    return [(int(t.new), round((t.at_ns - MIDNIGHT) / DAY)) for t in got if t.rule == RATE and t.phase == "confirmed"]


@pytest.mark.parametrize(
    "offsets",
    [
        {0: -M20, 1: -M20, 2: M20, 3: M20, 4: M20},  # 23:40, then 00:20 the day after next, then 00:20 each night
        {0: -M20, 1: M20, 2: -M20, 3: M20, 4: -M20},  # either side of midnight: 00:20 and 23:40 on one date
    ],
    ids=["past-midnight-from-night-2", "either-side-of-midnight"],
)
def test_nightly_surveys_either_side_of_midnight_raise_the_run_on_the_third_night(
    tmp_path: Path, offsets: dict[int, int]
) -> None:
    """A point surveyed every night, at 23:40 or at 00:20, its survey day from 12:00 (`survey_day_starts`): each
    night is one day whichever side of midnight its survey fell. Nights 1, 2 and 3 are above 70 %: 报警 on night 3's
    survey. On calendar days (the default) a survey at 00:20 counts for the date it is taken on: the date before it
    had none and broke the run (报警 a night late, on night 4), and 00:20 and 23:40 on one date (two nights) counted
    as one day (报警 never)."""
    assert _by_night(_nights(evaluator(tmp_path / "a", day_starts=NOON)[0], offsets)) == [(1, 1), (2, 3)]
    (tmp_path / "b").mkdir()
    calendar = _by_night(_nights(evaluator(tmp_path / "b")[0], offsets))  # (unchanged: the point sets no hour)
    assert (2, 3) not in calendar


def test_a_night_without_a_survey_still_breaks_the_run(tmp_path: Path) -> None:
    """Survey days from 12:00, surveys either side of midnight, night 2 not surveyed: night 3's rate (against night
    1, over two nights) counts for night 3 alone, night 2 has none. Nights 3, 4 and 5 make the run: 报警 on night 5,
    not on 3 or 4."""
    ev, _ = evaluator(tmp_path, day_starts=NOON)
    got = _nights(ev, {0: -M20, 1: M20, 3: M20, 4: -M20, 5: M20})
    assert _by_night(got) == [(1, 1), (2, 5)]


def test_two_surveys_of_one_survey_day_count_once(tmp_path: Path) -> None:
    """Survey days from 12:00; each night surveyed at 20:00 and again at 08:00 the next morning (12 h apart, one
    night's work, on two dates). Both are the night's: the run counts nights 1, 2 and 3 (night 0 has no night before
    it), and 报警 comes with night 3's first survey, not after three 12 h intervals. Every survey's own rate is 80 %:
    预警 from the second."""
    ev, _ = evaluator(tmp_path, day_starts=NOON)
    t0 = MIDNIGHT - 4 * H  # 20:00 on night 0
    got: list[Transition] = []
    for ts in sorted(t0 + k * DAY + dh * H for k in range(5) for dh in (0, 12)):
        got += ev.observe(Reading("ZQT-3", Q, 0.1 * (ts - t0) / H, ts), ts)
    rate = [(int(t.new), (t.at_ns - t0) / H) for t in got if t.rule == RATE and t.phase == "confirmed"]
    assert rate == [(1, 12.0), (2, 72.0)]  # 预警 at 08:00 after night 0; 报警 at 20:00 on night 3


def test_a_late_night_s_survey_that_completes_a_run_raises_it_at_once(tmp_path: Path) -> None:
    """Survey days from 12:00. Nights 0, 1 and 3 surveyed at 23:40, 00:20 and 00:20; night 2's survey (23:40 on
    03-04, the date of night 1's) is sent after night 3's: before it, night 3's rate is over two nights, night 2
    without data: 预警. With it, nights 1, 2 and 3 are above 70 %: 报警 at once, judged as of night 3's survey."""
    ev, _ = evaluator(tmp_path, day_starts=NOON)
    got = _nights(ev, {0: -M20, 1: M20, 2: -M20, 3: M20}, late=2)
    alarm = [t for t in got if t.rule == RATE and t.new is Level.ALARM]
    assert [(t.phase, t.at_ns, t.source_ns) for t in alarm] == [
        ("confirmed", MIDNIGHT + 3 * DAY + M20 + 2 * H, MIDNIGHT + 3 * DAY + M20)
    ]
    assert alarm[0].threshold is not None and alarm[0].threshold.source.cite() == CITE


@pytest.mark.parametrize("starts", [dt.time(0), dt.time(9), NOON, dt.time(23, 59)])
def test_the_hour_a_survey_day_starts_changes_nothing_for_daily_surveys_at_one_hour(
    tmp_path: Path, starts: dt.time
) -> None:
    """The fifteen daily surveys at 09:00: the same levels on the same surveys whatever hour the survey day starts
    (09:00 itself: each survey opens its day)."""
    got = run(evaluator(tmp_path, day_starts=starts)[0], SURVEYS)
    assert levels(got, RATE) == [(1, 3), (2, 5), (0, 8), (1, 11), (2, 13), (0, 14)]


@pytest.mark.parametrize(
    ("offsets", "day_starts", "said"),
    [
        ({0: -M20, 1: M20, 2: -M20}, None, True),  # at night, calendar days: said once, with the fix
        ({0: -M20, 1: M20, 2: -M20}, NOON, False),  # the hour set: nothing to say
        ({0: 9 * H, 1: 9 * H, 2: 9 * H}, None, False),  # daily at 09:00: far from midnight
    ],
)
def test_surveys_near_the_survey_day_s_start_are_said_once_with_the_fix(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, offsets: dict[int, int], day_starts: dt.time | None, said: bool
) -> None:
    """Nightly surveys at a point that counts calendar days (survey_day_starts not set) break a run of days silently
    (left by the helper's fix: nothing warned). The first survey within an hour of the day's start is said, once,
    naming the point and the setting."""
    ev = evaluator(tmp_path, day_starts=day_starts)[0] if day_starts else evaluator(tmp_path)[0]
    with caplog.at_level("WARNING", logger="sitegw.alarms"):
        _nights(ev, offsets)
    warned = [r.getMessage() for r in caplog.records if "survey_day_starts" in r.getMessage()]
    assert len(warned) == (1 if said else 0), warned
    if said:
        assert warned[0].startswith("ZQT-3: a survey of horizontal_displacement") and "(00:00)" in warned[0]


# ---- an outside review of survey_day_starts ------------------------------------------------------------------------


def test_turning_survey_day_starts_on_across_a_restart_keeps_every_night(tmp_path: Path) -> None:
    """Nights 0-2 surveyed at 23:40 / 00:20 / 23:40 on calendar days (the warning says: set survey_day_starts);
    the engineer sets "12:00" and restarts. Night 3 (00:20) makes nights 1, 2, 3 above 70 %: 报警 on night 3, as
    without the restart. The memory keeps one sample per *calendar* day (night 1's 00:20 and night 2's 23:40 share
    03-04: only night 2 kept), so re-bucketed by noon survey day 03-03 has no data and the run breaks."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    before, _ = evaluator(tmp_path / "a")  # calendar days
    _nights(before, {0: -M20, 1: M20, 2: -M20})
    saved = before.measures.saved({})

    after, _ = evaluator(tmp_path / "b", day_starts=NOON)
    after.measures.load(saved)
    t3 = MIDNIGHT + 3 * DAY + M20
    t0 = MIDNIGHT - M20
    after.observe(Reading("ZQT-3", Q, 0.1 * (t3 - t0) / H, t3), t3)
    assert after.level(RATE, "ZQT-3") is Level.ALARM


def test_date_only_surveys_at_midnight_are_not_warned_about(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Daily surveys imported with their date only (00:00:00 local each day) on calendar days: each is its own date,
    the run counts them right, yet the warning tells the site to set survey_day_starts (and doing so moves every such
    survey to the day before, test 2)."""
    ev, _ = evaluator(tmp_path)
    with caplog.at_level("WARNING", logger="sitegw.alarms"):
        _nights(ev, {0: 0, 1: 0, 2: 0, 3: 0})
    assert not [r for r in caplog.records if "survey_day_starts" in r.getMessage()]


def test_the_warning_does_not_advise_the_hour_already_set(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """survey_day_starts "12:00" and daytime surveys drifting around noon (11:40, 12:20): the warning tells the
    engineer to set survey_day_starts 'e.g. "12:00"' -- the value already set -- and 'if it is surveyed at night'."""
    ev, _ = evaluator(tmp_path, day_starts=NOON)
    with caplog.at_level("WARNING", logger="sitegw.alarms"):
        _nights(ev, {0: 12 * H - M20, 1: 12 * H + M20, 2: 12 * H - M20})
    said = [r.getMessage() for r in caplog.records if "survey_day_starts" in r.getMessage()]
    assert len(said) == 1
    assert '"12:00"' not in said[0], said[0]


def test_a_late_survey_from_a_point_silent_for_more_than_three_intervals_still_completes_its_run(
    tmp_path: Path,
) -> None:
    """Day 3's survey arrives four days after day 4's, the point's newest (surveyed daily: more than 3 expected
    intervals without a newer one). Older than the newest, it has no rate of its own and cannot be judged as the
    present; as history its day completes days 2, 3 and 4 above 70 %: 报警 at once, judged as of day 4's survey, as
    when it comes within 3 intervals. (Past them it was neither, and nothing was raised: a known issue.)"""
    ev, _ = evaluator(tmp_path)
    _feed(ev, [(T0 + d * DAY, v) for d, v in ((0, 0.0), (1, 1.0), (2, 3.4), (4, 8.2))])
    heard = T0 + 8 * DAY + 2 * H
    late = [t for t in ev.observe(Reading("ZQT-3", Q, 5.8, T0 + 3 * DAY), heard) if t.rule == RATE]
    assert [(t.phase, t.old, t.new, t.at_ns, t.source_ns, t.value) for t in late] == [
        ("confirmed", Level.PREWARNING, Level.ALARM, heard, T0 + 4 * DAY, 80.0)
    ]
