"""A rule bound to one device: the thresholds in force there (project values, device limits, design 预警值)."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field

from alerting.derived import DeviceContext
from alerting.rules import ANY_POINT, Confidence, Level, Rule, Source, Threshold


@dataclass(frozen=True, slots=True)
class Bound:
    """A rule with the thresholds in force on a device (values set, device limits applied). It names no device:
    devices where the same thresholds are in force share one (the evaluator keys its state by device)."""

    rule: Rule
    thresholds: tuple[tuple[Level, float, Threshold], ...]
    design: float | None  # percent_of_design: the device's design value; *_of_warning: the point's design 预警值
    # consecutive_days: (the limit each day's rate must be above, in measured_unit; the threshold an alarm cites)
    days: tuple[float, Threshold] | None = None
    # (sign, limit): a reading whose value * sign (its absolute value for sign 0) is below limit reaches no
    # threshold; None when the rule's measured value is not the reading's own (see quiet_limit)
    quiet: tuple[int, float] | None = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "quiet", quiet_limit(self.rule, self.thresholds))


def quiet_limit(rule: Rule, thresholds: tuple[tuple[Level, float, Threshold], ...]) -> tuple[int, float] | None:
    """What lets the evaluator pass over a reading with nothing to do without stepping its rule: for a rule that
    compares the reading's own value (measure `value`, no run of days or readings to count), the value below which
    (above which for `low`) no level is entered. Most readings of a site are such, and stepping each one cost a
    fifth of the evaluation."""
    if rule.measure != "value" or rule.consecutive_days is not None or not thresholds:
        return None
    if any(level <= Level.NORMAL or th.consecutive > 1 for level, _v, th in thresholds):
        return None
    values = [v for _l, v, _t in thresholds]
    if rule.direction == "low":
        return -1, -max(values)
    return (0 if rule.direction == "abs" else 1), min(values)


def _of_warning(th: Threshold, fraction: float, design: str, plan: Source, limit: float, unit: str) -> Threshold:
    """The threshold an excavation alarm cites: a fraction of the point's design 预警值, sourced from the plan."""
    return Threshold(
        level=th.level,
        value=fraction,
        source=Source(
            standard=plan.standard,
            clause=plan.clause,
            confidence=plan.confidence,
            note=f"{fraction:g} % of the design 预警值 {design}: {fraction / 100 * limit:.4g} {unit}; "
            f"the fraction: {th.source.cite()}",
        ),
        consecutive=th.consecutive,
        consecutive_source=th.consecutive_source,
        inclusive=th.inclusive,
    )


@functools.lru_cache(maxsize=1024)
def _device_threshold(th: Threshold, own: float) -> Threshold:
    """The device's own value in place of the rule's, with where it comes from; one object for every device with the
    same value (2 000 cranes of one model held 2 000 equal ones: 2.5 MB)."""
    was = "none" if th.value is None else f"{th.value:g}"
    assert th.stricter_of_device is not None
    return Threshold(
        level=th.level,
        value=own,
        source=Source(
            standard="device configuration (manufacturer's manual)",
            clause=th.stricter_of_device,
            confidence=Confidence.PRIMARY,
            note=f"stricter than the default {was} of {th.source.cite()}",
        ),
    )


def _effective(rule: Rule, ctx: DeviceContext) -> tuple[tuple[Level, float, Threshold], ...]:
    out: list[tuple[Level, float, Threshold]] = []
    for th in rule.thresholds:
        value = th.value
        used = th
        own = getattr(ctx, th.stricter_of_device) if th.stricter_of_device else None
        if own is not None:
            stricter = own if value is None else (max(value, own) if rule.direction == "low" else min(value, own))
            if stricter != value:
                value = stricter
                used = _device_threshold(th, own)
        if value is not None:
            out.append((th.level, value, used))
    return _shared(tuple(out))


@functools.lru_cache(maxsize=4096)
def _shared(thresholds: tuple[tuple[Level, float, Threshold], ...]) -> tuple[tuple[Level, float, Threshold], ...]:
    # the first equal tuple stands for every later one: 2 000 cranes of one model bound 20 000 equal tuples of
    # equal (level, value, threshold) tuples (2.8 MB)
    return thresholds


