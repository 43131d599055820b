"""Named scenarios: timed steps that ramp model parameters (overload, gust, pour, leak) or freeze everything."""

from __future__ import annotations

import math
from dataclasses import dataclass

from telemetry.kinds import DeviceKind


@dataclass(frozen=True, slots=True)
class Step:
    """From `at` seconds after start, ramp parameter `param` of every model of `kind` to `value` over `ramp_s`."""

    at: float
    kind: DeviceKind
    param: str
    value: float
    ramp_s: float = 0.0


# Parameters read by simulators.signals; a model uses its own default until a step sets one.
SCENARIOS: dict[str, list[Step]] = {
    "normal": [],
    # every lift from now on picks 105 % of the rated load (at a radius in the flat part of the chart)
    "crane_overload": [Step(0.0, DeviceKind.TOWER_CRANE, "pick_factor", 1.05)],
    "wind_gust": [Step(10.0, DeviceKind.TOWER_CRANE, "wind_mean", 14.0, ramp_s=30.0)],
    "excavation_fast": [Step(0.0, DeviceKind.EXCAVATION, "rate_mm_d", 5.0)],
    # a pour starting after 10 s and lasting 3 minutes: the full design load arrives linearly
    "formwork_pour": [Step(10.0, DeviceKind.FORMWORK, "poured", 1.0, ramp_s=180.0)],
    "gas_leak": [
        Step(10.0, DeviceKind.GAS, "lel_mean", 40.0, ramp_s=120.0),
        Step(10.0, DeviceKind.GAS, "o2_drop", 0.6, ramp_s=120.0),
    ],
    "static": [],  # handled by Scenario.static: every value frozen at signals.STATIC
}


class Scenario:
    """One or more named scenarios combined ("wind_gust,gas_leak"); parameters are pure functions of time."""

    def __init__(self, spec: str = "normal") -> None:
        names = [n.strip() for n in spec.split(",") if n.strip()] or ["normal"]
        unknown = [n for n in names if n not in SCENARIOS]
        if unknown:
            raise ValueError(f"unknown scenario {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
        self.names = names
        self.static = "static" in names
        self.steps = sorted((s for n in names for s in SCENARIOS[n]), key=lambda s: s.at)

    def param(self, kind: DeviceKind, name: str, t: float, default: float) -> float:
        """Value of a parameter at `t` s after start: each step ramps from the previous value to its own."""
        value = default
        for s in self.steps:
            if s.kind is not kind or s.param != name or t < s.at:
                continue
            frac = 1.0 if s.ramp_s <= 0 else min(1.0, (t - s.at) / s.ramp_s)
            start = s.value if math.isnan(value) else value  # NaN default: "unset", the step applies at once
            value = start + (s.value - start) * frac
        return value
