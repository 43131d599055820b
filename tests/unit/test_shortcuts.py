"""The MQTT path's shortcuts give what the full paths give: the evaluator's screen of readings with no rules, the
clock check's pass when every clock is in limits, the marker's loop when no clock was corrected, the epoch read at a
payload's top level, and the load chart searched in place."""

from __future__ import annotations

import bisect
import math

from hypothesis import example, given, settings
from hypothesis import strategies as st

from alerting.derived import DeviceContext, rated_load_at
from alerting.evaluator import Evaluator
from alerting.rules import default_rules
from alerting.transition import Transition
from drivers.errors import ProtocolError
from drivers.mqtt.payloads import PayloadDecoder
from drivers.profile import MqttProfile, builtin_profiles
from gateway.latest import Latest
from gateway.marking import Marker
from gateway.metrics import Metrics
from gateway.timecheck import ClockCheck
from telemetry.reading import Quality, Reading

S = 1_000_000_000
T0 = 1_795_224_600 * S
QUALITIES = st.sampled_from([Quality.GOOD, Quality.GOOD, Quality.UNCERTAIN, Quality.BAD, Quality.NOT_READY])

# ---- the evaluator's screen (alerting/evaluator.py observe_batch)

GAS_RULES = [r for r in default_rules().values() if r.kind.value in ("gas", "any")]
# gas quantities with rules, two without any (temperature, humidity: only the point fault applies) and `up`
GAS_QS = ("lel", "o2", "co", "temperature", "humidity", "up")


def gas_evaluator() -> Evaluator:
    return Evaluator({"G": GAS_RULES, "H": GAS_RULES}, {"G": DeviceContext("gas"), "H": DeviceContext("gas")})


def unscreened(ev: Evaluator, batch: list[Reading], now_ns: int) -> list[Transition]:
    """`observe_batch` as it was before the screen: every reading through `_evaluate`."""
    for r in batch:
        if r.quantity in ev._kept:
            ev._remember(r)
    out: list[Transition] = []
    for r in batch:
        ev._evaluate(r, now_ns, out)
    return out


def key(t: Transition) -> tuple[object, ...]:
    v = "nan" if math.isnan(t.value) else t.value
    return (t.rule, t.device, t.quantity, t.old, t.new, v, t.threshold, t.at_ns, t.phase, t.source_ns)


reading = st.tuples(
    st.sampled_from(["G", "H"]),
    st.sampled_from(GAS_QS),
    st.sampled_from([0.0, 1.0, 5.0, 19.0, 20.9, 23.5, 30.0, 60.0, 300.0, math.nan]),
    QUALITIES,
)


@settings(max_examples=300, deadline=None)
# a BAD reading opens a point fault that a valid reading of the same rule-less quantity, later in the same batch,
# clears: the screen must look the open faults up per reading, not once per run of the device
@example(batches=[[("G", "temperature", 0.0, Quality.BAD), ("G", "temperature", 20.0, Quality.GOOD)]])
@example(batches=[[("G", "humidity", 0.0, Quality.BAD)], [("G", "humidity", 5.0, Quality.NOT_READY)]])
@given(batches=st.lists(st.lists(reading, min_size=1, max_size=6), min_size=1, max_size=30))
def test_the_screen_of_readings_without_rules_changes_no_transition(
    batches: list[list[tuple[str, str, float, Quality]]],
) -> None:
    screened, full = gas_evaluator(), gas_evaluator()
    t = T0
    for batch in batches:
        t += S
        rs = [Reading(d, q, v, t, quality) for d, q, v, quality in batch]
        assert [key(x) for x in screened.observe_batch(rs, t)] == [key(x) for x in unscreened(full, rs, t)]
    assert {k: (s.level, s.candidate, s.pending) for k, s in screened._state.items()} == {
        k: (s.level, s.candidate, s.pending) for k, s in full._state.items()
    }
    assert screened._faulted == full._faulted


def test_the_screen_skips_what_has_no_rules_and_no_fault() -> None:
    ev = gas_evaluator()
    calls: list[str] = []
    evaluate = ev._evaluate
    ev._evaluate = lambda r, now, out: (calls.append(r.quantity), evaluate(r, now, out))[1]  # type: ignore[method-assign]
    batch = [Reading("G", q, 1.0, T0) for q in ("lel", "temperature", "humidity")]
    ev.observe_batch(batch, T0)
    # the first sight of each quantity finds its rules (none for two of them), the second needs no call for those
    ev.observe_batch(batch, T0 + S)
    assert calls == ["lel", "temperature", "humidity", "lel"]


# ---- the clock check (gateway/timecheck.py apply)

LIMITS = {"A": (5.0, 60.0), "B": (1.0, 3600.0)}
OFFSETS = [-4000 * S, -61 * S, -60 * S, -2 * S, 0, 1 * S, 2 * S, 5 * S, 6 * S]


@settings(max_examples=300, deadline=None)
@given(
    batches=st.lists(
        st.lists(
            st.tuples(st.sampled_from(["A", "B", "C"]), st.sampled_from(["lel", "up", "o2"]), st.sampled_from(OFFSETS)),
            min_size=0,
            max_size=6,
        ),
        min_size=1,
        max_size=20,
    )
)
def test_the_in_limits_pass_of_the_clock_check_gives_the_full_pass(batches: list[list[tuple[str, str, int]]]) -> None:
    fast, full = ClockCheck(LIMITS, Metrics()), ClockCheck(LIMITS, Metrics())
    now = T0
    for batch in batches:
        now += S
        rs = [Reading(d, q, 1.0, now + off) for d, q, off in batch]
        assert fast.apply(rs, now) == full._apply(rs, now)
        assert fast.skewed == full.skewed
    assert fast.metrics.clock_skew_readings == full.metrics.clock_skew_readings


