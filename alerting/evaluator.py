"""Pure rule evaluation: readings in, level transitions out. No I/O but the baseline cache, no wall clock."""

from __future__ import annotations

import datetime
import math
from collections.abc import Iterable, Mapping
from zoneinfo import ZoneInfo

from alerting.baselines import Baselines
from alerting.binding import Bound, bind_all
from alerting.derived import DeviceContext
from alerting.level_state import Key as _Key
from alerting.level_state import LevelState as _State
from alerting.level_state import States
from alerting.measures import WINDOWED, Measures
from alerting.rules import ANY_POINT, CALENDAR_QUANTITY, Level, Rule, Threshold
from alerting.transition import Transition
from telemetry import quantities
from telemetry.reading import Quality, Reading

NS = 1_000_000_000
# an enum member looked up on its class is a descriptor call on 3.11 (~70 ns): the per-reading checks use these
_BAD, _NOT_READY, _UNCERTAIN = Quality.BAD, Quality.NOT_READY, Quality.UNCERTAIN
_NEG_INF = -math.inf


class Evaluator:
    """Evaluates every device's effective rules inline on each reading.

    A level is entered at its threshold and left only when the measured value is back by the rule's deadband; a
    change of level waits `on_delay_s` (going up) or `off_delay_s` (going down); `tick` confirms delays that run out
    without a new reading and evaluates calendar rules.

    Quality (ISA-18.2's bad-quality rule): a BAD or NOT_READY reading neither raises nor clears a value alarm; the
    level stays where it was. A BAD reading opens the point's fault condition instead (`point_fault` rules, one per
    point), which the point's next valid reading clears; NOT_READY (warming up, calibrating) opens nothing and
    clears nothing. Health rules on flags (sensor_fault) see every reading. UNCERTAIN readings ARE evaluated, both
    ways: UNCERTAIN means implausible for the quantity, a device clock off by more than its limits, or back-filled
    from a device buffer; the value was really measured and an implausible one may be a real extreme (a gas reading
    over range) — dropping it could hide a danger, while the alarm shows the value for a person to judge.

    Windows (rates, means) and daily series run on the readings' own timestamps, so a device clock that differs from
    the gateway's skews neither; delays run on `now_ns`."""

    def __init__(
        self,
        rules_by_device: Mapping[str, list[Rule]],
        devices: Mapping[str, DeviceContext],
        baselines: Baselines | None = None,
        tz: str = "Asia/Shanghai",
    ) -> None:
        self.devices = devices
        self.baselines = baselines
        self.tz = tz
        self._zone = ZoneInfo(tz)
        tables = bind_all(rules_by_device, devices, baselines is not None)
        self._calendar = tables.calendar  # (device, calendar rule)
        self._any_point = tables.any_point  # device -> point_fault rules
        self._by_key = tables.by_key  # device -> base quantity -> bound rules
        self.inactive = tables.inactive  # (device, rule id, why) of rules that cannot run
        self._base: dict[str, str | None] = {}  # reading quantity -> catalog base name (depth families)
        self._latest: dict[str, dict[str, float]] = {}  # device -> quantity -> current valid value (gates)
        # only what is read back: gate quantities, `up` (a down device freezes no run); all were 1.3 MB for 2 000
        self._kept = frozenset(
            {c.quantity for rules in rules_by_device.values() for rule in rules for c in rule.when} | {"up"}
        )
        # what each rule compares (a change, a rate, a mean, a run), with the windows and series behind it
        self.measures = Measures(devices, baselines, tz, self._latest)
        # numpy and the windows load at start-up, not with the first reading that needs them (a 60 ms stall)
        if any(b.rule.measure in WINDOWED for b in tables.unique):
            self.measures.load_windows()
        # (rule, device, quantity) -> its state, and the newest judged times of points without one (memory.py)
        self.states = self._state = States(self._find)
        self._rest, self._rest_at, self._rest_max = self._state.rest, self._state.rest_at, self._state.rest_max
        # devices with a point-fault state (a BAD reading seen, or restored): only their valid readings may clear one
        self._faulted: set[str] = set()
        self._waiting: set[_Key] = set()  # states with a candidate, for tick

    def level(self, rule: str, device: str, quantity: str | None = None) -> Level:
        """The confirmed level of a rule on a device (the highest over its quantities when none is given)."""
        if quantity is not None:
            st = self._state.get((rule, device, quantity))
            return Level.NORMAL if st is None else st.level
        found = [st.level for (r, d, _), st in self._state.items() if r == rule and d == device]
        return max(found, default=Level.NORMAL)

    def restore(
        self,
        rule: str,
        device: str,
        quantity: str,
        level: Level,
        src_ns: int | None = None,
        at_ns: int = 0,
        v: float = 0.0,
    ) -> None:
        """Seed a level (from an alarm still open after a restart) so the next reading continues from it; `src_ns`,
        the reading behind it (judged at `at_ns`, its value `v`), is judged: no older one clears or lowers it (the
        memory's newest judged time may be older, after a `kill -9`)."""
        bound = self._find(rule, device)
        if bound is None:
            return  # the rule no longer applies to the device (config changed): its alarm clears on its own path
        key = (rule, device, quantity)
        st = self._state.get(key) or self._state.new(key, bound)
        if bound.rule.quantity == ANY_POINT:
            self._faulted.add(device)
        st.level, st.candidate, st.pending = Level(level), None, None
        self._waiting.discard(key)
        if src_ns is not None and src_ns > st.judged_ns:  # (judged at no earlier than the memory said)
            st.judged(src_ns, max(at_ns, st.judged_at_ns), v, bound.days is not None)

    def unstored(self, t: Transition, last: Transition | None = None) -> None:
        """`t` could not be stored (the state database refused the write): rewind to the level before it, so the
        change is asked for again, confirmed at once on the next reading or tick (its delay has already run), and
        the alarm is raised once the database takes writes again. The evaluator never holds a level that the
        alarm record does not. `last` is the latest transition of the same rule and point in the batch, if any."""
        key = (t.rule, t.device, t.quantity)
        st = self._state.get(key)
        waits = None if st is None else st.rewind(t, last)
        if waits is not None:
            (self._waiting.add if waits else self._waiting.discard)(key)

    def _find(self, rule: str, device: str) -> Bound | None:
        mine = [b for d, b in self._calendar if d == device]
        mine += [*self._any_point.get(device, ()), *(b for bs in self._by_key.get(device, {}).values() for b in bs)]
        return next((b for b in mine if b.rule.id == rule), None)

    def spans(self, device: str) -> set[float]:
        """The spans of a device's windowed rules (alerting/memory.py loads no other window)."""
        return {b.rule.window for bs in self._by_key.get(device, {}).values() for b in bs if b.rule.measure in WINDOWED}

    def observe(self, reading: Reading, now_ns: int) -> list[Transition]:
        self._remember(reading)
        out: list[Transition] = []
        self._evaluate(reading, now_ns, out)
        return out

    def observe_batch(self, readings: Iterable[Reading], now_ns: int) -> list[Transition]:
        """A batch (one poll, one message): gates see the batch's own values, whatever the order inside it."""
        batch = list(readings)
        kept = self._kept
        for r in batch:
            if r.quantity in kept:
                self._remember(r)
        out: list[Transition] = []
        evaluate = self._evaluate
        # a reading of a quantity with no rules on its device, and no point fault to raise or clear, has nothing to
        # evaluate: found here, per run of a device, with no call of `_evaluate` (half of a crane's readings)
        by_key, any_point, faulted, bad, not_ready = self._by_key, self._any_point, self._faulted, _BAD, _NOT_READY
        dev: str | None = None
        mine: dict[str, tuple[Bound, ...]] | None = None
        faults = False  # the device has point-fault rules
        for r in batch:
            if r.device is not dev:
                dev = r.device
                mine = by_key.get(dev)
                faults = bool(any_point.get(dev))
            q = r.quality
            if (
                (mine is None or mine.get(r.quantity) == ())
                and q is not bad
                # (`faulted` looked up per reading: a BAD reading before this one in the batch may have opened one)
                and (not faults or q is not_ready or r.device not in faulted)
            ):
                continue
            evaluate(r, now_ns, out)
        return out

    def _remember(self, r: Reading) -> None:
        if r.quantity in self._kept:
            if r.quality <= _UNCERTAIN:  # valid
                self._latest.setdefault(r.device, {})[r.quantity] = r.value
            else:  # BAD, NOT_READY: the value is unknown now, not the last valid one (a faulted anemometer's calm
                # reading from before kept verticality's gate open in a storm): a gate on it closes until a valid one
                self._latest.get(r.device, {}).pop(r.quantity, None)

    def _base_bounds(self, mine: dict[str, tuple[Bound, ...]], quantity: str) -> tuple[Bound, ...]:
        """The rules of a quantity's catalog base (depth families share their base's rules), kept in the device's
        table under the quantity itself, () for none: looked up once per table and quantity, not per reading."""
        if quantity not in self._base:
            try:
                base: str | None = quantities.lookup(quantity).name
            except KeyError:
                base = None
            self._base[quantity] = base if base != quantity else None
        base = self._base[quantity]
        bounds = mine[quantity] = (mine.get(base) if base is not None else None) or ()
        return bounds

    def _evaluate(self, r: Reading, now_ns: int, out: list[Transition]) -> None:
        """The reading's transitions, appended to `out`. Every reading of a site passes here, most of them with
        nothing to change: the checks that say so come first, inline (a call each cost as much as the checks)."""
        faults = self._any_point.get(r.device)
        q = r.quality
        if (
            faults
            and (q is _BAD or (q is not _NOT_READY and r.device in self._faulted))
            and r.quantity != "up"
            and self.measures.is_measured(r.quantity)
        ):
            # the point's fault condition: raised by a BAD reading, cleared by the point's next valid one
            bad = q is _BAD  # else valid: GOOD or UNCERTAIN
            if bad:
                self._faulted.add(r.device)
            for b in faults:
                if bad:
                    out.extend(self._step(b, r.device, r.quantity, 1.0, None, now_ns, r.ts_ns))
                elif (b.rule.id, r.device, r.quantity) in self._state:
                    out.extend(self._step(b, r.device, r.quantity, 0.0, None, now_ns, r.ts_ns))
        mine = self._by_key.get(r.device)
        if mine is None:
            return
        bounds = mine.get(r.quantity)
        if bounds is None:
            bounds = self._base_bounds(mine, r.quantity)
            if not bounds:
                return
        fed: set[int] | None = None  # windows fed by this reading (rules may share one), made for the first rule
        for b in bounds:
            rule = b.rule
            # not valid: no value rule sees it, nor a health rule on a measured value (a BAD moment of 655.35 % raised
            # the latched limiter-bypass alarm, found by a review); flags (sensor_fault, up...) are read whatever it is
            if r.quality > _UNCERTAIN and (rule.category == "value" or self.measures.is_measured(r.quantity)):
                # nor does an off-delay run out on one: a lull's reading no longer stands (BAD winds cleared wind)
                st = self._state.get(key := (rule.id, r.device, r.quantity))
                if st is not None and st.candidate is not None and st.candidate < st.level:
                    self._withdraw(st, key, st.cand_value, now_ns)  # (a clear: no pending announcement to cancel)
                continue
            quiet = b.quiet
            if quiet is not None:
                # below every threshold, at rest (no state, or no level, candidate or announcement), not older than
                # the newest judged: stepping would change nothing but that time, gate open or not (NaN, ±inf: the
                # full path, which judges no value that is not finite)
                sign, limit = quiet
                if _NEG_INF < (r.value * sign if sign else abs(r.value)) < limit:
                    st = self._state.get((rule.id, r.device, r.quantity))
                    if st is None:  # judged, to nothing: its time kept, or an older reading above was the present
                        if (pts := self._rest.get(r.device)) is None:
                            pts = self._rest[r.device] = {}
                        if r.ts_ns > pts.get(r.quantity, 0):
                            pts[r.quantity] = r.ts_ns
                            if r.ts_ns > self._rest_max.get(r.device, 0):  # (States.rested says why)
                                self._rest_max[r.device], self._rest_at[r.device] = r.ts_ns, now_ns
                        continue
                    if not st.level and st.candidate is None and st.pending is None and r.ts_ns >= st.judged_ns:
                        if r.ts_ns > st.judged_ns:  # (judged, to nothing: an older reading after it is history)
                            st.judged_ns, st.judged_at_ns = r.ts_ns, now_ns
                        continue
            if fed is None:  # (past the quiet check: most readings never get here)
                fed = set()
            v = self.measures.measure(b, r, fed)
            if v is None:
                # no rate of its own (a survey older than the newest), yet its day may complete a run of days: judged
                # as of the newest, however long ago that came (with no rate it cannot be judged as the present)
                st = self._state.get(key := (rule.id, r.device, r.quantity)) if b.days is not None else None
                if st is not None and r.ts_ns < st.judged_ns:
                    out.extend(self._late_day(st, key, now_ns))
                continue
            days, v = self.measures.days_run(b, r.device, r.quantity, r.ts_ns, v) if b.days is not None else (None, v)
            if not self._gate_open(b, r.device):
                # the level is kept while the gate is closed (a crane at work stops us measuring its verticality, not
                # the deviation); the reading is the newest all the same, as on the quiet path (an older one history)
                st = self._state.get(key := (rule.id, r.device, r.quantity))
                if st is None and b.quiet is not None:
                    self._state.rested(r.device, r.quantity, r.ts_ns, now_ns)  # (at rest: no state made for it)
                    continue
                if st is None or r.ts_ns > st.judged_ns:
                    st = st or self._state.new(key, b)
                    st.judged(r.ts_ns, now_ns, v, b.days is not None)
                out.extend(self._withdraw(st, key, st.cand_value, now_ns))
                continue
            out.extend(self._step(b, r.device, r.quantity, v, days, now_ns, r.ts_ns))

    def _gate_open(self, b: Bound, device: str) -> bool:
        if not b.rule.when:
            return True
        latest = self._latest.get(device, {})
        for c in b.rule.when:
            v = latest.get(c.quantity)
            if v is None or not c.holds(v):
                return False  # a gate quantity never seen counts as closed: the condition cannot be shown to hold
        return True

    # ---- levels -------------------------------------------------------------------------------------------------

    def _step(
        self, b: Bound, device: str, quantity: str, v: float, days: Threshold | None, now_ns: int, src_ns: int | None
    ) -> list[Transition]:
        key = (b.rule.id, device, quantity)
        st = self._state.get(key) or self._state.new(key, b)
        if src_ns is not None:
            if src_ns < st.judged_ns:
                if st.is_history(src_ns, now_ns, self.devices[device].expected_interval_s):
                    return [] if b.days is None else self._late_day(st, key, now_ns)
            elif src_ns > st.judged_ns:
                st.judged(src_ns, now_ns, v, b.days is not None)
        rule = b.rule
        x = abs(v) if rule.direction == "abs" else v
        low = rule.direction == "low"
        db = rule.deadband
        target = Level.NORMAL
        crossed: Threshold | None = None
        fresh = src_ns is None or src_ns > st.run_ns  # (a reading heard again, or older, is not counted again)
        for level, value, th in b.thresholds:
            at = (x <= value if low else x >= value) if th.inclusive else (x < value if low else x > value)
            if th.consecutive > 1:  # surveys in a row at the threshold, whatever the level; not one heard twice (a
                # QoS 1 message delivered again, after a restart too) or older
                run = st.runs.get(level, 0)
                run = st.runs[level] = (run + 1 if at else 0) if fresh else run
                st.run_ns = (src_ns or 0) if fresh else st.run_ns
            if level > st.level:  # entering: at the threshold (on enough consecutive readings when it asks)
                hit = at and (th.consecutive <= 1 or run >= th.consecutive)
            else:  # holding: until back beyond the deadband (with none, until no longer at the threshold)
                hit = (x < value + db or at) if low else (x > value - db or at)
            if hit and level > target:
                target, crossed = level, th
        if days is not None and days.level > target:  # its run of days (consecutive_days): in force while it holds
            target, crossed = days.level, days
        return self._move(st, key, target, crossed, v, now_ns, src_ns)

    def _late_day(self, st: _State, key: _Key, now_ns: int) -> list[Transition]:
        """History went into the days of a run-of-days rule (a survey sent after a later one, a gauge's buffer) and
        may have completed the run: judged as the days now stand at the newest reading, with its value, the run may
        raise (the older reading's own value never does); nothing clears or lowers on history."""
        if not self._gate_open(st.bound, key[1]):
            return []
        days, v = self.measures.days_run(st.bound, key[1], key[2], st.judged_ns, st.judged_v)
        if days is not None and st.candidate is not None and st.candidate < st.level <= days.level:
            return self._withdraw(st, key, v, now_ns)  # a lowering the run now contradicts: the level holds
        if days is None or days.level <= max(st.level, st.candidate or Level.NORMAL):
            return []  # (a raise waiting for its delay at the run's level or above keeps its own start)
        return self._move(st, key, days.level, days, v, now_ns, st.judged_ns)

    def _move(
        self, st: _State, key: _Key, target: Level, crossed: Threshold | None, v: float, now_ns: int, src_ns: int | None
    ) -> list[Transition]:
        if target == st.level:
            return self._withdraw(st, key, v, now_ns)
        out: list[Transition] = []
        up = target > st.level
        if st.candidate is None or (st.candidate > st.level) != up:
            if st.pending is not None:  # an upward candidate turned into a downward one
                out.append(self._cancelled(st, key, v, now_ns))
                st.pending = None
            st.since_ns = now_ns
        st.candidate, st.cand_threshold, st.cand_value, st.cand_source = target, crossed, v, src_ns
        delay_s = st.bound.rule.on_delay_s if up else st.bound.rule.off_delay_s
        if now_ns - st.since_ns >= delay_s * NS:
            out.append(self._confirm(st, key, now_ns))
        else:
            self._waiting.add(key)
            if up and st.pending != target:
                st.pending = target
                out.append(Transition(*key, st.level, target, v, crossed, now_ns, "pending", src_ns))
        return out

    def _withdraw(self, st: _State, key: _Key, v: float, now_ns: int) -> list[Transition]:
        """A change waiting for its delay taken back, the level kept: the value is back (`_move`), or its gate
        closed (a tilt seen before the crane worked was confirmed once it was idle again, a review), or an invalid
        reading came (a clear). A pending raise is cancelled, at `v`."""
        out = [self._cancelled(st, key, v, now_ns)] if st.pending is not None else []
        st.candidate, st.pending = None, None
        self._waiting.discard(key)
        return out

    @staticmethod
    def _cancelled(st: _State, key: _Key, v: float, now_ns: int) -> Transition:
        assert st.pending is not None
        return Transition(*key, st.level, st.pending, v, st.cand_threshold, now_ns, "cancelled", st.cand_source)

    def _confirm(self, st: _State, key: _Key, now_ns: int) -> Transition:
        assert st.candidate is not None
        old, st.level = st.level, st.candidate
        th = st.cand_threshold if st.level is not Level.NORMAL else None
        st.candidate, st.pending = None, None
        self._waiting.discard(key)
        return Transition(*key, old, st.level, st.cand_value, th, now_ns, "confirmed", st.cand_source)

    # ---- time ---------------------------------------------------------------------------------------------------

    def tick(self, now_ns: int) -> list[Transition]:
        """Delays that ran out without a new reading, then calendar rules (calibration overdue)."""
        out: list[Transition] = []
        for key in sorted(self._waiting):
            st = self._state[key]
            if st.candidate is not None and not self._gate_open(st.bound, key[1]):
                out.extend(self._withdraw(st, key, st.cand_value, now_ns))
            if st.candidate is None:
                continue
            rule = st.bound.rule
            delay_s = rule.on_delay_s if st.candidate > st.level else rule.off_delay_s
            if now_ns - st.since_ns >= delay_s * NS:
                out.append(self._confirm(st, key, now_ns))
        today = datetime.datetime.fromtimestamp(now_ns // NS, self._zone).date()
        for device, b in self._calendar:
            due = self.devices[device].calibration_due
            assert due is not None
            out.extend(self._step(b, device, CALENDAR_QUANTITY, float((today - due).days), None, now_ns, None))
        return out
