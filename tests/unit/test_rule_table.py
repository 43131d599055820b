"""Every default rule against domain.md (numbers, levels, tags, articles), probed through the evaluator."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from alerting.baselines import Baselines
from alerting.db import connect
from alerting.derived import Deriver, DeviceContext, WarningLimit
from alerting.evaluator import Evaluator
from alerting.rules import Confidence, Level, Source, default_rules
from alerting.transition import Transition
from telemetry.reading import Quality, Reading

S = 1_000_000_000
T0 = int(dt.datetime(2025, 6, 2, 8, 0, tzinfo=ZoneInfo("Asia/Shanghai")).timestamp()) * S
KIND_OF_ANY = "gas"  # the device kind "any" rules are probed on

# rule id -> (kind, quantity, measure, direction, category, latch, 2024 article, [(level, value, tag)])
# transcribed from shared/docs/domain.md; None = no number in any source found: the project supplies it [U]
TABLE: dict[str, tuple[str, str, str, str, str, bool, str | None, list[tuple[int, float | None, str]]]] = {
    # §1.2 moment: 90 % [S], > 100 % limiter acts [S+], < 110 % [S+]; §5: limiter failed/bypassed 8(四)
    "tc.moment_ratio": ("tower_crane", "load_moment_ratio", "value", "high", "value", False, "8(四)",
                        [(1, 90, "S"), (2, 100, "S+"), (3, 110, "S+")]),
    # §1.2 load limiter: same 90 / 100 / < 110 % as the moment (load as % of the chart at the radius)
    "tc.load_ratio": ("tower_crane", "load_ratio", "value", "high", "value", False, "8(四)",
                      [(1, 90, "S"), (2, 100, "S+"), (3, 110, "S+")]),
    # §1.2 suggested wind defaults: 8.0 m/s recommendation, 10.8 m/s Beaufort 6 (JGJ 276 [S]); §5 15(二)
    "tc.wind": ("tower_crane", "wind_speed", "value", "high", "value", False, "15(二)",
                [(1, 8.0, "rec"), (2, 10.8, "S")]),
    # §1.2 verticality <= 4/1000 [R] (GB 5144 / JGJ 196); §5 8(七)
    "tc.tilt_x": ("tower_crane", "tilt_x", "value", "abs", "value", False, "8(七)", [(2, 4.0, "R")]),
    "tc.tilt_y": ("tower_crane", "tilt_y", "value", "abs", "value", False, "8(七)", [(2, 4.0, "R")]),
    # §1.3 moment > 110 % while hoisting up: limiter failed or bypassed, 8(四)
    "tc.limiter_bypass": ("tower_crane", "load_moment_ratio", "value", "high", "health", True, "8(四)",
                          [(3, 110, "S+")]),
    # §1.4 limiter "not working" = immediate alarm (recommendation)
    "tc.bypass_switch": ("tower_crane", "limiter_bypass", "value", "high", "health", True, "8(四)",
                         [(2, 1, "rec")]),
    # §2.3-2.4: % of each point's design 预警值 (8.0.1, 8.0.3, 8.0.8 [P]); watch from 70 % [R]; 危险 (8.0.9) is never
    # raised from one value (inspection input or combined triggers); §5 5(四)1
    "exc.horizontal_displacement": ("excavation", "horizontal_displacement", "percent_of_warning", "abs", "value",
                                    False, "5(四)1", [(1, 70.0, "R"), (2, 100.0, "P")]),
    "exc.vertical_displacement": ("excavation", "vertical_displacement", "percent_of_warning", "abs", "value",
                                  False, "5(四)1", [(1, 70.0, "R"), (2, 100.0, "P")]),
    "exc.deep_displacement": ("excavation", "deep_displacement", "percent_of_warning", "abs", "value", False,
                              "5(四)1", [(1, 70.0, "R"), (2, 100.0, "P")]),
    # §2.3 rate 预警值 (8.0.3: cumulative AND rate); watch at 70 % [R placeholder]; 报警 also at 70 % on 3 days
    "exc.horizontal_displacement_rate": ("excavation", "horizontal_displacement", "rate_percent_of_warning", "abs",
                                         "value", False, "5(四)1", [(1, 70.0, "R"), (2, 100.0, "P")]),
    "exc.vertical_displacement_rate": ("excavation", "vertical_displacement", "rate_percent_of_warning", "abs",
                                       "value", False, "5(四)1", [(1, 70.0, "R"), (2, 100.0, "P")]),
    "exc.deep_displacement_rate": ("excavation", "deep_displacement", "rate_percent_of_warning", "abs", "value",
                                   False, "5(四)1", [(1, 70.0, "R"), (2, 100.0, "P")]),
    # §2.3 strut force: % of design (60-70 % third-party [S], not a default) [U]
    "exc.strut_force": ("excavation", "strut_force", "percent_of_design", "high", "value", False, None,
                        [(1, None, "U")]),
    "exc.groundwater_level": ("excavation", "groundwater_level", "percent_of_warning", "abs", "value", False,
                              None, [(1, 70.0, "R"), (2, 100.0, "P")]),
    "exc.groundwater_level_rate": ("excavation", "groundwater_level", "rate_percent_of_warning", "abs", "value",
                                   False, None, [(1, 70.0, "R"), (2, 100.0, "P")]),
    # §2.3 8.0.9: 危险 from a person's inspection finding (the 2019 list [R]), never from one value
    "exc.inspection_danger": ("excavation", "inspection_danger", "value", "high", "value", False, None, [(3, 1, "R")]),
    # §1.4 frozen over N cycles: N unknown [U]
    "exc.horizontal_displacement_frozen": ("excavation", "horizontal_displacement", "frozen", "high", "health",
                                           False, None, [(2, None, "U")]),
    "exc.vertical_displacement_frozen": ("excavation", "vertical_displacement", "frozen", "high", "health", False,
                                         None, [(2, None, "U")]),
    "exc.deep_displacement_frozen": ("excavation", "deep_displacement", "frozen", "high", "health", False, None,
                                     [(2, None, "U")]),
    # §3.3: pre-warning 70-80 % placeholder [U]; stop pouring at the control value (254号导则 4.4 [R]); 6(一)
    "fw.settlement": ("formwork", "settlement", "percent_of_design", "abs", "value", False, "6(一)",
                      [(1, None, "U"), (2, 100, "R")]),
    "fw.pole_tilt": ("formwork", "pole_tilt", "value", "abs", "value", False, None, [(2, None, "U")]),
    # §3.3: load above design is a major hazard, 2024 art. 6(二) [P]
    "fw.axial_force": ("formwork", "axial_force", "percent_of_design", "high", "value", False, "6(二)",
                       [(1, None, "U"), (2, 100, "P")]),
    "fw.horizontal_displacement": ("formwork", "horizontal_displacement", "value", "abs", "value", False, None,
                                   [(2, None, "U")]),
    # §4.1 GB/T 50493 §5.5.2: 25 / 50 %LEL, O2 19.5 / 23.5 %VOL [S+]; §4.2 art. 11 (item 二 chosen, see the pack)
    "gas.lel": ("gas", "lel", "value", "high", "value", False, "11(二)", [(2, 25, "S+"), (3, 50, "S+")]),
    "gas.o2_low": ("gas", "o2", "value", "low", "value", False, "11(二)", [(2, 19.5, "S+")]),
    "gas.o2_high": ("gas", "o2", "value", "high", "value", False, "11(二)", [(2, 23.5, "S+")]),
    # §4.2 H2S MAC 10 mg/m3 = 7.1 ppm, L2 200 % OEL [S+]
    "gas.h2s": ("gas", "h2s", "value", "high", "value", False, "11(二)", [(2, 7.1, "S+"), (3, 14.2, "S+")]),
    # §4.2 CO: L1 at PC-TWA 20 mg/m3 = 17 ppm, L2 at PC-STEL 30 mg/m3 = 26 ppm [S+]
    "gas.co": ("gas", "co", "value", "high", "value", False, "11(二)", [(2, 17, "S+"), (3, 26, "S+")]),
    "gas.co_twa": ("gas", "co", "window_mean", "high", "value", False, "11(二)", [(2, 17, "S+")]),
    "gas.co_stel": ("gas", "co", "window_mean", "high", "value", False, "11(二)", [(2, 26, "S+")]),
    # §1.4 / §2.5 / §4.4 / §8 device health (recommendations)
    "health.stale": ("any", "up", "value", "low", "health", False, None, [(2, 0, "rec")]),
    "health.sensor_fault": ("any", "sensor_fault", "value", "high", "health", False, None, [(2, 1, "rec")]),
    "health.point_fault": ("any", "*", "point_fault", "high", "health", False, None, [(2, 1, "rec")]),
    "health.decode_errors": ("any", "decode_errors", "value", "high", "health", False, None, [(2, 1, "rec")]),
    "health.clock_skew": ("any", "clock_skew", "value", "high", "health", False, None, [(1, 1, "rec")]),
    "health.calibration_overdue": ("any", "calibration_due", "calendar", "high", "health", False, None,
                                   [(2, 1, "rec")]),
}  # fmt: skip
# (rule, level) whose limit the source states strictly, entered only beyond the value: §1.2 the limiters act at
# load / moment > 100 % rated, verticality is compliant at <= 4/1000; §1.3 bypass at moment > 110 % while hoisting
# up; §4.2 O2 low < 19.5 %, high > 23.5 % (19.5-23.5 % the safe range). Every other threshold is entered at its value
STRICT = {("tc.moment_ratio", 2), ("tc.load_ratio", 2), ("tc.tilt_x", 2), ("tc.tilt_y", 2), ("tc.limiter_bypass", 3),
          ("gas.o2_low", 2), ("gas.o2_high", 2)}  # fmt: skip
WINDOWS = {"gas.co_twa": 28800, "gas.co_stel": 900}  # §4.2: PC-TWA 8 h, PC-STEL 15 min
GATES = {  # §1.2 verticality unloaded in calm wind (<= 3 m/s [R]); §1.3 limiter bypass while hoisting up
    "tc.tilt_x": [("load", "<=", 0.2), ("wind_speed", "<=", 3.0)],
    "tc.tilt_y": [("load", "<=", 0.2), ("wind_speed", "<=", 3.0)],
    "tc.limiter_bypass": [("hoisting_up", "==", 1)],
}


def test_the_table_covers_every_default_rule() -> None:
    assert sorted(TABLE) == sorted(default_rules())


@pytest.mark.parametrize("rule_id", sorted(TABLE))
def test_rule_matches_domain(rule_id: str) -> None:
    kind, quantity, measure, direction, category, latch, article, ths = TABLE[rule_id]
    r = default_rules()[rule_id]
    assert (r.kind.value, r.quantity, r.measure, r.direction, r.category, r.latch) == (
        kind, quantity, measure, direction, category, latch,
    )  # fmt: skip
    assert [(int(t.level), t.value, t.source.confidence.value) for t in r.thresholds] == ths
    assert {(rule_id, int(t.level)) for t in r.thresholds if not t.inclusive} == {s for s in STRICT if s[0] == rule_id}
    assert (r.hazard_basis.article if r.hazard_basis else None) == article
    if r.hazard_basis is not None:
        assert r.hazard_basis.version == "2024" and r.hazard_basis.text_zh
    assert all(t.source.standard for t in r.thresholds)
    rate = measure in ("rate_per_day", "rate_percent_of_warning")
    assert r.window_s == WINDOWS.get(rule_id, r.window_s if rate else None)
    assert [(c.quantity, c.op, c.value) for c in r.when] == GATES.get(rule_id, [])
    assert all(c.source is not None for c in r.when)  # gate values are data with sources
    if rate:  # §2.3: 报警 also above 70 % of the rate 预警值 on 3 consecutive days [R placeholder]; the rate over a day
        assert r.window == 86400
        cd = r.consecutive_days
        assert cd is not None and (cd.days, cd.fraction, int(cd.level), cd.inclusive) == (3, 0.7, 2, False)
        assert cd.source is not None and (cd.source.standard, cd.source.confidence.value) == ("GB 50497-2009", "R")
    else:
        assert r.consecutive_days is None
    assert all(t.consecutive == 1 for t in r.thresholds)


def test_wind_alarm_takes_the_cranes_own_limit() -> None:
    (alarm,) = [t for t in default_rules()["tc.wind"].thresholds if t.level == 2]
    assert alarm.stricter_of_device == "wind_limit_ms"


# ---- probes: just below / at / just above every threshold that has a value, through the evaluator -------------


def expected_level(rule_id: str, x: float) -> Level:
    """The level the table says a fresh evaluator must show for a measured value x."""
    direction = TABLE[rule_id][3]
    out = Level.NORMAL
    for level, value, _ in TABLE[rule_id][7]:
        if value is None:
            continue
        v = abs(x) if direction == "abs" else x
        if (rule_id, level) in STRICT:
            at = v < value if direction == "low" else v > value
        else:
            at = v <= value if direction == "low" else v >= value
        if at:
            out = max(out, Level(level))
    return out


def probe(rule_id: str, x: float) -> Level:
    """Feed one rule a reading whose measure is x, on a fresh evaluator; return the confirmed level."""
    rule = default_rules()[rule_id]
    kind = KIND_OF_ANY if rule.kind.value == "any" else rule.kind.value
    today = dt.datetime.fromtimestamp(T0 // S, ZoneInfo("Asia/Shanghai")).date()
    ctx = DeviceContext(
        kind=kind,
        design_values={rule.quantity: 200.0},
        calibration_due=today - dt.timedelta(days=int(x)) if rule.measure == "calendar" else None,
    )
    baselines = Baselines(connect(":memory:"), lambda: T0)
    if rule.measure in ("change_from_baseline", "percent_of_warning"):
        baselines.set("D", rule.quantity, 10.0, "tester")
    if rule.measure == "percent_of_warning":  # a design 预警值 of 200 (mm, m): x % of it is 2x from the baseline
        plan = Source(standard="plan", confidence=Confidence.PRIMARY)
        ctx = DeviceContext(kind=kind, warning_values={rule.quantity: WarningLimit(200.0, 200.0, plan, "200")})
    ev = Evaluator({"D": [rule]}, {"D": ctx}, baselines)
    gate = {"load": 0.0, "wind_speed": 0.0, "hoisting_up": 1.0}
    ev.observe_batch([Reading("D", q, v, T0) for q, v in gate.items()], T0)
    if rule.measure == "calendar":
        ev.tick(T0)
    elif rule.measure == "window_mean":  # held over the whole window: the mean is the value
        ev.observe(Reading("D", rule.quantity, x, T0), T0)
        end = T0 + int(rule.window * S)
        ev.observe(Reading("D", rule.quantity, x, end), end)
    else:
        raw = {"percent_of_design": x * 2.0, "change_from_baseline": 10.0 + x, "percent_of_warning": 10.0 + x * 2.0}
        raw = raw.get(rule.measure, x)
        ev.observe(Reading("D", rule.quantity, raw, T0), T0)
    return ev.level(rule_id, "D")


PROBES = [
    (rid, value, x)
    for rid, row in sorted(TABLE.items())
    # driven by quality, not a value (tests/unit/test_point_quality.py); rates over surveys with consecutive counts
    # (tests/unit/test_excavation_surveys.py)
    if row[2] not in ("point_fault", "rate_percent_of_warning")
    for _, value, _ in row[7]
    if value is not None
    for x in (
        [value - 1, value, value + 1]  # calendar: whole days
        if row[2] == "calendar"
        else [value - 0.01, value, value + 0.01] + ([-value - 0.01, -value + 0.01] if row[3] == "abs" else [])
    )
]


@pytest.mark.parametrize(("rule_id", "threshold", "x"), PROBES)
def test_just_below_at_and_above(rule_id: str, threshold: float, x: float) -> None:
    assert probe(rule_id, x) == expected_level(rule_id, x)


def test_probes_cross_levels() -> None:
    # the probe table is not vacuous: every valued threshold is reached at its value and not just before it, or
    # (a strict one) just beyond it and not at it
    for rid, value, x in PROBES:
        if x == value:
            step = -0.01 if TABLE[rid][3] == "low" else 0.01
            if any((rid, lv) in STRICT for lv, v, _ in TABLE[rid][7] if v == value):
                assert expected_level(rid, value + step) > expected_level(rid, x)
            else:
                assert expected_level(rid, x) > expected_level(rid, value - step)


@pytest.mark.parametrize(
    ("rule_id", "batch"),
    [
        ("gas.o2_low", {"o2": 19.5}),  # §4.2: deficiency is < 19.5 %
        ("gas.o2_high", {"o2": 23.5}),  # §4.2: enrichment is > 23.5 %
        ("tc.moment_ratio", {"load_moment_ratio": 100.0}),  # §1.2: the limiter acts at > 100 % rated
        ("tc.load_ratio", {"load_ratio": 100.0}),
        ("tc.tilt_x", {"load": 0.0, "wind_speed": 1.0, "tilt_x": 4.0}),  # §1.2: compliant at <= 4/1000
        ("tc.tilt_y", {"load": 0.0, "wind_speed": 1.0, "tilt_y": -4.0}),
        ("tc.limiter_bypass", {"hoisting_up": 1.0, "load_moment_ratio": 110.0}),  # §1.3: bypass at > 110 %
    ],
)
def test_a_value_exactly_at_a_strict_limit_raises_no_alarm(rule_id: str, batch: dict[str, float]) -> None:
    """Every threshold was entered at its value (high >=, low <=), where the source states the limit strictly: an
    O2 reading of exactly 19.5 % raised 缺氧 although 19.5-23.5 % is the safe range, a lift of exactly the rated
    load raised 报警, a tower exactly at 4/1000 raised a verticality deviation. Those thresholds are now
    `inclusive: false` in their pack and entered only beyond the value; a hair beyond it still raises."""
    kind = default_rules()[rule_id].kind.value
    ev = Evaluator({"D": [default_rules()[rule_id]]}, {"D": DeviceContext(kind)})
    strict = Level(max(lv for r, lv in STRICT if r == rule_id))
    ev.observe_batch([Reading("D", q, v, T0) for q, v in batch.items()], T0)
    assert ev.level(rule_id, "D") < strict  # (the moment and load ratios are at 预警 there: >= 90 %)
    q, v = list(batch.items())[-1]
    beyond = v - 0.01 if rule_id == "gas.o2_low" else v + 0.01 if v >= 0 else v - 0.01
    ev.observe(Reading("D", q, beyond, T0 + S), T0 + S)
    assert ev.level(rule_id, "D") is strict


def test_a_strict_threshold_stays_strict_as_a_percent_of_the_design_warning_value() -> None:
    """An excavation threshold is bound as a fraction of the point's design 预警值, made anew per point: `inclusive`
    must come with it, or a pack's strict limit would be entered at its value again."""
    rule = default_rules()["exc.horizontal_displacement"]
    ths = [t.model_copy(update={"inclusive": t.level != 2}) for t in rule.thresholds]
    rule = rule.model_copy(update={"thresholds": ths})
    baselines = Baselines(connect(":memory:"), lambda: T0)
    baselines.set("P", "horizontal_displacement", 0.0, "tester")
    plan = Source(standard="plan", confidence=Confidence.PRIMARY)
    ctx = DeviceContext(
        kind="excavation", warning_values={"horizontal_displacement": WarningLimit(30.0, 3.0, plan, "30")}
    )
    ev = Evaluator({"P": [rule]}, {"P": ctx}, baselines)
    ev.observe(Reading("P", "horizontal_displacement", 30.0, T0), T0)  # 100 % of 30 mm: at, not beyond
    assert ev.level(rule.id, "P") is Level.PREWARNING
    ev.observe(Reading("P", "horizontal_displacement", 30.01, T0 + S), T0 + S)
    assert ev.level(rule.id, "P") is Level.ALARM


