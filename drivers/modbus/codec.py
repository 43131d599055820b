"""Register codec: Modbus types in the four byte/word orders technicians know (ABCD, CDAB, BADC, DCBA), with scale."""

from __future__ import annotations

import struct

from drivers.registers import INT_RANGE, WIDTH, DataType, Order

# the types it codes are named here too: a caller of the codec needs nothing else
__all__ = [
    "INT_RANGE", "WIDTH", "DataType", "Order",
    "bytes_to_registers", "decode", "encode", "encode_bits", "registers_to_bytes", "to_canonical",
]  # fmt: skip


_FMT: dict[DataType, str] = {
    DataType.INT16: ">h",
    DataType.UINT16: ">H",
    DataType.INT32: ">i",
    DataType.UINT32: ">I",
    DataType.INT64: ">q",
    DataType.UINT64: ">Q",
    DataType.FLOAT32: ">f",
    DataType.FLOAT64: ">d",
}


def _swap_bytes(b: bytes) -> bytes:
    out = bytearray(b)
    out[0::2], out[1::2] = b[1::2], b[0::2]
    return bytes(out)


def _reverse_words(b: bytes) -> bytes:
    return b"".join(b[i : i + 2] for i in range(len(b) - 2, -2, -2))


def to_canonical(raw: bytes, order: Order) -> bytes:
    """Bytes as read off the wire (register order, each register big-endian) -> big-endian value bytes.

    The transforms are involutions, so the same function also maps canonical bytes back to wire bytes.
    """
    if order is Order.ABCD:
        return raw
    if order is Order.CDAB:
        return _reverse_words(raw)
    if order is Order.BADC:
        return _swap_bytes(raw)
    return raw[::-1]  # DCBA


def decode(raw: bytes, dtype: DataType, order: Order = Order.ABCD, bit: int = 0) -> int | float:
    """Decode one value from its wire bytes (2 bytes per register, in register order)."""
    if dtype is DataType.BIT:
        (word,) = struct.unpack(">H", to_canonical(raw, order))
        return int((word >> bit) & 1)
    if dtype is DataType.BOOL:
        raise ValueError("bool values come from coil/discrete reads, not registers")
    value: int | float = struct.unpack(_FMT[dtype], to_canonical(raw, order))[0]
    return value


def encode(value: int | float, dtype: DataType, order: Order = Order.ABCD) -> bytes:
    """Encode one value to wire bytes; the exact inverse of `decode` (integers must fit the type)."""
    if dtype in (DataType.BIT, DataType.BOOL):
        raise ValueError("encode bit fields with encode_bits")
    if dtype in (DataType.FLOAT32, DataType.FLOAT64):
        canon = struct.pack(_FMT[dtype], float(value))
    else:
        canon = struct.pack(_FMT[dtype], int(value))
    return to_canonical(canon, order)


def encode_bits(bits: dict[int, int], order: Order = Order.ABCD) -> bytes:
    """A 16-bit status word with the given bits set, in wire bytes."""
    word = 0
    for pos, val in bits.items():
        if val:
            word |= 1 << pos
    return to_canonical(struct.pack(">H", word), order)


def registers_to_bytes(regs: list[int]) -> bytes:
    return struct.pack(f">{len(regs)}H", *regs)


def bytes_to_registers(raw: bytes) -> list[int]:
    return list(struct.unpack(f">{len(raw) // 2}H", raw))
