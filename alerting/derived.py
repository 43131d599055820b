"""Readings the gateway derives from others (crane load as % of the load chart) and what rules need of a device."""

from __future__ import annotations

import bisect
import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, time

from alerting.config import WarningValues
from alerting.rules import Source
from telemetry import quantities
from telemetry.reading import Quality, Reading, make_reading


@dataclass(frozen=True, slots=True)
class DeviceContext:
    """The parts of a device's configuration the rules and the deriver need (kind, limits, design values)."""

    kind: str
    load_chart: tuple[tuple[float, float], ...] = ()  # (radius m, rated load t), sorted by radius
    wind_limit_ms: float | None = None
    design_values: Mapping[str, float] = field(default_factory=dict)
    calibration_due: date | None = None
    expected_interval_s: float | None = None
    # a surveyed point's run of days counts survey days from this local time (12:00 for surveys at night), not
    # calendar days: a night's survey taken after midnight is that night's (alerting/windows.py DailySeries)
    survey_day_starts: time = time(0)
    # base quantities the device can report (depth families by their base name, derived ones included);
    # None = unknown (tests): every rule of the kind applies
    provides: frozenset[str] | None = None
    # excavation points: the design 预警值 by base quantity, resolved (min of absolute and %h x h)
    warning_values: Mapping[str, WarningLimit] = field(default_factory=dict)
    # what a rule's `when` gate can read on the device (`gate_quantities`); None = unknown (tests)
    gates: frozenset[str] | None = None


@dataclass(frozen=True)
class WarningLimit:
    """A point's design 预警值 for one quantity: the cumulative limit in force and the rate limit, in the
    quantity's catalog unit, with how the cumulative one was chosen and where the numbers come from."""

    cumulative: float | None
    rate: float | None
    source: Source
    basis: str  # e.g. "min(30 mm, 0.25 %h x 12 m = 30 mm)"

    @classmethod
    def resolve(cls, quantity: str, w: WarningValues, depth_m: float | None) -> WarningLimit:
        unit = quantities.lookup(quantity).unit
        options: list[tuple[float, str]] = []
        if w.cumulative is not None:
            options.append((w.cumulative, f"{w.cumulative:g} {unit}"))
        if w.cumulative_percent_h is not None and depth_m is not None:
            to_unit = quantities.converter("m", unit) if unit != "m" else None
            h_value = w.cumulative_percent_h / 100 * depth_m
            v = to_unit(h_value) if to_unit else h_value
            options.append((v, f"{w.cumulative_percent_h:g} %h x {depth_m:g} m = {v:g} {unit}"))
        chosen = min(options, key=lambda o: o[0]) if options else None
        basis = ""
        if chosen is not None:
            basis = (
                chosen[1] if len(options) == 1 else f"min({', '.join(o[1] for o in options)}) = {chosen[0]:g} {unit}"
            )
        return cls(chosen[0] if chosen else None, w.rate_per_day, w.source, basis)


# quantities every device has (the supervisor's `up`, the calendar) and those derived from others
_ALWAYS = frozenset({"up", "calibration_due", "decode_errors", "clock_skew", "inspection_danger", "*"})
_DERIVED = {"load_ratio": "load"}


def provides(names: Iterable[str]) -> frozenset[str]:
    """The base quantities a device with these reported quantities provides to rules (derived and implicit ones in)."""
    return _provides(tuple(names))


@functools.lru_cache(maxsize=256)
def _provides(names: tuple[str, ...]) -> frozenset[str]:
    # one set per profile, not per device: 2 000 devices of one profile held 2 000 equal sets (2.5 MB)
    base = {quantities.lookup(n).name for n in names}
    base |= {d for d, src in _DERIVED.items() if src in base}
    return frozenset(base | _ALWAYS)


def gate_quantities(names: Iterable[str]) -> frozenset[str]:
    """The quantities a `when` gate can read on a device with these reported quantities: each as its readings name
    it (a depth family at its depths: a gate on the base name, or on a depth not read, never sees a value), the
    derived and the implicit ones."""
    return _gates(tuple(names))


@functools.lru_cache(maxsize=256)
def _gates(names: tuple[str, ...]) -> frozenset[str]:
    base = {quantities.lookup(n).name for n in names}
    # `up` comes with a device's first data; the other implicit ones come when they change only (CHANGES_ONLY)
    return frozenset(names) | {d for d, src in _DERIVED.items() if src in base} | {"up"}


# health states sent only when they change (gateway/timecheck.py, gateway/liveness.py; an inspection's finding): a
# device that never had the fault has no reading of them, and a gate on them never opens
CHANGES_ONLY = frozenset({"clock_skew", "decode_errors", "inspection_danger"})