# ---- behaviour the table alone does not show ---------------------------------------------------------------------


def run(ev: Evaluator, device: str, steps: list[tuple[float, dict[str, float]]]) -> list[Transition]:
    """Feed (seconds after T0, {quantity: value}) batches; the clock is the batch time."""
    out: list[Transition] = []
    for sec, values in steps:
        now = T0 + int(sec * S)
        out += ev.observe_batch([Reading(device, q, v, now) for q, v in values.items()], now)
    return out


def crane(rules: list[str], **kw: object) -> Evaluator:
    ctx = DeviceContext(kind="tower_crane", **kw)  # type: ignore[arg-type]
    return Evaluator({"TC": [default_rules()[r] for r in rules]}, {"TC": ctx})


def test_verticality_is_judged_only_idle_and_calm() -> None:
    ev = crane(["tc.tilt_x"])
    # loaded or windy: a 6 ‰ tilt is sway, not a verticality deviation
    assert run(ev, "TC", [(0, {"load": 2.0, "wind_speed": 1.0, "tilt_x": 6.0})]) == []
    assert run(ev, "TC", [(1, {"load": 0.0, "wind_speed": 5.0, "tilt_x": 6.0})]) == []
    assert ev.level("tc.tilt_x", "TC") is Level.NORMAL
    # idle and calm: judged
    (t,) = run(ev, "TC", [(2, {"load": 0.1, "wind_speed": 2.0, "tilt_x": -4.5})])
    assert (t.new, t.value) == (Level.ALARM, -4.5)
    # the crane starts working and the tilt reads small: the deviation is not cleared by a closed gate
    assert run(ev, "TC", [(3, {"load": 3.0, "wind_speed": 2.0, "tilt_x": 0.5})]) == []
    assert ev.level("tc.tilt_x", "TC") is Level.ALARM
    (t,) = run(ev, "TC", [(4, {"load": 0.0, "wind_speed": 2.0, "tilt_x": 0.5})])
    assert t.new is Level.NORMAL


