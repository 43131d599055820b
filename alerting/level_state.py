"""The evaluator's state of one rule on one point: its level, a change waiting for its delay, what was judged."""

from __future__ import annotations

from collections.abc import Callable, Container, Mapping
from dataclasses import dataclass, field

from alerting.binding import Bound
from alerting.rules import Level, Threshold
from alerting.transition import Transition

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
        # (a gateway clock set back since, now before judged_at_ns: lapsed, as gateway-stamped readings would
        # otherwise be history for as long as the step, and a gas alarm not raised meanwhile: an outside review)
        return src_ns < self.judged_ns and (every_s is None or 0 <= now_ns - self.judged_at_ns <= 3 * every_s * NS)

    def rewind(self, t: Transition, last: Transition | None) -> bool | None:
        """`t` could not be stored: back to the level before it (alerting/evaluator.py `unstored`). Whether the state
        now waits for its delay (None: unchanged)."""
        if t.phase in ("pending", "cancelled"):
            # (a cancelled one: the pending row stays until the next change of this rule closes or raises it)
            if t.phase == "pending":
                self.pending = None  # announce the candidate again with the next evaluation
            return None
        believed = self.level
        self.level = t.old
        if believed == t.old:
            self.candidate = None
            return False
        # keep the excursion's start: its delay has run out, so the retry confirms without waiting for it again
        self.since_ns = min(self.since_ns, t.at_ns)
        lt = last or t
        self.candidate, self.cand_threshold = believed, lt.threshold
        self.cand_value, self.cand_source = lt.value, lt.source_ns
        self.pending = None
        return True


class States(dict[Key, LevelState]):
    """The evaluator's level states by (rule, device, quantity); the newest judged times of points whose rules have
    none; and what a restart gives back to them (alerting/memory.py)."""

    __slots__ = ("find", "rest", "rest_at", "rest_max")

    def __init__(self, find: Callable[[str, str], Bound | None]) -> None:
        super().__init__()
        self.find = find  # a rule as bound on a device; None when it is not the device's any more (config changed)
        # device -> quantity -> the newest reading time judged by a rule without a state there: one that never left
        # rest (the evaluator's quiet path makes none; a state weighs ~300 bytes) or whose time came from the memory.
        # Per point, not per rule: its rules at rest judge the same readings. Plain ints: a (time, time) tuple a
        # reading cost the quiet path as much again in allocations and collections
        self.rest: dict[str, dict[str, int]] = {}
        # device -> the gateway's time when one of those moved on: the point's judged_at_ns (an older reading is
        # history for 3 expected intervals after it, LevelState.is_history; a clock set back moves none of them)
        self.rest_at: dict[str, int] = {}
        # device -> its newest reading time on any point at rest: `rest_at` moves only with it (`rested`)
        self.rest_max: dict[str, int] = {}

    def new(self, key: Key, b: Bound) -> LevelState:
        """A rule's state on a point, made as it first leaves rest (or is restored), from the point's newest judged
        time (its other rules at rest may still need it: kept)."""
        st = self[key] = LevelState(b)
        if (ns := self.rest.get(key[1], {}).get(key[2])) is not None:
            # judged when the device's newest was, less the device time between them: the point's own time when
            # the clocks went on together (no time per point kept: 2 MB for 2 000 cranes), never later than the
            # device's (an estimate that errs to lapsing early: a reading judged as the present sooner)
            d = key[1]
            st.judged_ns, st.judged_at_ns = ns, self.rest_at[d] - (self.rest_max[d] - ns)
        return st

    def runs(self) -> dict[Key, tuple[dict[int, int], int]]:
        """Counts in a row under way and their last reading's time, by (rule, device, quantity)."""
        return {k: (dict(st.runs), st.run_ns) for k, st in self.items() if st.run_ns or any(st.runs.values())}

    def restore_runs(self, key: Key, runs: Mapping[int, int], run_ns: int) -> None:
        if (bound := self.find(key[0], key[1])) is not None:  # (a rule no longer the device's: counts dropped)
            st = self.get(key) or self.new(key, bound)
            st.runs, st.run_ns = {**st.runs, **runs}, max(st.run_ns, run_ns)

    def judged_times(self, devices: Container[str]) -> dict[Key, tuple[int, int, float]]:
        """Each state's newest judged reading time, the gateway's time then, and the value a run of days judged there,
        on `devices`: a reading older than it after a restart is history too."""
        return {
            k: (st.judged_ns, st.judged_at_ns, st.judged_v)
            for k, st in self.items()
            if st.judged_ns and k[1] in devices
        }

    def rest_times(self, devices: Container[str]) -> list[tuple[str, int, dict[str, int]]]:
        """`rest` and `rest_at` of `devices`, copied."""
        return [(d, self.rest_at[d], dict(points)) for d, points in self.rest.items() if d in devices]

    def restore_judged(self, key: Key, judged_ns: int, at_ns: int, v: float) -> None:
        """A state's judged time from the memory; a rule on the quiet path gets no new state for it (as at rest)."""
        if (bound := self.find(key[0], key[1])) is None:
            return
        st = self.get(key)
        if st is None and bound.quiet is not None:
            self.restore_rest(key[1], at_ns, {key[2]: judged_ns})
        elif judged_ns > (st := st or self.new(key, bound)).judged_ns:
            st.judged(judged_ns, at_ns, v, bound.days is not None)

    def rested(self, device: str, quantity: str, ts_ns: int, now_ns: int) -> None:
        """A reading judged by a rule without a state, to nothing (the evaluator's quiet path does the same inline)."""
        points = self.rest.setdefault(device, {})
        if ts_ns > points.get(quantity, 0):
            points[quantity] = ts_ns
            # the device's clock moved on only with a reading newer than any of its points': a point silent or
            # warming up (its newest old) moved it after the clock was set back, and kept another point's guard
            # from lapsing (a gas reading at 30 %LEL taken as history for minutes: an outside review)
            if ts_ns > self.rest_max.get(device, 0):
                self.rest_max[device], self.rest_at[device] = ts_ns, now_ns

    def restore_rest(self, device: str, at_ns: int, points: Mapping[str, int]) -> None:
        """A device's `rest` and `rest_at` from the memory (`rest_times`), the newer of each kept."""
        mine = self.rest.setdefault(device, {})
        for quantity, ns in points.items():
            mine[quantity] = max(ns, mine.get(quantity, 0))
        self.rest_at[device] = max(at_ns, self.rest_at.get(device, 0))
        self.rest_max[device] = max(mine.values(), default=0)
