"""The pipeline's newest reading per point (gateway/latest.py): kept by device, read by (device, quantity)."""

from __future__ import annotations

import pytest

from gateway.latest import Latest
from telemetry.reading import Reading


def test_points_are_read_by_device_and_quantity_and_the_newest_put_replaces() -> None:
    latest = Latest()
    latest.put(Reading("TC-1", "load", 1.0, 10))
    latest.put(Reading("TC-1", "wind_speed", 5.0, 10))
    latest.put(Reading("GAS-1", "lel", 3.0, 11))
    latest.put(Reading("TC-1", "load", 2.0, 20))
    assert latest[("TC-1", "load")] == Reading("TC-1", "load", 2.0, 20)
    assert ("GAS-1", "lel") in latest and ("GAS-1", "load") not in latest and ("X", "lel") not in latest
    assert latest.get(("X", "lel")) is None
    assert len(latest) == 3
    assert sorted(latest) == [("GAS-1", "lel"), ("TC-1", "load"), ("TC-1", "wind_speed")]
    assert dict(latest.items())[("TC-1", "wind_speed")].value == 5.0
    with pytest.raises(KeyError):
        latest[("TC-1", "moment")]