def test_gate_quantity_never_seen_keeps_the_gate_closed() -> None:
    ev = crane(["tc.tilt_x"])
    assert run(ev, "TC", [(0, {"tilt_x": 9.0})]) == []  # no load/wind reading yet: idleness not shown


@pytest.mark.parametrize(
    ("gate", "faulted", "quality"),
    [
        ("wind_speed", 6553.5, Quality.BAD),  # the anemometer's sentinel in a storm
        ("load", 655.35, Quality.BAD),  # the load cell's, while lifting
        ("wind_speed", 0.0, Quality.NOT_READY),  # warming up after a restart: not a wind known to be calm
    ],
)
def test_a_gate_closes_when_its_quantity_is_no_longer_valid(gate: str, faulted: float, quality: Quality) -> None:
    """The gate read the quantity's last VALID value forever: once the anemometer or load cell went BAD, the calm,
    idle reading from before kept verticality's gate open and a 5 ‰ sway under unknown wind or load raised 报警
    (domain.md §1.2: verticality only unloaded in calm wind). An invalid reading now closes the gate until a valid
    one comes; the level stays as it was."""
    ev = crane(["tc.tilt_x"])
    assert run(ev, "TC", [(0, {"load": 0.0, "wind_speed": 1.0, "tilt_x": 1.0})]) == []  # idle, calm, plumb
    values = {"load": 0.0, "wind_speed": 1.0, "tilt_x": 5.0}
    batch = [
        Reading("TC", q, faulted if q == gate else v, T0 + S, quality if q == gate else Quality.GOOD)
        for q, v in values.items()
    ]
    ev.observe_batch(batch, T0 + S)
    assert ev.level("tc.tilt_x", "TC") is Level.NORMAL
    assert run(ev, "TC", [(2, {"tilt_x": 5.0})]) == []  # a tilt alone: the gate is still closed
    (t,) = run(ev, "TC", [(3, {"load": 0.0, "wind_speed": 1.0, "tilt_x": 5.0})])  # valid again, idle and calm
    assert (t.new, t.value) == (Level.ALARM, 5.0)


