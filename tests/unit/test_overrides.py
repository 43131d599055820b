"""Per-project overrides: applied per device with their own source, clear errors, and check-config's gaps."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from alerting.baselines import Baselines
from alerting.db import connect
from alerting.derived import DeviceContext
from alerting.evaluator import Evaluator
from alerting.overrides import RulesConfig, missing_values, resolve_rules
from alerting.rules import Level, Rule, default_rules
from telemetry.reading import Reading

DEVICES = {
    "inc1": DeviceContext("excavation"),
    "inc2": DeviceContext("excavation"),
    "s1": DeviceContext("excavation"),
    "TC1": DeviceContext("tower_crane", wind_limit_ms=9.0),
    "G1": DeviceContext("gas"),
}
PLAN = {"standard": "XX基坑监测方案", "clause": "表3", "confidence": "P"}


def cfg(text: str) -> RulesConfig:
    return RulesConfig.model_validate(yaml.safe_load(text))


def by_id(rules: list[Rule]) -> dict[str, Rule]:
    return {r.id: r for r in rules}


def values(rule: Rule) -> list[tuple[int, float | None, str]]:
    return [(int(t.level), t.value, t.source.cite()) for t in rule.thresholds]


def test_defaults_per_kind_plus_health() -> None:
    got = resolve_rules(default_rules(), None, DEVICES)
    assert set(got) == set(DEVICES)
    ids = set(by_id(got["G1"]))
    assert {"gas.lel", "gas.co_stel", "health.stale", "health.calibration_overdue"} <= ids
    assert not any(i.startswith(("tc.", "exc.", "fw.")) for i in ids)
    assert got["TC1"] and all(r.applies_to("tower_crane") for r in got["TC1"])


def test_overrides_apply_per_device_and_keep_the_rule_id() -> None:
    c = cfg(
        f"""
overrides:
  - rule: exc.horizontal_displacement
    thresholds: {{1: 60, 2: 100}}
    source: {PLAN}
  - rule: exc.horizontal_displacement
    devices: [inc2]
    thresholds: {{1: 50}}
    deadband: 0.5
    source: {{standard: "XX基坑监测方案", clause: "表3 地铁侧", confidence: P}}
  - rule: exc.horizontal_displacement_rate
    devices: [inc1]
    thresholds: {{1: 80}}
    consecutive: {{1: 2}}
    source: {PLAN}
