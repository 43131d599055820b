"""`check-config`'s alarm plan: every rule as it runs on each device, with the source of each number."""

from __future__ import annotations

from typing import Any


def rule_plan(by_device: dict[str, list[Any]], devices: dict[str, Any]) -> list[str]:
    """Every rule as it runs on each device: every level with its threshold, deadband, delays, window and
    consecutive count, and the source of each number; devices where a rule runs alike share one entry."""
    from alerting.binding import bind
    from alerting.rules import default_rules

    pack = default_rules()
    groups: dict[str, dict[tuple[str, ...], list[str]]] = {}
    for dev in sorted(by_device):
        for rule in by_device[dev]:
            b, why = bind(rule, dev, devices[dev])
            if b is None:
                lines: tuple[str, ...] = (f"inactive: {why}",)
            else:
                lines = _bound_lines(b, pack.get(rule.id))
            groups.setdefault(rule.id, {}).setdefault(lines, []).append(dev)
    out: list[str] = []
    for rid, by_lines in groups.items():
        r = pack.get(rid) or by_device[next(iter(next(iter(by_lines.values()))))][0]
        out.append(f"  {rid}  {r.title_zh} — {r.quantity} [{r.measured_unit}], {r.measure}, {r.direction}")
        for lines, devs in by_lines.items():
            out.append(f"    {', '.join(devs)}: {lines[0]}")
            out.extend(f"      {ln}" for ln in lines[1:])
    return out


def _bound_lines(b: Any, default: Any) -> tuple[str, ...]:
    rule = b.rule
    unit = rule.measured_unit
    levels = []
    sources = []
    for level, value, th in b.thresholds:
        op = {"high": "≥", "low": "≤", "abs": "|x| ≥"}[rule.direction]
        op = op if th.inclusive else op.replace("≥", ">").replace("≤", "<")  # (a strict limit: beyond the value)
        run = f" on {th.consecutive} readings in a row" if th.consecutive > 1 else ""
        levels.append(f"{level.zh} {op} {value:g} {unit}{run}")
        sources.append(f"{level.zh} {value:g}: {th.source.cite()}" + (f" ({th.source.note})" if th.source.note else ""))
        if th.consecutive > 1 and th.consecutive_source is not None:
            sources.append(f"{level.zh} count {th.consecutive}: {th.consecutive_source.cite()}")
    if b.days is not None:  # a level also reached by a run of days (consecutive_days)
        limit, th = b.days
        cd = rule.consecutive_days
        levels.append(
            f"{th.level.zh} also |x| {'≥' if th.inclusive else '>'} {limit:g} {unit} on {cd.days} days in a row"
        )
        sources.append(f"{th.level.zh} {cd.days} days: {th.source.cite()} ({th.source.note})")
    tuning = [
        f"deadband {rule.deadband:g} {unit}",
        f"on-delay {rule.on_delay_s:g} s",
        f"off-delay {rule.off_delay_s:g} s",
    ]
    if rule.measure in ("rate_per_day", "rate_percent_of_warning", "window_mean"):
        tuning.append(f"window {rule.window:g} s")
    same = default is not None and all(
        getattr(rule, k) == getattr(default, k)
        for k in ("deadband", "on_delay_s", "off_delay_s", "window_s", "consecutive_days")
    )
    origin = "the rule pack" if same else "the site's rules.overrides"
    gates = [f"{c.quantity} {c.op} {c.value:g}" for c in rule.when]
    lines = ["; ".join(levels), "; ".join(tuning) + f" (from {origin})"]
    if gates:
        lines.append("only while " + " and ".join(gates))
    lines.extend(sources)
    return tuple(lines)