def test_limiter_bypass_only_while_hoisting_up() -> None:
    ev = crane(["tc.limiter_bypass", "tc.moment_ratio"])
    got = run(ev, "TC", [(0, {"hoisting_up": 0, "load_moment_ratio": 115})])
    assert [(t.rule, t.new) for t in got] == [("tc.moment_ratio", Level.DANGER)]
    got = run(ev, "TC", [(1, {"hoisting_up": 1, "load_moment_ratio": 112})])
    assert [(t.rule, t.new) for t in got] == [("tc.limiter_bypass", Level.DANGER)]
    assert default_rules()["tc.limiter_bypass"].latch


@pytest.mark.parametrize(
    ("own", "speeds", "levels"),
    [
        (None, [7.9, 8.0, 10.7, 10.8], [0, 1, 1, 2]),  # no manual value: the pack's 8.0 / 10.8
        (9.5, [9.4, 9.5, 10.7], [1, 2, 2]),  # the manual's 9.5 m/s is stricter than 10.8
        (13.0, [10.7, 10.8, 12.0], [1, 2, 2]),  # a laxer manual value does not relax the standard's
    ],
)
def test_wind_uses_the_stricter_of_pack_and_crane(own: float | None, speeds: list[float], levels: list[int]) -> None:
    got = []
    for v in speeds:  # fresh evaluator per value: entering thresholds, no deadband
        ev = crane(["tc.wind"], wind_limit_ms=own)
        run(ev, "TC", [(0, {"wind_speed": v})])
        got.append(int(ev.level("tc.wind", "TC")))
    assert got == levels


