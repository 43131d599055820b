"""Evaluator mechanics: delay phases (pending / cancelled / confirmed), tick, restore, quality, batches, families."""

from __future__ import annotations

import pytest

from alerting.baselines import Baselines
from alerting.db import connect
from alerting.derived import DeviceContext, WarningLimit
from alerting.evaluator import Evaluator
from alerting.rules import Confidence, Level, Rule, Source, default_rules
from alerting.transition import Transition
from telemetry.reading import Quality, Reading

S = 1_000_000_000


def lel(on: float = 0.0, off: float = 0.0) -> Rule:
    return default_rules()["gas.lel"].model_copy(update={"on_delay_s": on, "off_delay_s": off})  # 25 / 50 %LEL


def gas_ev(rule: Rule) -> Evaluator:
    return Evaluator({"G": [rule]}, {"G": DeviceContext("gas")})


def feed(ev: Evaluator, seq: list[tuple[float, float]], quantity: str = "lel") -> list[tuple[str, int, int, float]]:
    """(seconds, value) readings; returns (phase, old, new, at s) of every transition."""
    out: list[tuple[str, int, int, float]] = []
    for sec, v in seq:
        for t in ev.observe(Reading("G", quantity, v, int(sec * S)), int(sec * S)):
            out.append((t.phase, int(t.old), int(t.new), t.at_ns / S))
    return out


def test_on_delay_pending_then_confirmed() -> None:
    ev = gas_ev(lel(on=5))
    got = feed(ev, [(s, 30) for s in range(7)])
    assert got == [("pending", 0, 2, 0.0), ("confirmed", 0, 2, 5.0)]


def test_candidate_gone_before_the_delay_is_cancelled() -> None:
    ev = gas_ev(lel(on=5))
    got = feed(ev, [(0, 30), (1, 30), (2, 10), (3, 10), (9, 10)])
    assert got == [("pending", 0, 2, 0.0), ("cancelled", 0, 2, 2.0)]
    assert ev.level("gas.lel", "G") is Level.NORMAL


def test_rising_candidate_keeps_its_start_time() -> None:
    # the condition "above NORMAL" has held since t=0: a higher reading during the delay re-announces, not restarts
    ev = gas_ev(lel(on=5))
    got = feed(ev, [(0, 30), (2, 60), (5, 60)])
    assert got == [("pending", 0, 2, 0.0), ("pending", 0, 3, 2.0), ("confirmed", 0, 3, 5.0)]


def test_tick_confirms_delays_without_new_readings() -> None:
    ev = gas_ev(lel(on=5, off=10))
    assert feed(ev, [(0, 30)]) == [("pending", 0, 2, 0.0)]
    assert ev.tick(4 * S) == []
    (t,) = ev.tick(5 * S)
    assert (t.phase, t.new, t.value, t.at_ns) == ("confirmed", Level.ALARM, 30, 5 * S)
    assert t.threshold is not None and t.threshold.value == 25
    # going down: off-delay, no pending announcement, confirmed by tick
    assert feed(ev, [(6, 0)]) == []
    assert ev.tick(15 * S) == []
    (t,) = ev.tick(16 * S)
    assert (t.phase, t.old, t.new, t.threshold) == ("confirmed", Level.ALARM, Level.NORMAL, None)
    assert ev.tick(100 * S) == []


