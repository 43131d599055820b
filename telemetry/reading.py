"""The one data type that flows through the pipeline: Reading, with its Quality."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class Quality(IntEnum):
    """OPC-style quality of a reading; stored next to the value when it is not GOOD."""

    GOOD = 0
    UNCERTAIN = 1  # implausible for the quantity, or back-filled from a device buffer
    BAD = 2  # device reported a fault for this value (a status code, a sentinel, NaN): opens a point-fault alarm
    NOT_READY = 3  # device says the value is not valid yet (warming up, calibrating, maintenance): no fault

    @property
    def valid(self) -> bool:
        """GOOD or UNCERTAIN: a value that may raise or clear a threshold alarm."""
        return self <= Quality.UNCERTAIN

    def worst(self, other: Quality) -> Quality:
        """The more serious of two qualities: BAD > NOT_READY > UNCERTAIN > GOOD."""
        return self if _RANK[self] >= _RANK[other] else other


_RANK = {Quality.GOOD: 0, Quality.UNCERTAIN: 1, Quality.NOT_READY: 2, Quality.BAD: 3}


@dataclass(frozen=True, slots=True)
class Reading:
    """One value of one quantity of one device at one instant (ns since the epoch, UTC)."""

    device: str
    quantity: str
    value: float
    ts_ns: int
    quality: Quality = Quality.GOOD
