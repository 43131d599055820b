"""A block's points compiled into one struct unpack: a poll's registers decoded in one C call, not one per point."""

from __future__ import annotations

# The point-by-point decode (codec.decode: slice, reorder, unpack, per point) was a fifth of a polled site's
# pipeline; a block's layout never changes, so it is worked out once, when the block is planned.
import math
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from operator import itemgetter

from drivers.registers import DataType, Order
from telemetry.reading import Quality, Reading, make_reading


@dataclass(frozen=True, slots=True)
class PointPlan:
    """How to turn a slice of a block into one canonical value (planned by drivers.modbus.plan)."""

    quantity: str
    offset: int  # registers (or bits) from the block start
    width: int
    dtype: DataType
    order: Order
    bit: int
    scale: float
    add: float
    convert: Callable[[float], float] | None  # non-linear unit conversion applied after scale/offset
    invalid: Mapping[int | float, Quality] | None = None  # raw sentinel values -> quality (no value)
    nbits: int = 1  # type bit: width of the bit field from `bit`


_SIGNED: dict[DataType, str] = {
    DataType.INT16: "h",
    DataType.UINT16: "H",
    DataType.INT32: "i",
    DataType.UINT32: "I",
    DataType.INT64: "q",
    DataType.UINT64: "Q",
    DataType.FLOAT32: "f",
    DataType.FLOAT64: "d",
}
_UNSIGNED = {1: "H", 2: "I", 4: "Q"}  # bit fields: the word(s) as one unsigned integer, by width in registers
_NAN = math.nan
_GOOD, _BAD = Quality.GOOD, Quality.BAD


@dataclass(frozen=True, slots=True)
class _Point:
    quantity: str
    shift: int
    mask: int  # 0: a number; else a bit field, (word >> shift) & mask
    invalid: Mapping[int | float, Quality] | None
    scale: float
    add: float
    scaled: bool  # multiply-add (and convert) apply: not to a single status bit
    convert: Callable[[float], float] | None


def _wire_order(offset: int, width: int, order: Order) -> list[int]:
    """The wire byte positions of a value in its canonical (big-endian) byte order."""
    # the orders are permutations of whole bytes: apply them to the positions themselves
    pos = list(range(offset * 2, (offset + width) * 2))
    words = [pos[i : i + 2] for i in range(0, len(pos), 2)]
    if order is Order.CDAB:
        return [b for w in reversed(words) for b in w]
    if order is Order.BADC:
        return [b for w in words for b in reversed(w)]
    if order is Order.DCBA:
        return pos[::-1]
    return pos


class BlockCodec:
    """The register points of one block (the clock's pseudo point is left out: see decode_register_clock), decoded
    exactly as codec.decode does one at a time, in the block's point order."""

    __slots__ = ("_arrange", "_plain", "_points", "_unpack")

    def __init__(self, points: tuple[PointPlan, ...], skip: str) -> None:
        fmt, positions, pts = [">"], [], []
        for p in points:
            if p.quantity == skip:
                continue
            bits = p.dtype is DataType.BIT or p.nbits > 1
            fmt.append(_UNSIGNED[p.width] if bits else _SIGNED[p.dtype])
            positions += _wire_order(p.offset, p.width, p.order)
            mask = (1 << p.nbits) - 1 if bits else 0
            pts.append(
                _Point(p.quantity, p.bit, mask, p.invalid, p.scale, p.add, p.dtype is not DataType.BIT, p.convert)
            )
        self._unpack = struct.Struct("".join(fmt)).unpack_from  # from offset 0: trailing registers are ignored
        # the values' bytes in canonical order, gathered from the wire bytes (one C call; None: already in place)
        self._arrange: Callable[[bytes], bytes] | None = None
        if positions != list(range(len(positions))):
            gather = itemgetter(*positions)  # a point is at least one register: two positions or more, so a tuple
            self._arrange = lambda raw: bytes(gather(raw))
        self._points = tuple(pts)
        # the block's quantities when every point is a plain number (no bit field, sentinel, scale, offset or
        # conversion: the sweep's float32 registers, most analog blocks): decoded without a look at each point's plan
        plain = all(not p.mask and not p.invalid and p.scaled and p.scale == 1 and p.add == 0 and p.convert is None
                    for p in pts)  # fmt: skip
        self._plain = tuple(p.quantity for p in pts) if plain else None

    def decode(self, raw: bytes, device: str, ts_ns: int, out: list[Reading]) -> None:
        """The block's wire bytes -> one reading per point, appended to `out`."""
        if not self._points:
            return
        values = self._unpack(self._arrange(raw) if self._arrange else raw)
        append, isfinite = out.append, math.isfinite
        if self._plain is not None:
            for quantity, x in zip(self._plain, values, strict=True):
                v = float(x) + 0.0  # what v * 1.0 + 0.0 gives (a -0.0 becomes 0.0, as below)
                append(make_reading(device, quantity, v, ts_ns, _GOOD if isfinite(v) else _BAD))
            return
        for p, x in zip(self._points, values, strict=True):
            if p.mask:
                x = (x >> p.shift) & p.mask
            if p.invalid and x in p.invalid:  # 0x7FFF, 0xFFFF, -9999: the device says "no value"
                append(make_reading(device, p.quantity, _NAN, ts_ns, p.invalid[x]))
                continue
            v = float(x)
            if p.scaled:
                v = v * p.scale + p.add
                if p.convert is not None:
                    v = p.convert(v)
            append(make_reading(device, p.quantity, v, ts_ns, _GOOD if isfinite(v) else _BAD))  # device NaN: kept, BAD