def test_a_transition_that_was_not_stored_is_asked_for_again_without_a_new_delay() -> None:
    """The alarm database refused the raise: the evaluator rewinds, and the next tick (or reading) confirms again
    at once, since the on-delay had already run; a clear that was not stored is retried the same way."""
    ev = gas_ev(lel(on=5, off=10))
    feed(ev, [(0, 30)])
    (t,) = ev.tick(5 * S)
    assert (t.phase, t.new) == ("confirmed", Level.ALARM)
    ev.unstored(t)
    assert ev.level("gas.lel", "G") is Level.NORMAL  # never a level the alarm record does not have
    (again,) = ev.tick(6 * S)
    assert (again.phase, again.old, again.new, again.value) == ("confirmed", Level.NORMAL, Level.ALARM, 30)
    assert again.threshold is not None and again.threshold.value == 25
    assert feed(ev, [(7, 31)]) == []  # stored this time: no third raise
    # a higher level in the same batch after the refused one: the retry asks for the latest level at once
    ev2 = gas_ev(lel())
    first, second = ev2.observe(Reading("G", "lel", 30, 0), 0) + ev2.observe(Reading("G", "lel", 60, S), S)
    ev2.unstored(first, second)
    assert ev2.level("gas.lel", "G") is Level.NORMAL
    (t2,) = ev2.tick(2 * S)
    assert (t2.old, t2.new, t2.value) == (Level.NORMAL, Level.DANGER, 60)
    # a clear that was not stored: the level stays until the clear is stored
    feed(ev, [(8, 0)])
    (clear,) = ev.tick(18 * S)
    ev.unstored(clear)
    assert ev.level("gas.lel", "G") is Level.ALARM
    (clear2,) = ev.tick(19 * S)
    assert (clear2.old, clear2.new) == (Level.ALARM, Level.NORMAL)


def test_value_back_during_off_delay_keeps_the_level_silently() -> None:
    ev = gas_ev(lel(off=10))
    assert feed(ev, [(0, 30), (1, 0), (5, 30), (12, 30)]) == [("confirmed", 0, 2, 0.0)]
    assert ev.level("gas.lel", "G") is Level.ALARM


def test_deadband_and_falling_to_a_lower_level() -> None:
    ev = gas_ev(lel())  # deadband 2 %LEL
    got = feed(ev, [(0, 55), (1, 48.5), (2, 47.9), (3, 23.5), (4, 22.9)])
    assert got == [("confirmed", 0, 3, 0.0), ("confirmed", 3, 2, 2.0), ("confirmed", 2, 0, 4.0)]


def test_at_the_threshold_with_no_deadband_holds() -> None:
    rule = default_rules()["health.sensor_fault"]  # deadband 0: a value staying at 1 must not chatter
    ev = Evaluator({"G": [rule]}, {"G": DeviceContext("gas")})
    got = feed(ev, [(0, 1), (1, 1), (2, 1), (3, 0)], quantity="sensor_fault")
    assert got == [("confirmed", 0, 2, 0.0), ("confirmed", 2, 0, 3.0)]


def test_restore_continues_from_the_open_alarm() -> None:
    ev = gas_ev(lel())
    ev.restore("gas.lel", "G", "lel", Level.ALARM)
    assert ev.level("gas.lel", "G") is Level.ALARM
    assert feed(ev, [(0, 30)]) == []  # still in alarm: no duplicate raise after a restart
    assert feed(ev, [(1, 0)]) == [("confirmed", 2, 0, 1.0)]
    ev.restore("gas.nope", "G", "lel", Level.ALARM)  # a rule no longer configured: ignored
    assert ev.level("gas.nope", "G") is Level.NORMAL


def test_quality() -> None:
    ev = gas_ev(lel())
    assert feed(ev, [(0, 80)]) == [("confirmed", 0, 3, 0.0)]
    # a BAD value (sensor fault) neither raises nor clears a value alarm
    assert ev.observe(Reading("G", "lel", 0, S, Quality.BAD), S) == []
    assert ev.level("gas.lel", "G") is Level.DANGER
    # UNCERTAIN (implausible or back-filled) is evaluated: it may be a real extreme
    (t,) = ev.observe(Reading("G", "lel", 0, 2 * S, Quality.UNCERTAIN), 2 * S)
    assert t.new is Level.NORMAL


