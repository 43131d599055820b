"""The one data type that flows through the pipeline: Reading, with its Quality."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class Quality(IntEnum):
    """OPC-style quality of a reading; stored next to the value when it is not GOOD."""

    GOOD = 0
    UNCERTAIN = 1  # implausible for the quantity, or back-filled from a device buffer
    BAD = 2  # device reported a fault for this value


@dataclass(frozen=True, slots=True)
class Reading:
    """One value of one quantity of one device at one instant (ns since the epoch, UTC)."""

    device: str
    quantity: str
    value: float
    ts_ns: int
    quality: Quality = Quality.GOOD