def rated_load_at(chart: tuple[tuple[float, float], ...], radius_m: float) -> tuple[float, bool] | None:
    """(rated load, beyond the chart) at `radius_m`; None for an empty chart.

    Between two chart points the rated MOMENT (load x radius) is interpolated linearly and divided by the radius.
    The moment at the current radius is the key overload quantity and its limiter acts above 100 % of it
    (domain.md §1.1 and §1.2, the load-moment lines); past the chart's flat part a tower crane's rated moment is
    constant, and a straight line in load over-stated the rated load there (demo chart, 12 m x 6.0 t = 20 m x 3.6 t
    = 72 t·m: 4.8 t at 16 m where 72/16 = 4.5 t, so a lift at 110 % of rated moment read 103 %, 报警 for 危险). The
    moment line is exact on flat and constant-moment segments and, where the load falls with the radius, never
    above the straight line (by (r1-r)(r-r0)(l1-l0) / (r(r1-r0)) <= 0): conservative. The simulators read the
    chart through this function too, so a lift meant at 90 % of rated is 90 % here.
    Taking the next point out instead (a step chart) over-states the ratio by up to the drop between two points:
    in the demo it raised 危险 (> 110 %) on lifts the crane rated at 90 %.
    Inside the first radius the first point applies. Beyond the chart's last radius the last point is used and
    flagged: the trolley cannot be past the jib end, so either the radius reading or the chart is wrong, and a
    ratio computed from it cannot be trusted.
    """
    if not chart:
        return None
    if radius_m > chart[-1][0]:
        return chart[-1][1], True
    # (radius_m,) sorts before every point at radius_m and after every point below it: the chart is searched as
    # it is, with no list of its radii made per load reading
    i = bisect.bisect_left(chart, (radius_m,))
    if i == 0 or chart[i][0] == radius_m:
        return chart[i][1], False
    # here r0 < radius_m < r1 and chart radii are > 0 (gateway config), so the division is by a positive radius
    (r0, l0), (r1, l1) = chart[i - 1], chart[i]
    m0 = l0 * r0
    return (m0 + (l1 * r1 - m0) * (radius_m - r0) / (r1 - r0)) / radius_m, False


class Deriver:
    """Derives `load_ratio` (load / rated load at the current radius x 100) for tower cranes.

    The rated load comes from the device's load chart, or without a chart from the crane's own `rated_load`
    reading. Load triggers a derivation; radius and rated load come from the same batch or the device's last
    known values. The derived reading has the load's timestamp and the worst quality of its inputs.
    """

    def __init__(self, devices: Mapping[str, DeviceContext]) -> None:
        self.devices = devices
        # device -> quantity -> (value, quality): the last known radius and rated load of each crane
        self._last: dict[str, dict[str, tuple[float, Quality]]] = {}

    def derive(self, batch: list[Reading]) -> list[Reading]:
        """New readings to add to the batch (the gateway stores them with the others)."""
        loads: list[Reading] | None = None  # (made for the first load: most batches of a site hold none)
        dev: str | None = None
        crane = False
        last: dict[str, tuple[float, Quality]] = {}
        for r in batch:
            if r.device is not dev:  # a poll or a message is a run of one device's readings: looked up once a run
                dev = r.device
                ctx = self.devices.get(dev)
                crane = ctx is not None and ctx.kind == "tower_crane"
                if crane:
                    got = self._last.get(dev)
                    if got is None:
                        got = self._last[dev] = {}
                    last = got
            if not crane:
                continue
            q = r.quantity
            if q == "load":
                if loads is None:
                    loads = []
                loads.append(r)
            elif q == "radius" or q == "rated_load":
                last[q] = (r.value, r.quality)
        out: list[Reading] = []
        for load in loads or ():
            d = self.derive_one(load)
            if d is not None:
                out.append(d)
        return out

    def derive_one(self, load: Reading) -> Reading | None:
        ctx = self.devices[load.device]
        last = self._last.get(load.device, {})
        radius = last.get("radius")
        if radius is None:
            return None
        quality = load.quality.worst(radius[1])  # (not max: NOT_READY is 3, BAD 2, and BAD is the worse)
        found = rated_load_at(ctx.load_chart, radius[0])
        if found is not None:
            rated, beyond = found
            if beyond:
                quality = quality.worst(Quality.UNCERTAIN)
        else:
            own = last.get("rated_load")
            if own is None:
                return None
            rated, quality = own[0], quality.worst(own[1])
        if rated <= 0:
            return None  # a crane reporting 0 t rated (e.g. at the jib end) gives no ratio, not infinity
        return make_reading(load.device, "load_ratio", load.value / rated * 100.0, load.ts_ns, quality)
