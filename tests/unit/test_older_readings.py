"""The evaluator's older-reading guard (a reading older than a rule's newest judged one is history: it neither raises
by its own value nor clears or lowers a level; LevelState.is_history) for a rule that has never left rest on its
point, and for a reading judged while its rule's gate is closed. Real evaluators with an injected clock."""

from __future__ import annotations

from datetime import UTC, datetime

from alerting.derived import DeviceContext
from alerting.evaluator import Evaluator
from alerting.overrides import resolve_rules
from alerting.rules import Level, default_rules
from telemetry.reading import Reading

S = 1_000_000_000
T0 = int(datetime(2026, 11, 23, 2, 0, tzinfo=UTC).timestamp()) * S
EVERY_S = 60  # a confined-space gas detector reporting once a minute: its guard lasts 3 minutes
LEL = "gas.lel"  # 报警 at 25 %LEL, deadband 2


def detector() -> Evaluator:
    ctx = {"G1": DeviceContext("gas", expected_interval_s=EVERY_S)}
    return Evaluator(resolve_rules(default_rules(), None, ctx), ctx)


def lel(ev: Evaluator, value: float, ts: int, now: int | None = None) -> list[tuple[str, Level, Level, int | None]]:
    """G1's %LEL at `ts`, heard at `now` (at once by default): the LEL rule's transitions."""
    got = ev.observe(Reading("G1", "lel", value, ts), ts if now is None else now)
    return [(t.phase, t.old, t.new, t.source_ns) for t in got if t.rule == LEL]


# ---- a rule that has never left rest keeps its newest time -----------------------------------------------------------


def test_a_back_filled_reading_above_a_rule_that_never_left_rest_is_history() -> None:
    """Three readings at 3 %LEL, then one from the detector's buffer, older than the newest, at 30 %LEL: history, no
    alarm (it raised 报警, and the next live reading cleared it). The present at 30 %LEL raises it at once."""
    ev = detector()
    for i in range(3):
        assert lel(ev, 3.0, T0 + i * EVERY_S * S) == []
    assert lel(ev, 30.0, T0 + 90 * S, now=T0 + 150 * S) == []
    assert ev.level(LEL, "G1") is Level.NORMAL
    now = T0 + 180 * S
    assert lel(ev, 30.0, now) == [("confirmed", Level.NORMAL, Level.ALARM, now)]


def test_the_guard_of_a_rule_at_rest_lapses_after_three_silent_intervals_as_a_states_does() -> None:
    """Past 3 expected intervals (by the gateway's clock) after the newest reading, an older one is the present: the
    detector's clock went back (or was set right), and its readings are judged, as for a rule that left rest."""
    ev = detector()
    for i in range(3):
        lel(ev, 3.0, T0 + i * EVERY_S * S)
    heard = T0 + 2 * EVERY_S * S + 3 * EVERY_S * S + S
    assert lel(ev, 30.0, T0 + 30 * S, now=heard) == [("confirmed", Level.NORMAL, Level.ALARM, T0 + 30 * S)]


def test_a_reading_judged_while_its_gate_is_closed_is_the_newest() -> None:
    """A crane's tilt is judged idle and in calm wind only (tc.tilt_x's gate). Loaded, it reads 5 ‰ (over 4 ‰): the
    level waits for the gate, but the reading is the point's newest. Unloaded, a reading from before it (the crane's
    buffer) at 6 ‰ is history (it raised 报警 as the present); the present at 5 ‰ raises it."""
    ctx = {"TC": DeviceContext("tower_crane", expected_interval_s=10)}
    ev = Evaluator(resolve_rules(default_rules(), None, ctx), ctx)

    def tilt(value: float, ts: int, now: int) -> list[tuple[str, Level, int | None]]:
        got = ev.observe(Reading("TC", "tilt_x", value, ts), now)
        return [(t.phase, t.new, t.source_ns) for t in got if t.rule == "tc.tilt_x"]

    ev.observe_batch([Reading("TC", "load", 5.0, T0), Reading("TC", "wind_speed", 1.0, T0)], T0)
    assert tilt(5.0, T0 + 10 * S, T0 + 10 * S) == []
    ev.observe(Reading("TC", "load", 0.0, T0 + 20 * S), T0 + 20 * S)
    assert tilt(6.0, T0 + 5 * S, T0 + 20 * S) == []
    assert tilt(5.0, T0 + 30 * S, T0 + 30 * S) == [("confirmed", Level.ALARM, T0 + 30 * S)]
