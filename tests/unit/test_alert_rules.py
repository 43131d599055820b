"""Rule schema and pack loading; the evaluator on the basic value rules (levels, deadband, delays, quality)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from alerting.derived import DeviceContext
from alerting.evaluator import Evaluator
from alerting.rules import Confidence, Level, PackError, Rule, RuleKind, default_rules, load_pack
from telemetry.kinds import DeviceKind
from telemetry.reading import Quality, Reading

S = 1_000_000_000  # ns per second

# (rule id, [(level, value, confidence)]) exactly as shared/docs/domain.md gives them
DOMAIN = {
    "tc.moment_ratio": [(1, 90, "S"), (2, 100, "S+"), (3, 110, "S+")],  # §1.2
    "tc.wind": [(1, 8.0, "rec"), (2, 10.8, "S")],  # §1.2 suggested defaults, Beaufort 6 (JGJ 276)
    "tc.tilt_x": [(2, 4.0, "R")],
    "tc.tilt_y": [(2, 4.0, "R")],
    "gas.lel": [(2, 25, "S+"), (3, 50, "S+")],  # §4.1 GB/T 50493-2019 §5.5.2
    "gas.o2_low": [(2, 19.5, "S+")],
    "gas.o2_high": [(2, 23.5, "S+")],
    "gas.h2s": [(2, 7.1, "S+"), (3, 14.2, "S+")],  # §4.2, 100 % / 200 % OEL
    "gas.co": [(2, 17, "S+"), (3, 26, "S+")],  # §4.2, PC-TWA / PC-STEL
}


@pytest.mark.parametrize(("rule_id", "expected"), sorted(DOMAIN.items()))
def test_default_numbers_match_domain(rule_id: str, expected: list[tuple[int, float, str]]) -> None:
    rule = default_rules()[rule_id]
    got = [(int(t.level), t.value, t.source.confidence.value) for t in rule.thresholds]
    assert got == expected
    assert all(t.source.standard for t in rule.thresholds)


def test_excavation_and_formwork_need_project_values() -> None:
    rules = default_rules()
    owed = {r.id for r in rules.values() if r.kind.value in ("excavation", "formwork")}
    assert owed >= {"exc.horizontal_displacement", "exc.strut_force", "fw.settlement", "fw.axial_force"}
    warning = {rid for rid in owed if rules[rid].measure in ("percent_of_warning", "rate_percent_of_warning")}
    person = {"exc.inspection_danger"}  # 1 = a danger a person found: a state, not a number to choose
    assert [(int(t.level), t.value) for t in rules["exc.inspection_danger"].thresholds] == [(3, 1.0)]
    for rid in owed - warning - person:  # no invented numbers: every rule still needs a project value, tagged U
        assert rules[rid].needs_project_values()
        assert all(t.source.confidence is Confidence.UNKNOWN for t in rules[rid].thresholds if t.value is None)
    # the only valued ones: 100 % of the formwork plan's control value / of the design load
    valued = {(rid, int(t.level), t.value) for rid in owed - warning - person for t in rules[rid].thresholds if t.value}
    assert valued == {("fw.settlement", 2, 100.0), ("fw.axial_force", 2, 100.0)}
    # excavation deformation and groundwater: fractions of each point's design 预警值, which the site file must
    # give (devices[].warning_values): 70 % watch [R placeholder], 100 % = the 预警值 itself (GB 50497 8.0.3 [P])
    assert warning >= {"exc.horizontal_displacement", "exc.deep_displacement_rate", "exc.groundwater_level"}
    for rid in warning:
        ths = [(int(t.level), t.value, t.source.confidence.value, t.consecutive) for t in rules[rid].thresholds]
        assert ths == [(1, 70.0, "R", 1), (2, 100.0, "P", 1)]
        # a rate: also 报警 when above 70 % on 3 consecutive days (GB 50497-2009's table note [R], domain.md §2.3)
        cd = rules[rid].consecutive_days
        days = None if cd is None else (cd.days, cd.fraction, int(cd.level), cd.inclusive, cd.source.confidence.value)
        assert days == ((3, 0.7, 2, False, "R") if rid.endswith("_rate") else None)


def test_rule_kinds_follow_device_kinds() -> None:
    assert {k.value for k in RuleKind} == {k.value for k in DeviceKind} | {"any"}
    rule = default_rules()["gas.lel"]
    assert (
        rule.kind.value == DeviceKind.GAS.value
        and rule.kind == "gas"
        and rule.applies_to("gas")
        and not rule.applies_to("tower_crane")
    )
    assert default_rules()["health.stale"].applies_to("tower_crane")


def levels(
    rule: Rule, values: list[float], step_s: float = 1.0, kind: str | None = None, quantity: str | None = None
) -> list[int]:
    ev = Evaluator({"D": [rule]}, {"D": DeviceContext(kind or rule.kind.value)})
    out = []
    for i, v in enumerate(values):
        ev.observe(Reading("D", quantity or rule.quantity, v, 0), int(i * step_s * S))
        out.append(int(ev.level(rule.id, "D")))
    return out


def test_moment_ratio_levels_and_deadband() -> None:
    rule = default_rules()["tc.moment_ratio"]  # 90 / > 100 / 110, deadband 1 %
    seq = [50, 89.9, 90, 95, 100, 100.1, 99.5, 98.9, 110, 109.5, 50]  # (100 % itself is rated: domain.md §1.2)
    assert levels(rule, seq) == [0, 0, 1, 1, 1, 2, 2, 1, 3, 3, 0]


def test_oxygen_low_clears_only_past_the_deadband() -> None:
    rule = default_rules()["gas.o2_low"]  # < 19.5 %VOL (19.5 itself is safe: domain.md §4.2), deadband 0.2
    assert levels(rule, [20.9, 19.5, 19.49, 19.6, 19.69, 19.71, 19.4]) == [0, 0, 2, 2, 2, 0, 2]


def test_tilt_either_way() -> None:
    rule = default_rules()["tc.tilt_x"].model_copy(update={"when": []})  # ungated here; gates: test_rule_table
    # compliant at <= 4/1000 (domain.md §1.2): a deviation is beyond it
    assert levels(rule, [0.5, -3.9, -4.0, -4.01, 4.2, 1.0]) == [0, 0, 0, 2, 2, 0]


def test_on_and_off_delays_use_the_injected_clock() -> None:
    base = default_rules()["gas.lel"]
    rule = base.model_copy(update={"on_delay_s": 5.0, "off_delay_s": 3.0})
    # one reading a second: 30 %LEL must hold 5 s before the alarm, then clear 3 s after the value is back
    seq = [30.0] * 7 + [0.0] * 5
    assert levels(rule, seq) == [0, 0, 0, 0, 0, 2, 2, 2, 2, 2, 0, 0]
    # a 3-second spike never becomes an alarm
    assert levels(rule, [30, 30, 30, 0, 0, 0, 0]) == [0] * 7


def test_days_of_data_in_milliseconds() -> None:
    rule = default_rules()["fw.pole_tilt"]
    th = [t.model_copy(update={"value": 30.0}) for t in rule.thresholds]
    rule = rule.model_copy(update={"thresholds": th, "on_delay_s": 6 * 3600})
    # hourly readings over 5 days, creeping 0.5 per hour from 0: crosses 30 at hour 60, raised 6 h later
    got = levels(rule, [0.5 * h for h in range(120)], step_s=3600)
    assert got.index(2) == 66


def test_bad_quality_and_unknown_devices_are_not_evaluated() -> None:
    rule = default_rules()["gas.lel"]
    ev = Evaluator({"G": [rule]}, {"G": DeviceContext("gas")})
    assert ev.observe(Reading("G", "lel", 80, 0, Quality.BAD), 0) == []
    assert ev.observe(Reading("X", "lel", 80, 0), 0) == []
    (t,) = ev.observe(Reading("G", "lel", 80, 0), 0)
    assert (t.old, t.new, t.value, t.threshold.value if t.threshold else None) == (Level.NORMAL, Level.DANGER, 80, 50)
    assert t.threshold is not None and t.threshold.source.cite() == "GB/T 50493-2019 5.5.2 [S+]"


def test_a_broken_pack_names_file_and_rule(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(
        "kind: gas\nrules:\n  - {id: x.lel, title_zh: a, title_en: b, kind: gas, quantity: lel, direction: high,\n"
        "     thresholds: [{level: 2, value: 50, source: {standard: s, confidence: S}},\n"
        "                  {level: 3, value: 25, source: {standard: s, confidence: S}}]}\n"
    )
    with pytest.raises(
        PackError,
        match=r"bad.yaml: invalid rule pack\n  rules.0: Value error, threshold values must "
        r"get higher with the level: \[50.0, 25.0\]",
    ):
        load_pack(f)


def test_schema_rejects_inconsistent_rules() -> None:
    base = default_rules()["gas.co"].model_dump()
    cases: list[tuple[dict[str, Any], str]] = [
        ({"measure": "window_mean"}, "needs window_s"),
        ({"window_s": 60}, "window_s applies to rate_per_day, rate_percent_of_warning and window_mean"),
        ({"measure": "frozen"}, "device-health rule"),
        ({"measure": "calendar"}, "calendar rule has quantity"),
        ({"consecutive_days": {"days": 3, "fraction": 0.7}}, "consecutive_days applies to rate rules"),
        ({"when": [{"quantity": "nope", "op": "==", "value": 1}]}, "unknown quantity 'nope'"),
        ({"when": [{"quantity": "up", "op": "!=", "value": 1}]}, "Input should be"),
    ]
    for change, msg in cases:
        with pytest.raises(ValueError, match=msg):
            Rule.model_validate({**base, **change})


def test_measured_units() -> None:
    rules = default_rules()
    got = {rid: rules[rid].measured_unit for rid in ("gas.co_twa", "exc.strut_force", "exc.deep_displacement_rate")}
    assert got == {"gas.co_twa": "ppm", "exc.strut_force": "%", "exc.deep_displacement_rate": "%"}
    assert rules["health.calibration_overdue"].unit == "d"