def test_wind_alarm_cites_the_cranes_manual() -> None:
    ev = crane(["tc.wind"], wind_limit_ms=9.5)
    (t,) = run(ev, "TC", [(0, {"wind_speed": 9.6})])
    assert t.threshold is not None and t.threshold.value == 9.5
    assert t.threshold.source.clause == "wind_limit_ms" and "JGJ 276-2012 3.0.12 [S]" in (t.threshold.source.note or "")


def test_percent_of_design() -> None:
    rule = default_rules()["fw.axial_force"]  # 报警 at 100 % of design
    ctx = {"F1": DeviceContext(kind="formwork", design_values={"axial_force": 40.0}), "F2": DeviceContext("formwork")}
    ev = Evaluator({"F1": [rule], "F2": [rule]}, ctx)
    assert ("F2", "fw.axial_force", "needs design_values.axial_force") in ev.inactive
    assert ev.observe(Reading("F1", "axial_force", 39.9, T0), T0) == []
    (t,) = ev.observe(Reading("F1", "axial_force", 40.0, T0), T0)
    assert (t.new, t.value) == (Level.ALARM, 100.0)
    assert ev.observe(Reading("F2", "axial_force", 400.0, T0), T0) == []  # no design value: inactive


# ---- load ratio from the load chart ---------------------------------------------------------------------------

