"""Physically consistent signal models per device kind, seeded and advanced by an injected clock."""

from __future__ import annotations

import math
import re
import time
import zlib
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from alerting.derived import rated_load_at
from gateway.config import Device
from simulators.scenarios import Scenario
from telemetry.kinds import DeviceKind

Values = dict[str, float]

# A QTZ80-like chart for cranes configured without one.
_DEFAULT_CHART = [(2.5, 6.0), (12.0, 6.0), (20.0, 3.6), (30.0, 2.2), (40.0, 1.55), (50.0, 1.2)]
_DEPTH = re.compile(r"_d(\d+(?:\.\d+)?)m$")
_NAN = float("nan")


def rng_for(seed: int, device_id: str) -> np.random.Generator:
    """One independent, reproducible stream per device (crc32, not hash(): stable across processes)."""
    return np.random.default_rng([seed, zlib.crc32(device_id.encode())])


def _smooth(frac: float) -> float:
    """Smoothstep: motors accelerate and brake instead of jumping to full speed."""
    f = min(1.0, max(0.0, frac))
    return f * f * (3.0 - 2.0 * f)


class Model(ABC):
    """A device's physical process; `advance(t)` moves it to `t` seconds after start and returns its values."""

    kind: DeviceKind

    def __init__(
        self, device: Device, quantities: list[str], rng: np.random.Generator, scenario: Scenario, time_scale: float
    ) -> None:
        self.device = device
        self.quantities = quantities
        self.rng = rng
        self.scenario = scenario
        self.time_scale = time_scale
        self.last_t: float | None = None

    def param(self, name: str, t: float, default: float) -> float:
        return self.scenario.param(self.kind, name, t, default)

    def noise(self, sigma: float) -> float:
        return float(self.rng.normal(0.0, sigma))

    def advance(self, t: float) -> Values:
        dt = 0.0 if self.last_t is None else max(0.0, t - self.last_t)
        self.last_t = t
        return self.step(t, dt)

    @abstractmethod
    def step(self, t: float, dt: float) -> Values: ...

    @abstractmethod
    def static(self) -> Values:
        """Deterministic known values for the `static` scenario."""


@dataclass
class _Segment:
    dur: float
    target: dict[str, float]
    hoisting: bool = False