def test_batch_gates_see_the_whole_batch() -> None:
    rule = default_rules()["tc.tilt_x"]
    ev = Evaluator({"TC": [rule]}, {"TC": DeviceContext("tower_crane")})
    # tilt first, gate quantities after it in the same poll
    batch = [Reading("TC", "tilt_x", 5.0, 0), Reading("TC", "load", 0.0, 0), Reading("TC", "wind_speed", 1.0, 0)]
    (t,) = ev.observe_batch(batch, 0)
    assert (t.rule, t.new) == ("tc.tilt_x", Level.ALARM)
    # a BAD gate value does not count as known
    ev2 = Evaluator({"TC": [rule]}, {"TC": DeviceContext("tower_crane")})
    batch[1] = Reading("TC", "load", 0.0, 0, Quality.BAD)
    assert ev2.observe_batch(batch, 0) == []


def test_depth_families_share_the_base_rule_per_point() -> None:
    rule = default_rules()["exc.deep_displacement"]  # 70 % / 100 % of the point's design 预警值, 30 mm here
    plan = WarningLimit(30.0, None, Source(standard="plan", confidence=Confidence.PRIMARY), "30 mm")
    b = Baselines(connect(":memory:"), lambda: 0)
    b.set("CX", "deep_displacement_d6m", 100.0, "surveyor")
    ctx = DeviceContext("excavation", warning_values={"deep_displacement": plan})
    ev = Evaluator({"CX": [rule]}, {"CX": ctx}, b)
    got: list[Transition] = []
    for q, v in [("deep_displacement_d4m", 130.0), ("deep_displacement_d6m", 120.0), ("deep_displacement_d6m", 121.0)]:
        got += ev.observe(Reading("CX", q, v, 0), 0)
    # d4m has no baseline: nothing; d6m is judged on its own change from its own baseline (21 mm = 70 % of 30)
    assert [(t.quantity, t.new, t.value) for t in got] == [("deep_displacement_d6m", Level.PREWARNING, 70.0)]
    assert ev.level(rule.id, "CX", "deep_displacement_d4m") is Level.NORMAL
    assert ev.level(rule.id, "CX") is Level.PREWARNING  # the highest over the points


def test_construction_reports_inactive_rules() -> None:
    rules = default_rules()
    ctx = {"P": DeviceContext("excavation"), "F": DeviceContext("formwork", design_values={"axial_force": 40})}
    ev = Evaluator(
        {"P": [rules["exc.horizontal_displacement"], rules["exc.strut_force"]], "F": [rules["fw.axial_force"]]}, ctx
    )
    assert sorted(ev.inactive) == [
        ("P", "exc.horizontal_displacement", "needs warning_values.horizontal_displacement.cumulative"),
        ("P", "exc.strut_force", "no threshold value (project value required)"),
    ]
    with pytest.raises(ValueError, match="device 'X', which has no DeviceContext"):
        Evaluator({"X": [rules["gas.lel"]]}, ctx)


def test_unknown_devices_and_quantities_are_ignored() -> None:
    ev = gas_ev(lel())
    assert ev.observe(Reading("X", "lel", 80, 0), 0) == []
    assert ev.observe(Reading("G", "co", 80, 0), 0) == []
    assert ev.observe(Reading("G", "weird_q", 80, 0), 0) == []


def test_devices_of_one_model_share_their_bound_rules_and_a_stricter_device_keeps_its_own() -> None:
    # 2 000 cranes of one model bound 20 000 equal threshold tuples; equal ones are now one object, and a crane
    # with its own (stricter) wind limit still alarms on its own value
    rules = [r for r in default_rules().values() if r.kind.value == "tower_crane"]
    same = DeviceContext("tower_crane", wind_limit_ms=None)
    strict = DeviceContext("tower_crane", wind_limit_ms=9.0)
    ev = Evaluator({d: rules for d in ("A", "B", "C")}, {"A": same, "B": same, "C": strict})
    wind = next(r.id for r in rules if any(t.stricter_of_device for t in r.thresholds))
    a, b, c = (ev._find(wind, d) for d in "ABC")
    assert a is not None and b is not None and c is not None
    assert a.thresholds is b.thresholds and a.thresholds is not c.thresholds
    assert 9.0 in {v for _, v, _ in c.thresholds} and 9.0 not in {v for _, v, _ in a.thresholds}
    # the bound rules name no device, so alike devices share them and their whole table; levels stay per device
    assert a is b and ev._by_key["A"] is ev._by_key["B"] and ev._by_key["A"] is not ev._by_key["C"]
    got = ev.observe_batch([Reading("A", "wind_speed", 11.5, S), Reading("B", "wind_speed", 2.0, S)], S)
    assert {(t.device, int(t.new)) for t in got if t.phase == "confirmed"} == {("A", 2)}
    assert ev.level(wind, "A", "wind_speed") == Level(2) and ev.level(wind, "B", "wind_speed") == Level(0)
    got = ev.observe_batch([Reading("C", "wind_speed", 9.5, 2 * S)], 2 * S)  # its own 9 m/s
    assert {(t.device, int(t.new)) for t in got if t.phase == "confirmed"} == {("C", 2)}