CHART = ((2.5, 6.0), (12.0, 6.0), (20.0, 3.6), (30.0, 2.2))


@pytest.mark.parametrize(
    ("radius", "load", "ratio", "quality"),
    [
        (10.0, 3.0, 50.0, Quality.GOOD),  # inside the first band: 6 t
        (12.0, 6.0, 100.0, Quality.GOOD),  # exactly at a chart point: that point
        # between points the rated moment is linear: 12 m x 6 t = 20 m x 3.6 t = 72 t·m, 30 m x 2.2 t = 66 t·m
        (12.5, 5.76, 100.0, Quality.GOOD),  # just past 12 m: 72 t·m / 12.5 m = 5.76 t
        (16.0, 4.5, 100.0, Quality.GOOD),  # half way from 12 m to 20 m: 72 / 16 = 4.5 t (a line in load: 4.8 t)
        (25.0, 2.76, 100.0, Quality.GOOD),  # half way from 20 m to 30 m: (72 + 66) / 2 = 69 t·m / 25 m = 2.76 t
        (30.0, 2.2, 100.0, Quality.GOOD),  # the last point itself is still on the chart
        (1.0, 3.0, 50.0, Quality.GOOD),  # inside the chart's first radius: its first point
        (31.0, 1.1, 50.0, Quality.UNCERTAIN),  # beyond the jib end: last point, flagged
    ],
)
def test_load_ratio_from_the_chart(radius: float, load: float, ratio: float, quality: Quality) -> None:
    d = Deriver({"TC": DeviceContext(kind="tower_crane", load_chart=CHART)})
    (r,) = d.derive([Reading("TC", "radius", radius, T0), Reading("TC", "load", load, T0 + 5)])
    assert (r.device, r.quantity, r.ts_ns, r.quality) == ("TC", "load_ratio", T0 + 5, quality)
    assert r.value == pytest.approx(ratio)


