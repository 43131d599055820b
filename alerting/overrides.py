"""Per-project rule overrides (the `rules:` section of the site YAML) and each device's effective rules."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from alerting.baselines import Baselines
from alerting.derived import CHANGES_ONLY, DeviceContext
from alerting.rules import Condition, ConsecutiveDays, Level, Rule, Source
from telemetry import quantities
from telemetry.yamlnum import Float, Int


class _B(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)  # `.inf`, `.nan`: refused


class Override(_B):
    """Project values for one rule, on some devices or (devices: null) on every device of the rule's kind.

    The source is required: an alarm raised on a project value cites the project document (e.g. "XX基坑监测方案
    表3", confidence P), not the standard the default came from. The rule id stays the same.
    """

    rule: str
    devices: list[str] | None = None
    thresholds: dict[Int, Float] = {}  # level (1 预警, 2 报警, 3 危险) -> value
    source: Source
    deadband: Float | None = Field(default=None, ge=0)
    on_delay_s: Float | None = Field(default=None, ge=0)
    off_delay_s: Float | None = Field(default=None, ge=0)
    window_s: Float | None = Field(default=None, gt=0)
    # a value rule may compare a time-weighted mean over window_s instead of each sample (tc.wind: a 10 min mean)
    measure: Literal["value", "window_mean"] | None = None
    consecutive_days: ConsecutiveDays | None = None
    # level -> how many consecutive readings (surveys) must reach its threshold ("3 consecutive surveys")
    consecutive: dict[Int, Int] = {}
    when: list[Condition] | None = None

    @field_validator("devices")
    @classmethod
    def _some(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and not v:
            raise ValueError("an empty list applies to no device: leave it out for every device of the rule")
        return v

    @model_validator(mode="after")
    def _changes(self) -> Override:
        given = [self.deadband, self.on_delay_s, self.off_delay_s, self.window_s, self.measure]
        if not (self.thresholds or self.consecutive or any(x is not None for x in given)) and (
            self.consecutive_days is None and self.when is None
        ):
            raise ValueError(
                "changes nothing: give thresholds, deadband, on_delay_s, off_delay_s, window_s, measure, consecutive, "
                "consecutive_days or when (or turn the rule off in rules.disabled, with a reason)"
            )
        return self


class Disabled(_B):
    rule: str
    reason: str = Field(min_length=1)  # why a default rule does not apply to this project (kept for audits)


class RulesConfig(_B):
    overrides: list[Override] = []
    disabled: list[Disabled] = []


def _apply(rule: Rule, o: Override, where: str) -> Rule:
    levels = {int(t.level) for t in rule.thresholds}
    for name, given in (("thresholds", o.thresholds), ("consecutive", o.consecutive)):
        for lv in given:
            if lv not in levels:
                names = ", ".join(f"{x} ({Level(x).zh})" for x in sorted(levels))
                raise ValueError(f"{where}.{name}: rule {rule.id} has no level {lv}; its levels: {names}")
    for lv, n in o.consecutive.items():
        if not 1 <= n <= 100:
            raise ValueError(f"{where}.consecutive: level {lv}: {n} is not a count of 1 to 100 readings")
    data: dict[str, Any] = rule.model_dump()
    out = []
    for t in rule.thresholds:
        lv = int(t.level)
        th = t.model_dump()
        if lv in o.thresholds:
            th.update(value=o.thresholds[lv], source=o.source.model_dump())
        if lv in o.consecutive:
            th.update(consecutive=o.consecutive[lv], consecutive_source=o.source.model_dump())
        out.append(th)
    data["thresholds"] = out
    if o.measure is not None:
        if rule.measure not in ("value", "window_mean"):
            raise ValueError(
                f"{where}.measure: rule {rule.id} measures {rule.measure}; only a value rule can be a mean"
            )
        data["measure"] = o.measure
        if o.measure == "value" and o.window_s is None:
            data["window_s"] = None  # the mean's window, of an override before this one (a value rule has none)
    for name in ("deadband", "on_delay_s", "off_delay_s", "window_s"):
        if getattr(o, name) is not None:
            data[name] = getattr(o, name)
    if o.consecutive_days is not None:  # (its source, when it gives none, the override's)
        data["consecutive_days"] = o.consecutive_days.model_dump() | {"source": o.consecutive_days.source or o.source}
    if o.when is not None:
        data["when"] = [c.model_dump() for c in o.when]
    try:
        new = Rule.model_validate(data)
    except ValidationError as err:
        msgs = "; ".join(e["msg"].removeprefix("Value error, ") for e in err.errors())
        raise ValueError(f"{where}: rule {rule.id}: {msgs}") from None
    return new


def _check_clears(rule: Rule, ctx: DeviceContext, dev: str, i: int, o: Override) -> None:
    """The rule as it runs on the device, after all its overrides (a device's own entry may correct a site-wide
    one), against `_never_clears`; `o` (`rules.overrides[i]`) is the last that set its deadband or thresholds."""
    design = ctx.design_values.get(rule.quantity) if rule.measure == "percent_of_design" else None
    held = _never_clears(rule, design)
    if held:
        field = "deadband" if o.deadband is not None else "thresholds"
        # (a %-of-design rule's range is a % of each device's own design value)
        on = f" on {dev} (design value {design:g})" if design else ""
        raise ValueError(
            f"rules.overrides[{i}].{field}: rule {rule.id}{on}: {held}: it would never clear (give a smaller deadband)"
        )


def _never_clears(rule: Rule, design: float | None = None) -> str | None:
    """A level the rule, once it is entered, holds whatever the value: its deadband reaches past the values the
    measure can take (a level is held while the value is within the deadband of its threshold). None when none.
    A %-of-design rule's values are known with the device's design value (`design`) only."""
    span = _span(rule, design)
    db, unit, name = rule.deadband, rule.measured_unit, rule.quantity
    for t in rule.thresholds:
        if t.value is None:
            continue
        lv = f"level {int(t.level)} ({t.level.zh}) at {t.value:g} {unit}"
        if rule.direction == "abs" and t.value - db < 0:
            return f"{lv} is held while |value| > {t.value - db:g}, always"
        if span is not None and rule.direction == "high" and t.value - db < span[0]:
            return (
                f"{lv} is held while the value is above {t.value - db:g}, and {name} reads {span[0]:g} {unit} at least"
            )
        if span is not None and rule.direction == "low" and t.value + db > span[1]:
            return (
                f"{lv} is held while the value is below {t.value + db:g}, and {name} reads {span[1]:g} {unit} at most"
            )
    return None


def _span(rule: Rule, design: float | None) -> tuple[float, float] | None:
    """The values the rule's measure can take, where they are known: the quantity's range for value and mean rules,
    that range as a % of the device's design value for a %-of-design rule."""
    if rule.measure in ("value", "window_mean"):
        q = quantities.lookup(rule.quantity)
        return q.low, q.high
    if rule.measure == "percent_of_design" and design:
        q = quantities.lookup(rule.quantity)
        low, high = sorted((q.low / design * 100, q.high / design * 100))
        return low, high
    return None


def resolve_rules(
    defaults: Mapping[str, Rule], cfg: RulesConfig | None, devices: Mapping[str, DeviceContext]
) -> dict[str, list[Rule]]:
    """Device id -> its effective rules: the defaults of its kind (and kind "any"), minus the disabled ones, with
    the overrides applied. Overrides for every device come first, then device-specific ones (the nearer wins),
    each group in file order. ValueError names the `rules.` path of a bad entry."""
    cfg = cfg or RulesConfig()
    disabled: set[str] = set()
    for i, d in enumerate(cfg.disabled):
        if d.rule not in defaults:
            raise ValueError(f"rules.disabled[{i}].rule: unknown rule {d.rule!r}{_hint(d.rule, defaults)}")
        disabled.add(d.rule)
    for i, o in enumerate(cfg.overrides):
        where = f"rules.overrides[{i}]"
        rule = defaults.get(o.rule)
        if rule is None:
            raise ValueError(f"{where}.rule: unknown rule {o.rule!r}{_hint(o.rule, defaults)}")
        if o.rule in disabled:
            raise ValueError(f"{where}.rule: rule {o.rule} is also disabled (rules.disabled); keep one of the two")
        _check(where, o, rule, defaults, devices)
    ordered = sorted(enumerate(cfg.overrides), key=lambda io: io[1].devices is not None)
    out: dict[str, list[Rule]] = {}
    for dev, ctx in devices.items():
        rules: list[Rule] = []
        for rule in defaults.values():
            if rule.id in disabled or not _binds(rule, ctx):
                continue
            last: tuple[int, Override] | None = None  # the last override that set its deadband or thresholds
            for i, o in ordered:
                if o.rule == rule.id and (o.devices is None or dev in o.devices):
                    rule = _apply(rule, o, f"rules.overrides[{i}]")
                    if o.deadband is not None or o.thresholds:
                        last = (i, o)
            if last is not None:
                _check_clears(rule, ctx, dev, *last)
            rules.append(rule)
        out[dev] = rules
    return out


def idle_entries(
    defaults: Mapping[str, Rule], cfg: RulesConfig | None, devices: Mapping[str, DeviceContext]
) -> list[str]:
    """The site-wide `rules:` entries that change nothing here: a rule no device of the site runs (a company
    template's overrides for kinds the site does not have). Accepted, but said (`check-config`, the log at start):
    an entry meant for a device that was left out, or whose profile reports another quantity, does nothing."""
    out: list[str] = []
    cfg = cfg or RulesConfig()
    entries = [(f"rules.disabled[{i}]", d.rule) for i, d in enumerate(cfg.disabled)]
    entries += [(f"rules.overrides[{i}]", o.rule) for i, o in enumerate(cfg.overrides) if o.devices is None]
    for where, rid in entries:
        rule = defaults.get(rid)
        if rule is not None and not any(_binds(rule, ctx) for ctx in devices.values()):
            out.append(f"{where}: rule {rid} ({rule.kind}, {rule.quantity}) runs on no device of this site")
    return out


def _binds(rule: Rule, ctx: DeviceContext) -> bool:
    """Whether the rule runs on the device: its kind, and a quantity the device reports (a strut-force gauge gets no
    displacement rules)."""
    return rule.applies_to(ctx.kind) and (ctx.provides is None or rule.quantity in ctx.provides)


def _check(
    where: str, o: Override, rule: Rule, defaults: Mapping[str, Rule], devices: Mapping[str, DeviceContext]
) -> None:
    """An override of a known rule against the rule and the devices: one that changes nothing is refused."""
    if o.measure == "value" and rule.measure == "window_mean":
        # its thresholds are limits for the mean (PC-TWA, PC-STEL): each sample against them is another rule
        same = (rule.kind, rule.quantity, "value")
        each = " or ".join(r.id for r in defaults.values() if (r.kind, r.quantity, r.measure) == same)
        raise ValueError(
            f"{where}.measure: rule {rule.id} is a mean over {rule.window:g} s by its source, its thresholds "
            f"limits for that mean; each sample is rule {each or '(none)'}'s to judge: override that one"
        )
    for dev in o.devices or ():
        ctx = devices.get(dev)
        if ctx is None:
            raise ValueError(f"{where}.devices: unknown device {dev!r}; devices: {', '.join(sorted(devices))}")
        if not rule.applies_to(ctx.kind):
            raise ValueError(f"{where}.devices: {dev} is a {ctx.kind} device; rule {rule.id} is for {rule.kind}")
        if not _binds(rule, ctx):  # the override was dropped with the rule
            raise ValueError(f"{where}.devices: {dev} reports no {rule.quantity}: rule {rule.id} never runs on it")
    targets = o.devices if o.devices is not None else [d for d, ctx in devices.items() if _binds(rule, ctx)]
    for k, c in enumerate(o.when or ()):
        base = quantities.lookup(c.quantity).name
        for dev in targets:
            # a gate quantity never seen keeps the gate shut: the rule would never be judged there (what the gate
            # can read, `gates`; where it is unknown, as in tests, what the device provides)
            ctx, q = devices[dev], c.quantity
            if ctx.gates is not None and q not in ctx.gates:
                why = _shut(dev, q, base, ctx.gates)
            elif ctx.gates is None and ctx.provides is not None and q not in ctx.provides and base not in ctx.provides:
                why = f"{dev} reports no {q}"
            else:
                continue
            raise ValueError(
                f"{where}.when[{k}]: {why}: the gate would stay shut and rule {rule.id} never be judged on it"
            )


def _shut(dev: str, q: str, base: str, gates: frozenset[str]) -> str:
    """Why a gate on `q` never opens on the device (`gates`: what its gates can read, alerting/derived.py)."""
    if q in CHANGES_ONLY:
        return f"{q} is sent when it changes only: a device that was never faulty has no {q} to open the gate"
    # a depth family's readings are named by depth: a gate on the base name, or on a depth the device does not
    # read, waits for a reading that never comes
    depths = sorted((d[1], g) for g in gates if (d := quantities.depth_of(g)) is not None and d[0] == base)
    if depths:
        return f"{dev} reports {base} at its depths only ({', '.join(g for _, g in depths)}), not {q}; name one of them"
    return f"{dev} reports no {q}"


def values_read(defaults: Mapping[str, Rule], ctx: DeviceContext) -> tuple[set[str], set[str]]:
    """The quantities whose design value and whose 预警值 the device's rules read (`devices[].design_values`,
    `.warning_values`): those of its %-of-design and %-of-warning rules, disabled ones too."""
    bound = [r for r in defaults.values() if _binds(r, ctx)]
    design = {r.quantity for r in bound if r.measure == "percent_of_design"}
    warning = {r.quantity for r in bound if r.measure in ("percent_of_warning", "rate_percent_of_warning")}
    return design, warning


def _hint(rid: str, defaults: Mapping[str, Rule]) -> str:
    prefix = rid.split(".")[0] + "."
    near = sorted(r for r in defaults if r.startswith(prefix))
    return f"; rules of that family: {', '.join(near)}" if near else "; rule ids start with tc. exc. fw. gas. health."


def missing_values(
    rules_by_device: Mapping[str, list[Rule]],
    devices: Mapping[str, DeviceContext],
    baselines: Baselines | None = None,
) -> list[str]:
    """What each device's rules still need before they can run, one message per gap, for `check-config`.

    With `baselines`, cumulative rules without a stored baseline are listed too (they wait for one)."""
    out: list[str] = []
    undated: dict[str, list[str]] = {}  # calendar rule -> devices without calibration_due: one line, not one each
    for dev in sorted(rules_by_device):
        ctx = devices[dev]
        for r in rules_by_device[dev]:
            for t in r.thresholds:
                own = getattr(ctx, t.stricter_of_device) if t.stricter_of_device else None
                if t.value is None and own is None:
                    out.append(f"device {dev}: rule {r.id} needs a project value for {t.level.zh} ({t.source.cite()})")
            if r.measure == "percent_of_design" and not ctx.design_values.get(r.quantity):
                out.append(f"device {dev}: {r.id} needs design_values.{r.quantity}")
            elif r.measure in ("percent_of_warning", "rate_percent_of_warning"):
                w = ctx.warning_values.get(r.quantity)
                part = "cumulative" if r.measure == "percent_of_warning" else "rate_per_day"
                if w is None or (w.cumulative if part == "cumulative" else w.rate) is None:
                    out.append(
                        f"device {dev}: {r.id} needs warning_values.{r.quantity}.{part} (the design 预警值, "
                        "GB 50497-2019 8.0.1, 8.0.3)"
                    )
            elif r.measure == "calendar" and ctx.calibration_due is None:
                undated.setdefault(r.id, []).append(dev)
            if (
                r.measure in ("change_from_baseline", "percent_of_warning")
                and baselines is not None
                and not any(
                    b.device == dev and quantities.lookup(b.quantity).name == r.quantity for b in baselines.all()
                )
            ):
                out.append(f"device {dev}: {r.id} waits for a baseline of {r.quantity} (初始值; set it in the console)")
    for rid, devs in undated.items():
        out.append(
            f"{len(devs)} device(s): {rid} needs calibration_due (the date a device's calibration falls due): "
            + ", ".join(devs)
        )
    return out
