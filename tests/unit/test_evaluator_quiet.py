"""The evaluator's quiet path (a reading below every threshold of a rule at rest) gives what stepping the rule gives,
readings older than the newest (back-filled, history) among them."""

from __future__ import annotations

import math

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import alerting.binding
from alerting.binding import quiet_limit
from alerting.derived import DeviceContext
from alerting.evaluator import Evaluator
from alerting.rules import Level, Rule, default_rules
from alerting.transition import Transition
from telemetry.reading import Quality, Reading

S = 1_000_000_000
RULES = ("gas.lel", "gas.o2_low", "gas.o2_high", "gas.co", "tc.wind", "tc.tilt_x", "tc.limiter_bypass")
GAS = ("lel", "o2", "co")
# the crane's gate quantities too (tilt: no load and a calm wind; the bypass: hoisting up)
QUANTITIES = (*GAS, "wind_speed", "tilt_x", "load_moment_ratio", "load", "hoisting_up")


def _edges(quantity: str) -> list[float]:
    """The thresholds of the rules on `quantity` and the gate limits on it, either side of each and of its
    deadband, and negated (abs rules)."""
    out: set[float] = {0.0, 1.0}
    for rid in RULES:
        r = default_rules()[rid]
        limits = [(th.value, r.deadband) for th in r.thresholds if th.value is not None and r.quantity == quantity]
        limits += [(c.value, 0.0) for c in r.when if c.quantity == quantity]
        for value, db in limits:
            for v in (value, value - db, value + db):
                out |= {v, math.nextafter(v, -math.inf), math.nextafter(v, math.inf), -v}
    return sorted(out)


Step = tuple[str, float, Quality, int, str, int]


@st.composite
def steps(draw: st.DrawFn) -> Step:
    """A reading, at and across its rules' thresholds and deadbands most of the time, else any value or one that
    compares oddly; or a tick of the clock; or a reading whose transitions the database refuses. Some readings are
    older than the clock (a device's buffer sent late): older than the newest, or not."""
    quantity = draw(st.sampled_from(QUANTITIES))
    edges = st.sampled_from(_edges(quantity))
    odd = st.sampled_from([math.nan, math.inf, -math.inf])
    value = draw(st.one_of(edges, edges, edges, odd, st.floats(min_value=-150, max_value=150, allow_nan=False)))
    quality = draw(st.sampled_from([Quality.GOOD, Quality.GOOD, Quality.UNCERTAIN, Quality.BAD, Quality.NOT_READY]))
    dt = draw(st.integers(min_value=0, max_value=4))  # seconds since the last step
    what = draw(st.sampled_from(["read", "read", "read", "tick", "unstored"]))
    back = draw(st.sampled_from([0, 0, 0, 1, 3]))  # seconds the reading's time is behind the clock
    return quantity, value, quality, dt, what, back


def _variants() -> list[Rule]:
    """Rules the defaults lack: a low rule with two levels, and one that counts readings in a row at a threshold."""
    base = default_rules()
    o2 = base["gas.o2_low"]
    (alarm,) = o2.thresholds
    danger = alarm.model_copy(update={"level": Level.DANGER, "value": 18.0})
    wind = base["tc.wind"]
    counted = [th.model_copy(update={"consecutive": 2}) for th in wind.thresholds]
    return [
        o2.model_copy(update={"id": "test.o2_two_levels", "thresholds": [alarm, danger]}),
        wind.model_copy(update={"id": "test.wind_in_a_row", "thresholds": counted}),
    ]


def evaluator(delays: list[tuple[float, float]]) -> Evaluator:
    rules: list[Rule] = []
    for r, (on, off) in zip([default_rules()[rid] for rid in RULES] + _variants(), delays, strict=True):
        rules.append(r.model_copy(update={"on_delay_s": on, "off_delay_s": off}))
    gas = [r for r in rules if r.quantity in GAS]
    crane = [r for r in rules if r.quantity not in GAS]
    return Evaluator(
        {"G": gas, "TC": crane},
        {
            "G": DeviceContext("gas", expected_interval_s=0.5),
            "TC": DeviceContext("tower_crane", expected_interval_s=0.5),
        },
    )


def run(ev: Evaluator, seq: list[Step]) -> list[Transition]:
    out: list[Transition] = []
    t = 0
    for quantity, value, quality, dt, what, back in seq:
        t += dt * S
        if what == "tick":
            got = ev.tick(t)
        else:
            device = "G" if quantity in GAS else "TC"
            got = ev.observe_batch([Reading(device, quantity, value, t - back * S, quality)], t)
            if what == "unstored" and got:
                ev.unstored(got[-1])  # the database refused it: asked for again from here on
        out.extend(got)
    return out


def key(t: Transition) -> tuple[object, ...]:
    v = "nan" if math.isnan(t.value) else t.value
    return (t.rule, t.device, t.quantity, t.old, t.new, v, t.threshold, t.at_ns, t.phase, t.source_ns)