class CraneModel(Model):
    """Lift cycles: trolley and slew to the pick, hook down, pick 0.5-1.0 x rated, hoist, travel, set down."""

    kind = DeviceKind.TOWER_CRANE
    H_TOP = 35.0  # hook height between lifts, m

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        device, rng = self.device, self.rng
        chart = [(p.radius_m, p.rated_load_t) for p in device.load_chart] if device.load_chart else _DEFAULT_CHART
        chart.sort()
        self.chart = tuple(chart)
        self.radii = np.array([c[0] for c in chart])
        self.loads = np.array([c[1] for c in chart])
        self.max_load = float(self.loads.max())
        self.flat_r = float(self.radii[self.loads >= self.max_load].max())  # end of the chart's constant part
        self.max_moment = float((self.radii * self.loads).max())
        # where a careful operator may set a load down: the rated load on a grid of the jib, made once
        self.grid = np.linspace(float(self.radii[0]), float(self.radii[-1]), 400)
        self.grid_rated = np.array([self.rated(float(r)) for r in self.grid])
        self.pose = {"radius": 15.0, "slew": 0.0, "hook": self.H_TOP, "load": 0.0}
        self.start = dict(self.pose)
        self.plan: deque[_Segment] = deque()
        self.seg = _Segment(0.0, {})
        self.seg_t0 = 0.0
        self.wind_mean0 = float(rng.uniform(2.5, 4.5))
        self.wind = self.wind_mean0
        self.gust = 0.0
        self.tilt0 = (float(rng.uniform(-0.3, 0.3)), float(rng.uniform(-0.3, 0.3)))

    def rated(self, radius: float) -> float:
        """Rated load at `radius` as the gateway reads the chart (rated moment linear between points, clamped at
        both ends): a lift made at N % of rated is derived as N % (alerting/derived.py rated_load_at)."""
        found = rated_load_at(self.chart, radius)
        assert found is not None  # (a chart, the device's or the default, is never empty)
        return found[0]

    def _slew_target(self, slew: float) -> float:
        turn = float(self.rng.uniform(30.0, 150.0))
        if abs(slew) > 360:  # turn back toward zero once far out, as an operator unwinds the cable loom
            return slew - math.copysign(turn, slew)
        return slew + turn * float(self.rng.choice([-1, 1]))

    def _plan_cycle(self, t: float) -> None:
        r_min, r_max = float(self.radii[0]), float(self.radii[-1])
        factor = self.param("pick_factor", t, _NAN)
        if math.isnan(factor):
            factor = float(self.rng.uniform(0.5, 1.0))
        if factor > 1.0:  # overload lift: pick where the chart is flat so both limiters trip, stay there
            r_pick = float(self.rng.uniform(r_min, self.flat_r))
            r_drop = r_pick
        else:
            r_pick = float(self.rng.uniform(r_min + 1.0, 0.9 * r_max))
        load = factor * self.rated(r_pick)
        if factor <= 1.0:  # a careful operator sets down only where the load is within 95 % of rated
            reach = float(self.grid[self.grid_rated * 0.95 >= load].max(initial=r_min))
            r_drop = float(self.rng.uniform(r_min, max(r_min, reach)))
        s_pick = self._slew_target(self.pose["slew"])
        s_drop = self._slew_target(s_pick)
        self.plan.extend(
            [
                _Segment(8, {"radius": r_pick, "slew": s_pick}),
                _Segment(8, {"hook": float(self.rng.uniform(0.5, 2.0))}),
                _Segment(3, {"load": load}),
                _Segment(12, {"hook": self.H_TOP}, hoisting=True),
                _Segment(14, {"radius": r_drop, "slew": s_drop}),
                _Segment(8, {"hook": float(self.rng.uniform(2.0, 25.0))}),
                _Segment(3, {"load": 0.0}),
                _Segment(6, {"hook": self.H_TOP}, hoisting=True),
                _Segment(5, {}),
            ]
        )

    def _wind(self, t: float, dt: float) -> float:
        # Ornstein-Uhlenbeck around the (scenario) mean, exact for any dt, plus Poisson gusts decaying in ~6 s
        mu, theta, sigma = self.param("wind_mean", t, self.wind_mean0), 0.1, 0.5
        decay = math.exp(-theta * dt)
        self.wind = mu + (self.wind - mu) * decay + sigma * math.sqrt((1 - decay**2) / (2 * theta)) * self.noise(1.0)
        self.gust *= math.exp(-dt / 6.0)
        if self.rng.random() < 1.0 - math.exp(-dt / 90.0):
            self.gust += float(self.rng.uniform(2.0, 5.0))
        return max(0.0, self.wind + self.gust)

    def step(self, t: float, dt: float) -> Values:
        while t >= self.seg_t0 + self.seg.dur:
            self.pose.update(self.seg.target)
            self.seg_t0 += self.seg.dur
            if not self.plan:
                self._plan_cycle(self.seg_t0)
            self.seg = self.plan.popleft()
            self.start = dict(self.pose)
        f = _smooth((t - self.seg_t0) / self.seg.dur)
        now = {k: v + (self.seg.target.get(k, v) - v) * f for k, v in self.start.items()}
        load = now["load"] + self.noise(0.003)
        return self._derive(now["radius"], now["slew"], now["hook"], load, self._wind(t, dt), self.seg.hoisting)

    def _derive(self, radius: float, slew: float, hook: float, load: float, wind: float, hoisting: bool) -> Values:
        rated = self.rated(radius)
        ratio = load / rated * 100.0
        sway = 0.8 * load * radius / self.max_moment  # ~0.8 permille at the chart's largest moment
        rad = math.radians(slew)
        return {
            "load": load,
            "rated_load": rated,
            "load_ratio": ratio,
            "load_moment": load * radius,
            "load_moment_ratio": ratio,
            "radius": radius,
            "hook_height": hook,
            "slew_angle": slew,
            "wind_speed": wind,
            "tilt_x": self.tilt0[0] + sway * math.cos(rad) + 0.02 * wind + self.noise(0.02),
            "tilt_y": self.tilt0[1] + sway * math.sin(rad) + self.noise(0.02),
            "limit_load": float(load > self.max_load),
            "limit_moment": float(ratio > 100.0),
            "limit_height": float(hook > self.H_TOP + 3.0),
            "limit_radius": float(radius > float(self.radii[-1])),
            "limit_slew": 0.0,
            "hoisting_up": float(hoisting),
            "limiter_bypass": 0.0,
        }

    def static(self) -> Values:
        rated = self.rated(20.0)
        v = self._derive(20.0, 90.0, 30.0, rated / 2, 3.5, False)
        v.update(tilt_x=0.2, tilt_y=-0.1)
        return v