def test_only_the_values_gates_read_are_kept_and_gates_still_see_them() -> None:
    # the evaluator keeps a device's latest values for its gates (`when:`) and `up` only: 2 000 devices' every
    # quantity was 1.3 MB; a gate still opens and closes on the values it reads
    rules = [r for r in default_rules().values() if r.kind.value == "tower_crane"]
    gated = {c.quantity for r in rules for c in r.when}
    assert {"load", "wind_speed", "hoisting_up"} <= gated and not {"radius", "height"} & gated
    ev = Evaluator({"TC": rules}, {"TC": DeviceContext("tower_crane")})
    verticality = next(r for r in rules if r.when and any(c.quantity == "load" for c in r.when))
    vq = verticality.quantity
    batch = [Reading("TC", q, 0.0, S) for q in ("load", "hoisting_up", "wind_speed", "radius", "height")]
    ev.observe_batch([*batch, Reading("TC", vq, 0.0, S)], S)
    assert set(ev._latest["TC"]) == {"load", "wind_speed", "hoisting_up"} | ({vq} & gated)
    b = ev._find(verticality.id, "TC")
    assert b is not None and ev._gate_open(b, "TC")  # idle: the gate holds
    ev.observe_batch([Reading("TC", "load", 3.0, 2 * S)], 2 * S)
    assert not ev._gate_open(b, "TC")  # lifting: closed


@pytest.mark.parametrize("quality", [Quality.BAD, Quality.NOT_READY])
def test_an_invalid_moment_does_not_raise_the_limiter_bypass_alarm(quality: Quality) -> None:
    # Found by a review: tc.limiter_bypass is a health rule on a measured value, and health rules saw invalid
    # readings: a faulted moment channel (655.35 %, BAD) while hoisting raised its latched 危险
    rule = default_rules()["tc.limiter_bypass"]
    ev = Evaluator({"TC": [rule]}, {"TC": DeviceContext("tower_crane")})
    hoisting = Reading("TC", "hoisting_up", 1.0, 1 * S)
    assert ev.observe_batch([hoisting, Reading("TC", "load_moment_ratio", 655.35, 1 * S, quality)], 1 * S) == []
    (t,) = ev.observe_batch([hoisting, Reading("TC", "load_moment_ratio", 120.0, 2 * S)], 2 * S)
    assert (t.rule, t.new) == ("tc.limiter_bypass", Level.DANGER)  # a valid one still does


def _crane(rule: Rule) -> Evaluator:
    return Evaluator({"TC": [rule]}, {"TC": DeviceContext("tower_crane")})


def _at(ev: Evaluator, sec: float, *readings: tuple[str, float, Quality]) -> list[tuple[str, int, int]]:
    now = int(sec * S)
    got = ev.observe_batch([Reading("TC", q, v, now, qual) for q, v, qual in readings], now) + ev.tick(now)
    return [(t.phase, int(t.old), int(t.new)) for t in got]


G, B = Quality.GOOD, Quality.BAD