def bind(rule: Rule, device: str, ctx: DeviceContext, baselines: bool = True) -> tuple[Bound | None, str]:
    """The rule on the device, or None with why it cannot run there (a project value it still needs)."""
    ths = _effective(rule, ctx)
    why = ""
    design = None
    if not ths:
        why = "no threshold value (project value required)"
    elif rule.measure == "percent_of_design":
        design = ctx.design_values.get(rule.quantity)
        if not design:
            why = f"needs design_values.{rule.quantity}"
    elif rule.measure in ("percent_of_warning", "rate_percent_of_warning"):
        w = ctx.warning_values.get(rule.quantity)
        cumulative = rule.measure == "percent_of_warning"
        design = None if w is None else (w.cumulative if cumulative else w.rate)
        if w is None or design is None:
            why = f"needs warning_values.{rule.quantity}.{'cumulative' if cumulative else 'rate_per_day'}"
        elif cumulative and not baselines:
            why = "no baseline store"
        else:
            unit = rule.unit + ("/d" if not cumulative else "")
            what = w.basis if cumulative else f"{design:g} {unit}"
            ths = tuple(
                (level, value, _of_warning(th, value, what, w.source, design, unit)) for level, value, th in ths
            )
    elif rule.measure == "change_from_baseline" and not baselines:
        why = "no baseline store"
    elif rule.measure == "calendar" and ctx.calibration_due is None:
        why = "no calibration_due"
    if not why and rule.when and ctx.gates is not None:
        # a pack rule's gate on a quantity the device's model never reports (tc.limiter_bypass's hoisting_up on a
        # crane that sends the moment only): it never opens, so the rule is never judged there; an override's gate
        # is refused instead (alerting/overrides.py)
        shut = [c.quantity for c in rule.when if c.quantity not in ctx.gates]
        if shut:
            why = f"its gate reads {', '.join(shut)}, which this device never reports: never judged here"
    if why:
        return None, why
    return Bound(rule, ths, design, _days(rule, ths, design)), ""


def _days(
    rule: Rule, ths: tuple[tuple[Level, float, Threshold], ...], design: float | None
) -> tuple[float, Threshold] | None:
    """The run of days (`consecutive_days`) as the evaluator checks it: the limit, a fraction of its level's
    threshold, and the threshold an alarm raised by it cites: its value that limit, its clause saying the run, its
    note the limit in the quantity's unit and the plan that set the threshold."""
    cd = rule.consecutive_days
    at = [(value, th) for level, value, th in ths if level == cd.level] if cd is not None else []
    if cd is None or not at:
        return None  # (a level whose value the project has not set: no run to check either)
    value, th = at[0]
    limit, unit, src = round(cd.fraction * value, 9), rule.measured_unit, cd.source or th.source
    op = "≥" if cd.inclusive else ">"
    clause = f"{src.clause + ', ' if src.clause else ''}{cd.days} days in a row {op} {limit:g} {unit}"
    plain = (
        f" = {limit / 100 * design:.4g} {rule.unit}/d" if rule.measure == "rate_percent_of_warning" and design else ""
    )
    note = f"{limit:g} {unit}{plain}: {cd.fraction * 100:g} % of the {cd.level.zh} threshold {value:g} {unit}"
    note += f" ({th.source.cite()})" + (f"; {src.note}" if src.note else "")
    cited = Source(standard=src.standard, clause=clause, confidence=src.confidence, note=note)
    return limit, Threshold(level=cd.level, value=limit, source=cited, inclusive=cd.inclusive)


@dataclass
class BoundRules:
    """A site's rules bound to its devices, held as the evaluator looks them up (alerting/evaluator.py)."""

    by_key: dict[str, dict[str, tuple[Bound, ...]]]  # device -> base quantity -> bound rules
    calendar: list[tuple[str, Bound]]  # (device, calendar rule)
    any_point: dict[str, list[Bound]]  # device -> point_fault rules
    inactive: list[tuple[str, str, str]]  # (device, rule id, why) of rules that cannot run
    unique: list[Bound]  # every bound rule, once


def bind_all(
    rules_by_device: Mapping[str, list[Rule]], devices: Mapping[str, DeviceContext], baselines: bool
) -> BoundRules:
    """Every device's rules bound (`bind`). Equal bound rules, their tuples and whole device tables are one object
    each: 2 000 cranes of one model held 20 000 Bounds, 20 000 tuples and 2 000 dicts that were all alike (~3 MB).
    Keyed by the ids of objects the interned values hold, so no id is reused while its entry lives."""
    by_key: dict[str, dict[str, list[Bound]]] = {}
    out = BoundRules({}, [], {}, [], [])
    bounds: dict[tuple[int, int, float | None], Bound] = {}
    for device, rules in rules_by_device.items():
        ctx = devices.get(device)
        if ctx is None:
            raise ValueError(f"rules given for device {device!r}, which has no DeviceContext")
        for rule in rules:
            b, why = bind(rule, device, ctx, baselines)
            if b is None:
                out.inactive.append((device, rule.id, why))
                continue
            b = bounds.setdefault((id(b.rule), id(b.thresholds), b.design), b)
            if rule.measure == "calendar":
                out.calendar.append((device, b))
            elif rule.quantity == ANY_POINT:
                out.any_point.setdefault(device, []).append(b)
            else:
                by_key.setdefault(device, {}).setdefault(rule.quantity, []).append(b)
    # a reading finds its rules with two or three dict lookups (nested dicts and tuples, not (device, quantity) keys
    # and lists: 2 000 devices' 24 000 keys held 2.9 MB)
    tuples: dict[tuple[int, ...], tuple[Bound, ...]] = {}
    tables: dict[tuple[tuple[str, int], ...], dict[str, tuple[Bound, ...]]] = {}
    for d, qs in by_key.items():
        table = {q: tuples.setdefault(tuple(map(id, bs)), tuple(bs)) for q, bs in qs.items()}
        out.by_key[d] = tables.setdefault(tuple((q, id(t)) for q, t in table.items()), table)
    out.unique = list(bounds.values())
    return out
