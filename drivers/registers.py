"""Register data types and byte orders as profiles name them, with the registers each type spans and its range."""

from __future__ import annotations

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