"""
    )
    got = resolve_rules(default_rules(), c, DEVICES)
    inc1, inc2, s1 = by_id(got["inc1"]), by_id(got["inc2"]), by_id(got["s1"])
    assert values(inc1["exc.horizontal_displacement"]) == [
        (1, 60, "XX基坑监测方案 表3 [P]"),
        (2, 100, "XX基坑监测方案 表3 [P]"),
    ]
    # the device-specific override comes on top of the general one, whatever the file order
    assert values(inc2["exc.horizontal_displacement"]) == [
        (1, 50, "XX基坑监测方案 表3 地铁侧 [P]"),
        (2, 100, "XX基坑监测方案 表3 [P]"),
    ]
    assert (inc2["exc.horizontal_displacement"].deadband, inc1["exc.horizontal_displacement"].deadband) == (0.5, 0)
    watch = inc1["exc.horizontal_displacement_rate"].thresholds[0]
    assert (watch.value, watch.consecutive) == (80, 2)
    assert watch.consecutive_source is not None and watch.consecutive_source.cite() == "XX基坑监测方案 表3 [P]"
    assert inc2["exc.horizontal_displacement_rate"].thresholds[0].consecutive == 1  # only inc1 got the plan's count
    assert s1["exc.horizontal_displacement"].id == "exc.horizontal_displacement"
    assert default_rules()["exc.horizontal_displacement"].thresholds[0].value == 70  # defaults untouched


def test_wind_override_keeps_the_device_limit() -> None:
    c = cfg(f"overrides: [{{rule: tc.wind, thresholds: {{2: 12.0}}, source: {PLAN}}}]")
    (wind,) = [r for r in resolve_rules(default_rules(), c, DEVICES)["TC1"] if r.id == "tc.wind"]
    assert [(t.value, t.stricter_of_device) for t in wind.thresholds] == [(8.0, None), (12.0, "wind_limit_ms")]


def test_disabled_rules_are_dropped() -> None:
    c = cfg("disabled: [{rule: gas.co_twa, reason: 检测仪只在进入前使用 (no 8 h exposure)}]")
    got = by_id(resolve_rules(default_rules(), c, DEVICES)["G1"])
    assert "gas.co_twa" not in got and "gas.co_stel" in got
    with pytest.raises(ValidationError, match="reason"):
        cfg("disabled: [{rule: gas.co_twa}]")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            f"overrides: [{{rule: exc.horizontal_displacment, thresholds: {{1: 5}}, source: {PLAN}}}]",
            r"rules.overrides\[0\].rule: unknown rule 'exc.horizontal_displacment'; rules of that family: "
            r"exc.deep_displacement,",
        ),
        (
            f"overrides: [{{rule: exc.strut_force, devices: [s9], thresholds: {{1: 70}}, source: {PLAN}}}]",
            r"rules.overrides\[0\].devices: unknown device 's9'; devices: G1, TC1, inc1, inc2, s1",
        ),
        (
            f"overrides: [{{rule: exc.strut_force, devices: [TC1], thresholds: {{1: 70}}, source: {PLAN}}}]",
            r"rules.overrides\[0\].devices: TC1 is a tower_crane device; rule exc.strut_force is for excavation",
        ),
        (
            f"overrides: [{{rule: exc.strut_force, thresholds: {{2: 80}}, source: {PLAN}}}]",
            r"rules.overrides\[0\].thresholds: rule exc.strut_force has no level 2; its levels: 1 \(预警\)",
        ),
        (
            f"overrides: [{{rule: exc.vertical_displacement, thresholds: {{1: 100, 2: 70}}, source: {PLAN}}}]",
            r"rules.overrides\[0\]: rule exc.vertical_displacement: threshold values must get higher with the level",
        ),
        (
            f"overrides: [{{rule: gas.lel, window_s: 60, source: {PLAN}}}]",
            r"rules.overrides\[0\]: rule gas.lel: window_s applies to rate_per_day, rate_percent_of_warning and "
            r"window_mean rules only",
        ),
        (
            f"disabled: [{{rule: gas.lel, reason: x}}]\noverrides: [{{rule: gas.lel, thresholds: {{2: 20}}, "
            f"source: {PLAN}}}]",
            r"rules.overrides\[0\].rule: rule gas.lel is also disabled",
        ),
        ("disabled: [{rule: gas.nope, reason: x}]", r"rules.disabled\[0\].rule: unknown rule 'gas.nope'"),
    ],
)
def test_bad_overrides(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        resolve_rules(default_rules(), cfg(text), DEVICES)


@pytest.mark.parametrize(
    "data",
    [
        {"overrides": [{"rule": "gas.lel", "thresholds": {2: 20}}]},  # no source
        {"overrides": [{"rule": "gas.lel", "thresholds": {2: 20}, "source": PLAN, "extra": 1}]},
        {"overrides": [{"rule": "gas.lel", "deadband": -1, "source": PLAN}]},
        {"override": []},
    ],
)
def test_config_model_is_strict(data: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        RulesConfig.model_validate(data)


def test_missing_values_for_check_config() -> None:
    devices = {
        "inc1": DeviceContext("excavation"),
        "s1": DeviceContext("excavation", design_values={"strut_force": 3000}),
        "s2": DeviceContext("excavation"),
        "G1": DeviceContext("gas"),
    }
    c = cfg(f"overrides: [{{rule: exc.strut_force, devices: [s1], thresholds: {{1: 70}}, source: {PLAN}}}]")
    rules = resolve_rules(default_rules(), c, devices)
    msgs = missing_values(rules, devices)
    assert (
        "device inc1: exc.horizontal_displacement needs warning_values.horizontal_displacement.cumulative "
        "(the design 预警值, GB 50497-2019 8.0.1, 8.0.3)" in msgs
    )
    assert "device s2: exc.strut_force needs design_values.strut_force" in msgs
    assert not any(m.startswith("device s1: rule exc.strut_force") or "s1: exc.strut_force" in m for m in msgs)
    # one line for every device without the date (it was one line per device: 200 lines on a site of 200)
    undated = [m for m in msgs if "calibration_due" in m]
    assert undated == [
        "4 device(s): health.calibration_overdue needs calibration_due (the date a device's calibration falls due): "
        "G1, inc1, s1, s2"
    ]
    assert not any(m.startswith("device G1: rule gas.") for m in msgs)  # gas has defaults for everything
    # with the baseline store: cumulative rules waiting for a 初始值
    b = Baselines(connect(":memory:"), lambda: 0)
    b.set("inc1", "horizontal_displacement", 1.0, "surveyor")
    waits = [m for m in missing_values(rules, devices, b) if "waits for a baseline" in m]
    assert not any(m.startswith("device inc1: exc.horizontal_displacement waits") for m in waits)
    assert any(m.startswith("device inc1: exc.vertical_displacement waits for a baseline") for m in waits)


def test_resolved_rules_run_in_the_evaluator() -> None:
    devices = {"s1": DeviceContext("excavation", design_values={"strut_force": 3000})}
    c = cfg(f"overrides: [{{rule: exc.strut_force, thresholds: {{1: 70}}, source: {PLAN}}}]")
    ev = Evaluator(resolve_rules(default_rules(), c, devices), devices)
    (t,) = ev.observe(Reading("s1", "strut_force", 2100.0, 0), 0)
    assert (t.rule, t.new, t.value) == ("exc.strut_force", Level.PREWARNING, 70.0)
    assert t.threshold is not None and t.threshold.source.cite() == "XX基坑监测方案 表3 [P]"