class ExcavationModel(Model):
    """Wall displacement and settlement trending in mm/day, inclinometer profile, strut force, water level."""

    kind = DeviceKind.EXCAVATION

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        rng = self.rng
        self.h0, self.v0 = float(rng.uniform(2, 8)), float(rng.uniform(2, 8))
        self.rate_h, self.rate_v = float(rng.uniform(0.5, 2.0)), float(rng.uniform(0.5, 2.0))
        self.h_acc = self.v_acc = 0.0
        self.design_kN = float(rng.uniform(1500, 3000))
        self.water0 = float(rng.uniform(-4.5, -2.5))
        self.phase = float(rng.uniform(0, 2 * math.pi))
        self.epoch0 = time.time()
        # the inclinometer depths come from the profile's quantity names (deep_displacement_d<z>m)
        self.depths = [float(m[1]) for n in self.quantities if (m := _DEPTH.search(n))]

    def _profile(self, top: float) -> Values:
        z_max = 1.5 * max(self.depths, default=10.0)  # the wall is fixed well below the deepest sensor
        return {f"deep_displacement_d{z:g}m": top * (1 - z / z_max) ** 2 for z in self.depths}

    def step(self, t: float, dt: float) -> Values:
        days_dt = dt * self.time_scale / 86400.0
        self.h_acc += self.param("rate_mm_d", t, self.rate_h) * days_dt
        self.v_acc += self.param("rate_mm_d", t, self.rate_v) * days_dt
        sim_epoch = self.epoch0 + t * self.time_scale
        hour = ((sim_epoch + 8 * 3600) % 86400) / 3600  # China time: struts peak with the 14:00 temperature
        days = t * self.time_scale / 86400.0
        top = self.h0 + self.h_acc
        v = {k: x + self.noise(0.02) for k, x in self._profile(1.2 * top).items()}
        v.update(
            horizontal_displacement=top + self.noise(0.05),
            vertical_displacement=-(self.v0 + self.v_acc) + self.noise(0.05),
            strut_force=self.design_kN * (1 + 0.05 * math.sin(2 * math.pi * (hour - 8) / 24)) + self.noise(3.0),
            groundwater_level=self.water0 + 0.3 * math.sin(2 * math.pi * days / 3 + self.phase) + self.noise(0.003),
        )
        return v

    def static(self) -> Values:
        v = {k: round(x, 2) for k, x in self._profile(6.0).items()}
        v.update(horizontal_displacement=5.0, vertical_displacement=-3.0, strut_force=2000.0, groundwater_level=-3.5)
        return v


class FormworkModel(Model):
    """High formwork: near-constant with noise; during a pour settlement, tilt and axial force follow the load."""

    kind = DeviceKind.FORMWORK

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        rng = self.rng
        self.base = {
            "settlement": float(rng.uniform(0.2, 0.6)),
            "pole_tilt": float(rng.uniform(-0.2, 0.2)),
            "axial_force": float(rng.uniform(8, 15)),
            "horizontal_displacement": float(rng.uniform(0.0, 0.3)),
        }

    # response to the full design load per quantity, and sensor noise
    _FULL: ClassVar[Values] = {"settlement": 6.0, "pole_tilt": 1.5, "axial_force": 35.0, "horizontal_displacement": 1.2}
    _SIGMA: ClassVar[Values] = {
        "settlement": 0.02,
        "pole_tilt": 0.01,
        "axial_force": 0.2,
        "horizontal_displacement": 0.02,
    }

    def step(self, t: float, dt: float) -> Values:
        poured = self.param("poured", t, 0.0)
        return {q: b + self._FULL[q] * poured + self.noise(self._SIGMA[q]) for q, b in self.base.items()}

    def static(self) -> Values:
        return {"settlement": 0.5, "pole_tilt": 0.1, "axial_force": 12.0, "horizontal_displacement": 0.2}


class GasModel(Model):
    """Four-gas detector in clean air (never negative), or a leak ramping LEL up and O2 down."""

    kind = DeviceKind.GAS

    def step(self, t: float, dt: float) -> Values:
        return {
            "lel": max(0.0, self.param("lel_mean", t, 0.0) + self.noise(0.3)),
            "o2": max(0.0, 20.9 - self.param("o2_drop", t, 0.0) + self.noise(0.05)),
            "h2s": max(0.0, self.noise(0.2)),
            "co": max(0.0, self.noise(0.5)),
            "sensor_fault": 0.0,
            "calibrating": 0.0,
        }

    def static(self) -> Values:
        return {"lel": 0.0, "o2": 20.9, "h2s": 0.0, "co": 0.0, "sensor_fault": 0.0, "calibrating": 0.0}


MODELS: dict[DeviceKind, type[Model]] = {
    DeviceKind.TOWER_CRANE: CraneModel,
    DeviceKind.EXCAVATION: ExcavationModel,
    DeviceKind.FORMWORK: FormworkModel,
    DeviceKind.GAS: GasModel,
}
