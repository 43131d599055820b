"""Pure threshold evaluation: `observe(reading, now_ns)` -> level transitions. No I/O, no wall clock."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from alerting.rules import Level, Rule, Threshold
from gateway import quantities
from gateway.model import Quality, Reading


@dataclass(frozen=True, slots=True)
class Transition:
    """A rule on a device changed level. `threshold` is the one crossed (None when returning to NORMAL)."""

    rule: str
    device: str
    quantity: str
    old: Level
    new: Level
    value: float
    threshold: Threshold | None
    at_ns: int
    # confirmed: the level changed. pending: `new` is a candidate whose on-delay just started (level unchanged);
    # cancelled: that candidate went away before its delay ran out.
    phase: Literal["confirmed", "pending", "cancelled"] = "confirmed"


@dataclass(slots=True)
class _State:
    level: Level = Level.NORMAL
    candidate: Level | None = None
    since_ns: int = 0


class ThresholdEvaluator:
    """Evaluates threshold rules inline on every reading, in the reading's own quantity units.

    A level is entered at its threshold and left only when the value is back by the rule's deadband; a change of
    level waits `on_delay_s` (going up) or `off_delay_s` (going down). Thresholds without a value (project values
    not yet configured) are skipped. Readings of BAD quality are not evaluated (a faulty sensor raises device
    health alarms, not value alarms).
    """

    def __init__(self, rules: dict[str, Rule], kinds: dict[str, str]) -> None:
        # device -> kind, and (kind, base quantity) -> rules, so a reading finds its rules with two dict lookups
        self.kinds = kinds
        self._by_key: dict[tuple[str, str], list[Rule]] = {}
        for r in rules.values():
            self._by_key.setdefault((r.kind.value, r.quantity), []).append(r)
        self._state: dict[tuple[str, str, str], _State] = {}  # (rule, device, quantity)

    def level(self, rule: str, device: str, quantity: str | None = None) -> Level:
        for (r, d, q), st in self._state.items():
            if r == rule and d == device and (quantity is None or q == quantity):
                return st.level
        return Level.NORMAL

    def observe(self, reading: Reading, now_ns: int) -> list[Transition]:
        kind = self.kinds.get(reading.device)
        if kind is None or reading.quality is Quality.BAD:
            return []
        base = reading.quantity
        rules = self._by_key.get((kind, base))
        if rules is None:
            try:
                base = quantities.lookup(reading.quantity).name  # depth families share their base quantity's rules
            except KeyError:
                return []
            rules = self._by_key.get((kind, base))
            if rules is None:
                return []
        out: list[Transition] = []
        for rule in rules:
            t = self._step(rule, reading, now_ns)
            if t is not None:
                out.append(t)
        return out

    def _step(self, rule: Rule, r: Reading, now_ns: int) -> Transition | None:
        key = (rule.id, r.device, r.quantity)
        st = self._state.get(key)
        if st is None:
            st = self._state[key] = _State()
        v = abs(r.value) if rule.direction == "abs" else r.value
        low = rule.direction == "low"
        target = Level.NORMAL
        crossed: Threshold | None = None
        for th in rule.thresholds:
            if th.value is None:
                continue
            if th.level > st.level:  # entering: at the threshold
                hit = v <= th.value if low else v >= th.value
            else:  # holding: until back beyond the deadband
                hit = v < th.value + rule.deadband if low else v > th.value - rule.deadband
            if hit and th.level > target:
                target, crossed = th.level, th
        if target == st.level:
            st.candidate = None
            return None
        if st.candidate != target:
            st.candidate, st.since_ns = target, now_ns
        delay_s = rule.on_delay_s if target > st.level else rule.off_delay_s
        if now_ns - st.since_ns < delay_s * 1e9:
            return None
        old, st.level, st.candidate = st.level, target, None
        return Transition(
            rule.id, r.device, r.quantity, old, target, r.value, crossed if target is not Level.NORMAL else None, now_ns
        )