# ---- the marker (gateway/marking.py)


def marked_before(m: Marker, batch: list[Reading]) -> list[Reading]:
    """The pipeline's loop as it was (gateway/pipeline.py `mark`, no clock corrected), on `m`'s latest values."""
    marked: list[Reading] = []
    by_device = m.latest.by_device
    for r in batch:
        rng = m._ranges[r.quantity]
        if r.quality is Quality.GOOD and not (rng[0] <= r.value <= rng[1]):
            r = Reading(r.device, r.quantity, r.value, r.ts_ns, Quality.UNCERTAIN)
            m.metrics.readings_implausible += 1
        mine = by_device.setdefault(r.device, {})
        prev = mine.get(r.quantity)
        if prev is not None and prev.ts_ns == r.ts_ns:
            r = m._collisions.settle(prev, r)
        marked.append(r)
        if prev is None or prev.ts_ns <= r.ts_ns:
            mine[r.quantity] = r
    return marked


def fields(r: Reading) -> tuple[object, ...]:
    return (r.device, r.quantity, "nan" if math.isnan(r.value) else r.value, r.ts_ns, r.quality)


@settings(max_examples=300, deadline=None)
@given(
    batches=st.lists(
        st.lists(
            st.tuples(
                st.sampled_from(["A", "B"]),
                st.sampled_from(["lel", "o2", "wind_speed"]),
                st.sampled_from([1.0, 2.0, -5.0, 1e9, math.nan]),  # in range, below, above, NaN
                st.integers(min_value=0, max_value=3),  # few timestamps: collisions and late readings
                QUALITIES,
            ),
            max_size=8,
        ),
        min_size=1,
        max_size=10,
    )
)
def test_the_loop_without_corrected_clocks_marks_what_the_loop_before_marked(
    batches: list[list[tuple[str, str, float, int, Quality]]],
) -> None:
    a, b = Marker(Latest(), Metrics()), Marker(Latest(), Metrics())
    for batch in batches:
        rs = [Reading(d, q, v, T0 + k * S, quality) for d, q, v, k, quality in batch]
        marked, shown = a.mark(rs, rs)
        assert marked is shown
        want = marked_before(b, rs)
        assert [fields(r) for r in marked] == [fields(r) for r in want]
    assert {k: fields(r) for k, r in a.latest.items()} == {k: fields(r) for k, r in b.latest.items()}
    assert a.metrics.readings_implausible == b.metrics.readings_implausible
    assert a.metrics.series_collisions == b.metrics.series_collisions


# ---- the epoch at a payload's top level (drivers/mqtt/payloads.py timestamp_ns)


def formwork() -> PayloadDecoder:
    p = builtin_profiles()["formwork_mqtt_v1"]  # {"ts": epoch ms, ...}
    assert isinstance(p, MqttProfile)
    return PayloadDecoder(p)


@settings(max_examples=300, deadline=None)
@example(v=1732170000123)
@example(v=946_684_800_000 - 1)  # a ms before 2000: refused
@example(v=True)
@example(v=1.5e12)
@given(
    v=st.one_of(
        st.integers(min_value=-(10**20), max_value=10**20),
        st.integers(min_value=946_684_800_000 - 10, max_value=946_684_800_000 + 10),
        st.integers(min_value=4_102_444_800_000 - 10, max_value=4_102_444_800_000 + 10),
        st.booleans(),
        st.floats(allow_nan=True),
        st.text(max_size=15),
    )
)
def test_an_epoch_at_the_top_level_reads_as_the_general_path_reads_it(v: object) -> None:
    d = formwork()
    assert d._ts_key == ("ts", 1_000_000)  # the fast path is the one taken for this profile

    def outcome(read: object) -> object:
        try:
            return read()  # type: ignore[operator]
        except ProtocolError as err:
            return str(err)

    assert outcome(lambda: d.timestamp_ns({"ts": v}, 0)) == outcome(lambda: d._time.parse(v))


# ---- the load chart (alerting/derived.py rated_load_at)


def chart_reference(chart: tuple[tuple[float, float], ...], radius_m: float) -> tuple[float, bool] | None:
    """rated_load_at as it was: a list of the radii made and searched."""
    if not chart:
        return None
    radii = [r for r, _ in chart]
    if radius_m > radii[-1]:
        return chart[-1][1], True
    i = bisect.bisect_left(radii, radius_m)
    if i == 0 or radii[i] == radius_m:
        return chart[i][1], False
    # the rated moment linear between the points (e.g. 12 m x 6 t and 20 m x 3.6 t, both 72 t·m: 72 / 16 = 4.5 t
    # at 16 m), the same expression as rated_load_at's: this test holds the search, not the arithmetic
    (r0, l0), (r1, l1) = chart[i - 1], chart[i]
    m0 = l0 * r0
    return (m0 + (l1 * r1 - m0) * (radius_m - r0) / (r1 - r0)) / radius_m, False


points = st.tuples(st.sampled_from([2.5, 10.0, 10.0, 20.0, 35.5, 50.0]), st.floats(min_value=0.5, max_value=12))


@settings(max_examples=300, deadline=None)
@given(
    chart=st.lists(points, max_size=6).map(lambda ps: tuple(sorted(ps))),
    radius=st.one_of(st.sampled_from([0.0, 2.5, 10.0, 20.0, 50.0, 60.0, math.nan]), st.floats(-10, 70)),
)
def test_the_chart_searched_in_place_gives_the_rated_load_of_its_radii(
    chart: tuple[tuple[float, float], ...], radius: float
) -> None:
    assert rated_load_at(chart, radius) == chart_reference(chart, radius)