def test_load_ratio_without_chart_uses_rated_load_and_last_radius() -> None:
    d = Deriver({"TC": DeviceContext(kind="tower_crane"), "G": DeviceContext(kind="gas")})
    assert d.derive([Reading("TC", "load", 1.0, T0)]) == []  # no radius known yet
    assert d.derive([Reading("TC", "radius", 20.0, T0), Reading("G", "load", 1.0, T0)]) == []
    (r,) = d.derive([Reading("TC", "rated_load", 4.0, T0 + 1), Reading("TC", "load", 3.0, T0 + 1)])
    assert (r.value, r.quality) == (75.0, Quality.GOOD)
    (r,) = d.derive([Reading("TC", "load", 4.4, T0 + 2, Quality.UNCERTAIN)])  # last radius and rating
    assert r.quality is Quality.UNCERTAIN and r.value == pytest.approx(110.0)


@pytest.mark.parametrize(
    "load_q, radius_q, expect",
    [
        (Quality.BAD, Quality.NOT_READY, Quality.BAD),  # found by a review: max() of the enum gave NOT_READY
        (Quality.NOT_READY, Quality.BAD, Quality.BAD),
        (Quality.GOOD, Quality.NOT_READY, Quality.NOT_READY),
        (Quality.UNCERTAIN, Quality.GOOD, Quality.UNCERTAIN),
    ],
)
def test_load_ratio_takes_the_worst_quality_of_its_inputs(load_q: Quality, radius_q: Quality, expect: Quality) -> None:
    d = Deriver({"TC": DeviceContext(kind="tower_crane", load_chart=CHART)})
    (r,) = d.derive([Reading("TC", "radius", 20.0, T0, radius_q), Reading("TC", "load", 1.0, T0, load_q)])
    assert r.quality is expect  # BAD > NOT_READY > UNCERTAIN > GOOD (telemetry/reading.py Quality.worst)


def test_load_ratio_feeds_the_load_rule() -> None:
    d = Deriver({"TC": DeviceContext(kind="tower_crane", load_chart=CHART)})
    ev = crane(["tc.load_ratio"], load_chart=CHART)
    batch = [Reading("TC", "radius", 25.0, T0), Reading("TC", "load", 2.7, T0)]  # 2.7 t of 2.76 t rated: 97.8 %
    (t,) = ev.observe_batch(batch + d.derive(batch), T0)
    assert (t.rule, t.new, round(t.value, 1)) == ("tc.load_ratio", Level.PREWARNING, 97.8)


@pytest.mark.parametrize(
    ("load", "level"),
    [
        (4.95, Level.DANGER),  # 4.95 t x 16 m = 79.2 t·m = 110 % of 72 t·m (a line in load: 4.95 / 4.8 = 103 %)
        (4.75, Level.ALARM),  # 4.75 t x 16 m = 76 t·m = 105.6 % (a line in load: 99 %, 预警)
        (4.1, Level.PREWARNING),  # 4.1 t x 16 m = 65.6 t·m = 91 % (a line in load: 85 %, nothing)
    ],
)
def test_a_lift_at_110_percent_of_rated_moment_between_constant_moment_points_is_danger(
    load: float, level: Level
) -> None:
    """The rated load between two chart points was a straight line in LOAD: on the constant-moment part of the
    chart (12 m x 6 t = 20 m x 3.6 t = 72 t·m) it said 4.8 t at 16 m where the chart allows 72 / 16 = 4.5 t, so a
    lift at 110 % of rated moment read 103 % and raised 报警, not 危险. The rated moment is now linear between
    points (domain.md §1.2: the moment limiter acts on moment at the current radius)."""
    d = Deriver({"TC": DeviceContext(kind="tower_crane", load_chart=CHART)})
    ev = crane(["tc.load_ratio"], load_chart=CHART)
    batch = [Reading("TC", "radius", 16.0, T0), Reading("TC", "load", load, T0)]
    ev.observe_batch(batch + d.derive(batch), T0)
    assert ev.level("tc.load_ratio", "TC") == level


