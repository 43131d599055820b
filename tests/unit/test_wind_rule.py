"""The crane wind rule says what it compares: each sample by default (conservative), or a mean the project sets."""

from __future__ import annotations

from alerting.derived import DeviceContext
from alerting.evaluator import Evaluator
from alerting.overrides import RulesConfig, resolve_rules
from alerting.rules import Level, default_rules
from telemetry.reading import Reading

S = 1_000_000_000
PLAN = {"standard": "XX塔吊专项方案", "clause": "6.2 风速", "confidence": "P"}


def gusts(ev: Evaluator) -> list[tuple[int, int]]:
    """Ten minutes at 6 m/s with a 20 s gust of 12 m/s in the middle, one sample a second."""
    out = []
    for i in range(600):
        v = 12.0 if 300 <= i < 320 else 6.0
        out += [
            (int(t.new), i) for t in ev.observe(Reading("TC", "wind_speed", v, i * S), i * S) if t.rule == "tc.wind"
        ]
    return out


def evaluator(overrides: list[dict[str, object]]) -> Evaluator:
    ctx = {"TC": DeviceContext("tower_crane")}
    rules = resolve_rules(default_rules(), RulesConfig.model_validate({"overrides": overrides}), ctx)
    return Evaluator(rules, ctx)


def test_by_default_every_sample_is_compared_at_once() -> None:
    assert default_rules()["tc.wind"].measure == "value" and default_rules()["tc.wind"].on_delay_s == 0
    # the gust's first sample raises 报警 (10.8 m/s), the first calm one clears it (no off-delay by default)
    assert gusts(evaluator([])) == [(2, 300), (0, 320)]


def test_a_project_may_compare_a_ten_minute_mean_and_hold_the_stop() -> None:
    mean = evaluator([{"rule": "tc.wind", "measure": "window_mean", "window_s": 600, "source": PLAN}])
    assert gusts(mean) == []  # the 10 min mean stays near 6.4 m/s
    held = evaluator([{"rule": "tc.wind", "off_delay_s": 120, "source": PLAN}])
    got = gusts(held)
    assert got == [(2, 300), (0, 440)]  # cleared only after 120 s below the limit
    assert held.level("tc.wind", "TC") is Level.NORMAL


def test_only_a_value_rule_can_become_a_mean() -> None:
    import pytest

    ctx = {"P": DeviceContext("excavation")}
    bad = RulesConfig.model_validate(
        {"overrides": [{"rule": "exc.strut_force", "measure": "window_mean", "window_s": 60, "source": PLAN}]}
    )
    with pytest.raises(ValueError, match=r"rules.overrides\[0\].measure: rule exc.strut_force measures"):
        resolve_rules(default_rules(), bad, ctx)
