"""Register data types and byte orders as profiles name them: the registers each spans, its range, its sentinels."""

from __future__ import annotations

import struct
from decimal import Decimal, InvalidOperation
from enum import StrEnum


class DataType(StrEnum):
    INT16 = "int16"
    UINT16 = "uint16"
    INT32 = "int32"
    UINT32 = "uint32"
    INT64 = "int64"
    UINT64 = "uint64"
    FLOAT32 = "float32"
    FLOAT64 = "float64"
    BIT = "bit"  # one bit of a 16-bit register (status words)
    BOOL = "bool"  # a coil or discrete input


class Order(StrEnum):
    """Byte order of a value as it appears across its registers: A is the most significant byte."""

    ABCD = "ABCD"  # big-endian words, big-endian bytes (Modbus "standard")
    CDAB = "CDAB"  # low word first ("word swap"), the usual PLC float layout
    BADC = "BADC"  # bytes swapped within each word
    DCBA = "DCBA"  # fully little-endian


# Registers (16-bit words) each type occupies.
WIDTH: dict[DataType, int] = {
    DataType.INT16: 1,
    DataType.UINT16: 1,
    DataType.INT32: 2,
    DataType.UINT32: 2,
    DataType.INT64: 4,
    DataType.UINT64: 4,
    DataType.FLOAT32: 2,
    DataType.FLOAT64: 4,
    DataType.BIT: 1,
    DataType.BOOL: 1,
}

# Value range of each integer type (what a register pair or quad can hold).
INT_RANGE: dict[DataType, tuple[int, int]] = {
    DataType.INT16: (-(2**15), 2**15 - 1),
    DataType.UINT16: (0, 2**16 - 1),
    DataType.INT32: (-(2**31), 2**31 - 1),
    DataType.UINT32: (0, 2**32 - 1),
    DataType.INT64: (-(2**63), 2**63 - 1),
    DataType.UINT64: (0, 2**64 - 1),
}


def sentinel_value(text: str, dtype: DataType) -> int | float:
    """An `invalid` key of a profile as the raw value the device sends: what a decoded value is compared with.
    Raises ValueError saying why the text cannot be one of this type's values."""
    if dtype is DataType.FLOAT32 or dtype is DataType.FLOAT64:
        try:
            x = float(text)
        except ValueError:
            raise ValueError("not a number (register sentinels are raw numbers)") from None
        if dtype is DataType.FLOAT64:
            return x
        # the decoded float32 is the binary32 value: -99.9 arrives as -99.9000015258789 and must be compared as that
        try:
            return float(struct.unpack(">f", struct.pack(">f", x))[0])
        except OverflowError:
            raise ValueError("beyond the float32 range (±3.4028235e38)") from None
    try:
        n = int(text, 0)  # decimal, 0x7FFF, 0o17, 0b101: exactly (float() would round 0x7FFFFFFFFFFFFC01)
    except ValueError:
        try:
            d = Decimal(text.strip())  # "65535.0", "1e3": exact too
        except InvalidOperation:
            raise ValueError("not a number (register sentinels are raw numbers)") from None
        if not d.is_finite() or d != d.to_integral_value():
            raise ValueError(f"not a whole number, and a {dtype.value} point's raw value is one") from None
        n = int(d)
    if dtype in INT_RANGE:
        lo, hi = INT_RANGE[dtype]
        if not lo <= n <= hi:
            raise ValueError(f"does not fit {dtype.value} ({lo}..{hi})")
    return n