# ---- exposure windows (GBZ 2.1) ---------------------------------------------------------------------------------


def gas(rules: list[str]) -> Evaluator:
    return Evaluator({"G": [default_rules()[r] for r in rules]}, {"G": DeviceContext("gas", expected_interval_s=60)})


def test_stel_raised_by_30_ppm_for_20_minutes() -> None:
    ev = gas(["gas.co_stel", "gas.co_twa"])
    # clean air for an hour, then 30 ppm CO, a reading a minute
    got = run(ev, "G", [(m * 60, {"co": 0.0}) for m in range(60)])
    got += run(ev, "G", [(3600 + m * 60, {"co": 30.0}) for m in range(21)])
    (t,) = got
    # the 15-min mean reaches 26 ppm when 13 of its 15 minutes are at 30 ppm (26/30 x 15 = 13)
    assert (t.rule, t.new, t.at_ns - T0) == ("gas.co_stel", Level.ALARM, (3600 + 13 * 60) * S)
    assert t.value == pytest.approx(26.0)
    assert ev.level("gas.co_twa", "G") is Level.NORMAL  # 20 min at 30 ppm is far from an 8 h mean of 17


def test_twa_needs_long_exposure() -> None:
    ev = gas(["gas.co_twa"])
    # 20 ppm, just above the 17 ppm TWA, from the start of the shift, a reading every 10 min
    got = run(ev, "G", [(m * 600, {"co": 20.0}) for m in range(6 * 8)])
    (t,) = got
    # time-weighted over the fixed 8 h: 20 ppm x t / 8 h >= 17 ppm once t >= 6.8 h (first reading at or after)
    assert t.new is Level.ALARM and t.at_ns - T0 == 41 * 600 * S
    assert 17.0 <= t.value < 17.5


# ---- device health -------------------------------------------------------------------------------------------


def health(kind: str = "gas", **kw: object) -> Evaluator:
    rules = [r for r in default_rules().values() if r.id.startswith("health.")]
    return Evaluator({"D": rules}, {"D": DeviceContext(kind, **kw)})  # type: ignore[arg-type]


def test_stale_raises_on_up_0_and_clears_on_up_1() -> None:
    ev = health()
    assert run(ev, "D", [(0, {"up": 1})]) == []
    (t,) = run(ev, "D", [(30, {"up": 0})])
    assert (t.rule, t.new) == ("health.stale", Level.ALARM)
    (t,) = run(ev, "D", [(60, {"up": 1})])
    assert (t.rule, t.new) == ("health.stale", Level.NORMAL)


def test_sensor_fault_is_seen_even_on_bad_readings() -> None:
    ev = health()
    # the gas profile marks a faulted detector's readings BAD, the fault flag included
    (t,) = ev.observe(Reading("D", "sensor_fault", 1, T0, Quality.BAD), T0)
    assert (t.rule, t.new) == ("health.sensor_fault", Level.ALARM)


def test_calibration_overdue_via_tick() -> None:
    due = dt.date(2025, 6, 3)  # T0 is 2025-06-02 08:00 in Shanghai
    ev = health(calibration_due=due)
    assert ev.tick(T0) == [] and ev.tick(T0 + 40 * 3600 * S - S) == []  # the due day itself, to 06-03 23:59:59
    (t,) = ev.tick(T0 + 40 * 3600 * S)  # 06-04 00:00 local: one day past due
    assert (t.rule, t.quantity, t.new, t.value) == ("health.calibration_overdue", "calibration_due", Level.ALARM, 1)
    assert ev.tick(T0 + 41 * 3600 * S) == []
    assert health().tick(T0 + 400 * 86400 * S) == []  # no calibration_due configured: inactive


def test_frozen_gauge() -> None:
    rule = default_rules()["exc.horizontal_displacement_frozen"]
    rule = rule.model_copy(update={"thresholds": [rule.thresholds[0].model_copy(update={"value": 5.0})]})
    ev = Evaluator({"P": [rule]}, {"P": DeviceContext("excavation")})
    vals = [1.0, 1.1, 1.1, 1.1, 1.1, 1.1]
    got = run(ev, "P", [(i * 600, {"horizontal_displacement": v}) for i, v in enumerate(vals)])
    (t,) = got
    assert (t.new, t.value, t.at_ns - T0) == (Level.ALARM, 5.0, 5 * 600 * S)  # the 5th identical sample
    (t,) = run(ev, "P", [(4000, {"horizontal_displacement": 1.2})])
    assert t.new is Level.NORMAL
    # while the device is down, repeated values do not count
    got = run(ev, "P", [(5000 + i, {"up": 0, "horizontal_displacement": 1.2}) for i in range(10)])
    assert got == [] and ev.level(rule.id, "P") is Level.NORMAL