@pytest.mark.parametrize("quality", [Quality.BAD, Quality.NOT_READY])
def test_an_off_delay_does_not_run_out_on_invalid_readings(quality: Quality) -> None:
    # Found by a review: wind 13 m/s, one lull at 7 started the off-delay, and the BAD readings after it let the
    # delay run out: the alarm cleared while the anemometer said nothing valid
    ev = _crane(default_rules()["tc.wind"].model_copy(update={"off_delay_s": 60}))
    assert _at(ev, 0, ("wind_speed", 13.0, G)) == [("confirmed", 0, 2)]
    assert _at(ev, 5, ("wind_speed", 7.0, G)) == []  # the off-delay starts
    for sec in range(10, 120, 10):
        assert _at(ev, sec, ("wind_speed", 14.0, quality)) == []
    assert ev.level("tc.wind", "TC", "wind_speed") == Level.ALARM
    assert _at(ev, 130, ("wind_speed", 7.0, G)) == []  # a valid lull starts it again
    assert _at(ev, 190, ("wind_speed", 7.0, G)) == [("confirmed", 2, 0)]


def test_a_delay_does_not_run_on_while_its_gate_is_closed() -> None:
    # Found by a review: verticality is judged only with the crane idle; a tilt seen before it lifted was confirmed
    # at the first tick once it was idle again, whatever the tilt was by then
    calm = (("load", 0.0, G), ("wind_speed", 1.0, G))
    ev = _crane(default_rules()["tc.tilt_x"].model_copy(update={"on_delay_s": 60}))
    assert _at(ev, 0, *calm, ("tilt_x", 5.0, G)) == [("pending", 0, 2)]
    assert _at(ev, 20, ("load", 3.0, G)) == [("cancelled", 0, 2)]  # lifting: the pending raise is taken back
    assert _at(ev, 30, ("tilt_x", 1.0, G)) == []  # (not evaluated: the gate is closed)
    assert _at(ev, 90, ("load", 0.0, G)) == [] and _at(ev, 91) == []  # idle again: nothing confirmed
    assert ev.level("tc.tilt_x", "TC", "tilt_x") == Level.NORMAL
    assert _at(ev, 95, ("tilt_x", 5.0, G)) == [("pending", 0, 2)]  # a tilt seen idle starts the delay again

    ev = _crane(default_rules()["tc.tilt_x"].model_copy(update={"off_delay_s": 60}))
    assert _at(ev, 0, *calm, ("tilt_x", 5.0, G)) == [("confirmed", 0, 2)]
    assert _at(ev, 10, ("tilt_x", 3.9, G)) == []  # the off-delay starts
    assert _at(ev, 20, ("load", 3.0, G)) == []
    assert _at(ev, 90, ("load", 0.0, G)) == [] and _at(ev, 91) == []
    assert ev.level("tc.tilt_x", "TC", "tilt_x") == Level.ALARM  # not cleared on the reading before the lift


def test_an_older_reading_neither_clears_nor_changes_a_live_alarm() -> None:
    """A reading older than the newest one judged (a device's buffer back-filled after an outage, domain.md §1.4; a
    QoS 1 message delivered again) was judged like a new one: history cleared the live alarm, or lowered it, and
    the next live reading raised it again. It is now ignored for the level; a reading as new as the newest is not
    older, and a newer one is judged as always."""
    ev = gas_ev(lel())

    def at(ts: int, v: float, now: int) -> list[tuple[str, int]]:  # a reading stamped `ts` heard at `now`
        return [(t.phase, int(t.new)) for t in ev.observe(Reading("G", "lel", v, ts * S), now * S)]

    assert at(1000, 60, 1000) == [("confirmed", 3)]  # live: 60 %LEL, 危险
    assert at(400, 0, 1001) == []  # the buffer from the outage: clean air ten minutes earlier
    assert at(999, 30, 1002) == []  # a second earlier, 报警 only: not a level down either
    assert ev.level("gas.lel", "G") is Level.DANGER
    assert at(1003, 30, 1003) == [("confirmed", 2)]  # live, newer: judged
    assert at(1003, 0, 1004) == [("confirmed", 0)]  # the same time as the newest: not older, judged
    assert at(1004, 10, 1005) == []  # quiet, at rest
    assert at(1003, 60, 1006) == []  # heard again after it: history, no raise
    assert ev.level("gas.lel", "G") is Level.NORMAL


