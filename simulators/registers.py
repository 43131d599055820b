"""Canonical values <-> register images, derived from the device profile so simulator and gateway cannot drift."""

from __future__ import annotations

import math

from drivers.modbus import codec
from drivers.profile import ModbusProfile, RegisterPoint, Table
from drivers.registers import INT_RANGE, WIDTH, DataType
from telemetry import quantities

Image = dict[Table, dict[int, int | bool]]

# Out-of-range values saturate like a real device's ADC/firmware clamp.
_INT_RANGE = INT_RANGE


def to_device_unit(quantity: str, unit: str | None, canonical: float) -> float:
    """Inverse of the gateway's unit conversion: a catalog-unit value expressed in the device's unit."""
    target = quantities.lookup(quantity).unit
    if unit is None or unit == target:
        return canonical
    lin = quantities.linear_factor(unit, target)
    if lin is not None:
        k, off = lin
        return (canonical - off) / k
    if unit in ("°", "deg") and target == "‰":
        return math.degrees(math.atan(canonical / 1000.0))
    raise ValueError(f"{quantity}: no inverse conversion from {target!r} to {unit!r}")


def from_device_unit(quantity: str, unit: str | None, value: float) -> float:
    """The gateway's direction: device unit -> catalog unit, through the same `quantities.converter`."""
    if unit is None:
        return value
    fn = quantities.converter(unit, quantities.lookup(quantity).unit)
    return value if fn is None else fn(value)


def _point(profile: ModbusProfile, index: int) -> tuple[RegisterPoint, Table, int, codec.Order]:
    return profile.resolved()[index]


def encode_point(profile: ModbusProfile, point_index: int, canonical_value: float) -> list[int]:
    """The register words (or one 0/1 for a coil/discrete input) a device holds for `canonical_value`."""
    p, _table, _addr, order = _point(profile, point_index)
    if p.type is DataType.BOOL:
        return [1 if canonical_value >= 0.5 else 0]
    if p.type is DataType.BIT:
        return codec.bytes_to_registers(codec.encode_bits({p.bit or 0: int(canonical_value >= 0.5)}, order))
    raw = (to_device_unit(p.quantity, p.unit, canonical_value) - p.offset) / p.scale
    if p.type in _INT_RANGE:
        lo, hi = _INT_RANGE[p.type]
        raw = min(max(round(raw), lo), hi) if math.isfinite(raw) else 0
    return codec.bytes_to_registers(codec.encode(raw, p.type, order))


def decode_point(profile: ModbusProfile, point_index: int, words: list[int]) -> float:
    """Canonical value from the point's register words (or [0/1] for a bit table), as the gateway computes it."""
    p, _table, _addr, order = _point(profile, point_index)
    if p.type is DataType.BOOL:
        return float(bool(words[0]))
    raw = codec.decode(codec.registers_to_bytes(words), p.type, order, p.bit or 0)
    if p.type is DataType.BIT:
        return float(raw)
    return from_device_unit(p.quantity, p.unit, raw * p.scale + p.offset)


def build_register_image(profile: ModbusProfile, values: dict[str, float]) -> Image:
    """Every table and address of the profile filled from `values` (missing quantities read as 0).

    Unused registers between points are present as 0, because gateways merge nearby blocks into one read.
    """
    image: Image = {}
    for i, (p, table, addr, _order) in enumerate(profile.resolved()):
        words = encode_point(profile, i, values.get(p.quantity, 0.0))
        tab = image.setdefault(table, {})
        if table.is_bit:
            tab[addr] = bool(words[0])
        elif p.type is DataType.BIT:
            # several status bits share one word: OR them (byte swaps commute with OR)
            tab[addr] = int(tab.get(addr, 0)) | words[0]
        else:
            for off, w in enumerate(words):
                tab[addr + off] = w
    for table, tab in image.items():
        if not table.is_bit:
            for a in range(min(tab), max(tab) + 1):
                tab.setdefault(a, 0)
    return image


def decode(profile: ModbusProfile, image: Image) -> dict[str, float]:
    """Canonical value of every point of the profile as found in `image`: the inverse of build_register_image."""
    out: dict[str, float] = {}
    for i, (p, table, addr, _order) in enumerate(profile.resolved()):
        tab = image.get(table, {})
        words = [int(tab.get(addr + off, 0)) for off in range(WIDTH[p.type])]
        out[p.quantity] = decode_point(profile, i, words)
    return out
