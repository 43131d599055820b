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
        return self <= 1  # UNCERTAIN (an int: Quality.UNCERTAIN is a descriptor call on 3.11, ~70 ns)

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


# The generated __init__ of a frozen dataclass stores each field through object.__setattr__ (a global, an attribute
# and a call per field: 0.6 µs a reading). Every reading is built at least once (ten per poll or message, 20 000 a
# second on a large site), so it stores through the slots' own descriptors instead: the same fields, still frozen
# afterwards (assigning raises FrozenInstanceError), in 0.35 µs.
_set_device, _set_quantity, _set_value, _set_ts, _set_quality = (
    Reading.__dict__[f].__set__ for f in ("device", "quantity", "value", "ts_ns", "quality")
)


def _init(self: Reading, device: str, quantity: str, value: float, ts_ns: int, quality: Quality = Quality.GOOD) -> None:
    _set_device(self, device)
    _set_quantity(self, quantity)
    _set_value(self, value)
    _set_ts(self, ts_ns)
    _set_quality(self, quality)


Reading.__init__ = _init  # type: ignore[method-assign]


class _Slots:
    """Reading's slots (the same names, no others) without the frozen dataclass's __setattr__."""

    __slots__ = ("device", "quality", "quantity", "ts_ns", "value")  # (Python lays slots out in sorted order)
    device: str
    quantity: str
    value: float
    ts_ns: int
    quality: Quality


_new_object = object.__new__


def make_reading(device: str, quantity: str, value: float, ts_ns: int, quality: Quality = Quality.GOOD) -> Reading:
    """`Reading(device, quantity, value, ts_ns, quality)` for the drivers' decoders, which make every reading of a
    site (20 000 a second on a large one): the same frozen object in half the time (0.15 µs against 0.33). Its slots
    are filled as a plain slotted object's (one store instruction each, where Reading's own __init__ makes a
    descriptor call each) and it then becomes a Reading: Python allows `__class__` to change between two classes
    with the same slots, and refuses it (TypeError, at once) should Reading's fields ever change without these."""
    r = _new_object(_Slots)
    r.device = device
    r.quantity = quantity
    r.value = value
    r.ts_ns = ts_ns
    r.quality = quality
    r.__class__ = Reading  # type: ignore[assignment]
    return r  # type: ignore[return-value]
