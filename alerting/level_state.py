"""The evaluator's state of one rule on one point: its level, a change waiting for its delay, what was judged."""

from __future__ import annotations

from dataclasses import dataclass, field

from alerting.binding import Bound
from alerting.rules import Level, Threshold

NS = 1_000_000_000
Key = tuple[str, str, str]  # (rule, device, quantity): one level state


@dataclass(slots=True)
class LevelState:
    bound: Bound
    level: Level = Level.NORMAL
    candidate: Level | None = None  # a level the value asks for, waiting for its on/off delay
    since_ns: int = 0  # when the current excursion (up or down) began
    cand_threshold: Threshold | None = None
    cand_value: float = 0.0
    pending: Level | None = None  # the candidate last announced as "pending"
    runs: dict[int, int] = field(default_factory=dict)  # level -> consecutive evaluations at its threshold
    run_ns: int = 0  # the time of the last reading counted in `runs`
    cand_source: int | None = None  # the reading time of the candidate's value
    judged_ns: int = 0  # the newest reading time judged: an older reading is history, not the present
    judged_at_ns: int = 0  # the gateway's time when judged_ns moved on (a device clock may run ahead or behind)
    # a run of days' rule only (else 0.0, shared): the value judged at judged_ns, which a late day's run reports
    judged_v: float = 0.0

    def judged(self, src_ns: int, now_ns: int, v: float, days: bool) -> None:
        """`src_ns`, newer than any judged, is the present now; its value kept for a run of days' late days."""
        self.judged_ns, self.judged_at_ns = src_ns, now_ns
        if days:
            self.judged_v = v

    def is_history(self, src_ns: int, now_ns: int, every_s: float | None) -> bool:
        """Older than the newest judged (a buffer sent late, a QoS 1 message delivered again) is history (domain.md
        §1.4), neither raising nor clearing while the newest came within 3 expected intervals (`every_s`, by the
        gateway's clock: a device's may run ahead or behind); past that its clock went back (or was set right)."""
        return src_ns < self.judged_ns and (every_s is None or now_ns - self.judged_at_ns <= 3 * every_s * NS)
