"""A rule's change of level on a device: what the evaluator says and the alarm lifecycle records."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from alerting.rules import Level, Threshold


@dataclass(frozen=True, slots=True)
class Transition:
    """A rule on a device changed level. `threshold` is the one crossed (None when returning to NORMAL).

    `value` is what the rule compared (its measure, in `Rule.measured_unit`: %, mm/d, a mean, ...)."""

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
    # the time of the reading the value comes from (a survey's time, a device's clock); `at_ns` is the gateway's
    # time of the change. They differ for back-dated surveys and buffered data; None for calendar rules
    source_ns: int | None = None
