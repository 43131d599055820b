"""The grid periodic tasks wake on (telemetry/clock.py to_next_tick)."""

from __future__ import annotations

import pytest

from telemetry.clock import to_next_tick


@pytest.mark.parametrize(
    ("now", "period", "expected"),
    [(100.25, 1.0, 0.75), (100.0, 1.0, 1.0), (100.99, 0.5, 0.01), (7.05, 0.1, 0.05), (3.0, 0.3, 0.3)],
)
def test_the_wait_ends_on_the_next_multiple_of_the_period(now: float, period: float, expected: float) -> None:
    d = to_next_tick(now, period)
    assert d == pytest.approx(expected, abs=1e-9)
    assert 0 < d <= period
    assert (now + d) / period == pytest.approx(round((now + d) / period), abs=1e-9)