def test_a_device_clock_set_back_is_judged_once_its_newest_reading_is_stale() -> None:
    """Readings older than the newest judged are ignored only while the newest is current (3x the expected
    interval, the stale rule of domain.md §1.4): a device whose clock was set back (a flat RTC battery: 2000-01-01)
    would otherwise have its levels frozen until its clock caught up."""
    ev = Evaluator({"G": [lel()]}, {"G": DeviceContext("gas", expected_interval_s=60)})
    t0, y2000 = 1_750_000_000, 946_684_800
    (t,) = ev.observe(Reading("G", "lel", 30, t0 * S), t0 * S)
    assert t.new is Level.ALARM
    assert ev.observe(Reading("G", "lel", 60, y2000 * S), (t0 + 60) * S) == []  # may still be a buffer sent late
    (t,) = ev.observe(Reading("G", "lel", 60, (y2000 + 120) * S), (t0 + 181) * S)  # the newest is stale: judged
    assert (t.phase, t.new) == ("confirmed", Level.DANGER)
    (t,) = ev.observe(Reading("G", "lel", 0, (y2000 + 180) * S), (t0 + 240) * S)  # on the new clock from then on
    assert (t.phase, t.new) == ("confirmed", Level.NORMAL)


# What a second review found of the guard above, when it compared the newest judged time with the gateway's clock:
# a device clock ahead and then set right was blind for the offset, one running behind was never guarded. When the
# newest came is kept by the gateway's clock now.
T0 = 1_750_000_000


def gas_every(every: float) -> Evaluator:
    return Evaluator({"G": [lel()]}, {"G": DeviceContext("gas", expected_interval_s=every)})


def test_a_device_clock_ahead_then_set_right_is_judged_after_three_intervals() -> None:
    ev = gas_every(10)
    ahead = 250  # within ClockCheck's max_ahead_s (300): passed on with the device's own time
    assert [t.new for t in ev.observe(Reading("G", "lel", 30, (T0 + ahead) * S), T0 * S)] == [Level.ALARM]
    assert [t.new for t in ev.observe(Reading("G", "lel", 0, (T0 + ahead + 10) * S), (T0 + 10) * S)] == [Level.NORMAL]
    got = []  # the clock set right; the gas rises to 60 %LEL, a reading every 10 s
    for now in range(T0 + 20, T0 + 200, 10):
        got += [(now, t.new) for t in ev.observe(Reading("G", "lel", 60, now * S), now * S)]
    assert got[:1] == [(T0 + 50, Level.DANGER)]  # 3 intervals after the newest came (it was 280 s: the offset too)


def test_a_device_clock_running_behind_is_guarded_too() -> None:
    ev = gas_every(10)
    (t,) = ev.observe(Reading("G", "lel", 60, (T0 - 300) * S), T0 * S)  # 5 min behind, live
    assert t.new is Level.DANGER
    assert ev.observe(Reading("G", "lel", 0, (T0 - 900) * S), (T0 + 1) * S) == []  # its buffer: history


def test_the_gateways_own_readings_of_a_device_do_not_make_its_readings_history() -> None:
    """The gateway stamps a device's `up` with its own time, a little after the device's reading of the same message:
    a newest time kept per device (a first mend) took the gas reading for history and raised no alarm at all (the
    alarm benchmark's detectors). The newest is kept per rule and point."""
    ev = gas_every(10)
    now = T0 * S + 1_000_000
    got = ev.observe_batch([Reading("G", "lel", 30, T0 * S), Reading("G", "up", 1, now)], now)
    assert [(t.phase, t.new) for t in got] == [("confirmed", Level.ALARM)]