G = Quality.GOOD
# a rule at rest, then a reading exactly at a threshold: it must enter (each direction), whatever the delays
AT_THRESHOLDS = [("lel", 1.0, G, 1, "read", 0), ("lel", 25.0, G, 1, "read", 0), ("o2", 20.9, G, 1, "read", 0)]
AT_THRESHOLDS += [("o2", 19.5, G, 1, "read", 0), ("load", 0.0, G, 0, "read", 0), ("wind_speed", 1.0, G, 0, "read", 0)]
AT_THRESHOLDS += [("tilt_x", 0.5, G, 1, "read", 0), ("tilt_x", -4.0, G, 1, "read", 0), ("tick", 0.0, G, 9, "tick", 0)]
AT_THRESHOLDS += [("o2", 17.0, G, 1, "read", 0), ("wind_speed", 9.0, G, 1, "read", 0)]
AT_THRESHOLDS += [("wind_speed", 9.0, G, 1, "read", 0)]
# a confirmed raise the database refused leaves a candidate standing: the next quiet reading must not hide it
REFUSED = [("lel", 30.0, G, 1, "unstored", 0), ("lel", 1.0, G, 1, "read", 0), ("tick", 0.0, G, 1, "tick", 0)]
# a rule that has never left rest, then a back-filled reading above its threshold: history, as for one that has
# (the quiet path kept no newest time for it, and the reading raised the alarm; the next live reading cleared it)
BACK_FILLED = [("lel", 1.0, G, 2, "read", 0), ("lel", 30.0, G, 1, "read", 2), ("lel", 1.0, G, 1, "read", 0)]
# an infinite value judges nothing (its measure is not finite): stepped, it leaves no newest time, and neither may the
# quiet path (an older reading above the threshold after it would raise nothing)
INFINITE = [("co", -math.inf, G, 1, "read", 0), ("co", 17.0, G, 0, "read", 1)]
# a tilt below its threshold while the crane is loaded (its gate closed) is judged, to nothing, on the quiet path; so
# it is when stepped (it was not: a back-filled tilt above the threshold after it raised, as the present, stepped)
GATED = [("load", 5.0, G, 1, "read", 0), ("wind_speed", 1.0, G, 0, "read", 0), ("tilt_x", 0.5, G, 1, "read", 0)]
GATED += [("load", 0.0, G, 1, "read", 0), ("tilt_x", 5.0, G, 0, "read", 2)]

# lel judged at 1; co (first seen) at 3 moves the device's rest_at; lel at 30 %LEL stamped 0 (older), heard at 3: its
# own guard (0.5 s x 3) lapsed at 2.5: stepped, 报警; on the quiet path, history
SHARED_REST_AT = [("lel", 1.0, G, 1, "read", 0), ("co", 1.0, G, 2, "read", 0), ("lel", 30.0, G, 0, "read", 3)]


@settings(max_examples=500, deadline=None)
@example(delays=[(0.0, 0.0)] * 9, seq=AT_THRESHOLDS)
@example(delays=[(2.0, 3.0)] * 9, seq=AT_THRESHOLDS)
@example(delays=[(0.0, 0.0)] * 9, seq=REFUSED)
@example(delays=[(0.0, 0.0)] * 9, seq=BACK_FILLED)
@example(delays=[(0.0, 0.0)] * 9, seq=INFINITE)
@example(delays=[(0.0, 0.0)] * 9, seq=GATED)
@example(delays=[(0.0, 0.0)] * 9, seq=SHARED_REST_AT)
@given(
    delays=st.lists(st.sampled_from([(0.0, 0.0), (2.0, 0.0), (0.0, 3.0), (5.0, 5.0)]), min_size=9, max_size=9),
    seq=st.lists(steps(), min_size=10, max_size=80),
)
def test_the_quiet_path_changes_nothing_stepping_would_change(
    delays: list[tuple[float, float]], seq: list[Step]
) -> None:
    fast = evaluator(delays)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(alerting.binding, "quiet_limit", lambda rule, thresholds: None)
        full = evaluator(delays)
    assert all(b.quiet is None for table in full._by_key.values() for bs in table.values() for b in bs)
    assert [key(t) for t in run(fast, seq)] == [key(t) for t in run(full, seq)]
    for k, was in full._state.items():
        now = fast._state.get(k)
        if now is None:  # the quiet path creates no state for a rule that has only ever been at rest
            assert (was.level, was.candidate, was.pending, was.runs) == (Level.NORMAL, None, None, {})
            continue
        assert (now.level, now.candidate, now.pending, now.since_ns, now.runs) == (
            was.level, was.candidate, was.pending, was.since_ns, was.runs
        )  # fmt: skip
        assert (now.cand_threshold, now.cand_source) == (was.cand_threshold, was.cand_source)
    assert fast._waiting == full._waiting


def test_quiet_limits_of_the_default_rules() -> None:
    rules = default_rules()

    def limit(r: Rule) -> tuple[int, float] | None:
        return quiet_limit(r, tuple((th.level, th.value, th) for th in r.thresholds if th.value is not None))

    assert limit(rules["gas.lel"]) == (1, 25.0)  # the lowest level's threshold
    assert limit(rules["gas.o2_low"]) == (-1, -19.5)  # low: quiet above the highest
    assert limit(rules["tc.tilt_x"]) == (0, 4.0)  # abs: |value| below
    assert limit(rules["tc.moment_ratio"]) == (1, 90.0)
    # rates, runs and anything not compared as the reading's own value always take the full path
    full = [r for r in rules.values() if r.measure != "value" or any(th.consecutive > 1 for th in r.thresholds)]
    assert full and all(limit(r) is None for r in full if all(th.value is not None for th in r.thresholds))
    assert Level.NORMAL == 0  # the evaluator tests a state's level for NORMAL by its truth value
