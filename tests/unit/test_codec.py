"""Golden vectors for the register codec in all four orders, and round trips for every type."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.modbus.codec import (
    INT_RANGE,
    DataType,
    Order,
    bytes_to_registers,
    decode,
    encode,
    encode_bits,
    registers_to_bytes,
)


def regs(*words: int) -> bytes:
    return registers_to_bytes(list(words))


# 123.456 as float32 is 0x42F6E979; the four layouts are what mbpoll (a third-party master) shows for them.
GOLDEN = [
    (DataType.FLOAT32, 123.456, Order.ABCD, (0x42F6, 0xE979)),
    (DataType.FLOAT32, 123.456, Order.CDAB, (0xE979, 0x42F6)),
    (DataType.FLOAT32, 123.456, Order.BADC, (0xF642, 0x79E9)),
    (DataType.FLOAT32, 123.456, Order.DCBA, (0x79E9, 0xF642)),
    (DataType.INT32, 0x12345678, Order.ABCD, (0x1234, 0x5678)),
    (DataType.INT32, 0x12345678, Order.CDAB, (0x5678, 0x1234)),
    (DataType.INT32, 0x12345678, Order.BADC, (0x3412, 0x7856)),
    (DataType.INT32, 0x12345678, Order.DCBA, (0x7856, 0x3412)),
    (DataType.INT32, -2, Order.ABCD, (0xFFFF, 0xFFFE)),
    (DataType.INT32, -2, Order.CDAB, (0xFFFE, 0xFFFF)),
    (DataType.UINT32, 4_000_000_000, Order.ABCD, (0xEE6B, 0x2800)),
    (DataType.UINT32, 4_000_000_000, Order.DCBA, (0x0028, 0x6BEE)),
    (DataType.INT16, -2, Order.ABCD, (0xFFFE,)),
    (DataType.INT16, -2, Order.CDAB, (0xFFFE,)),
    (DataType.INT16, -2, Order.BADC, (0xFEFF,)),
    (DataType.INT16, -2, Order.DCBA, (0xFEFF,)),
    (DataType.UINT16, 0x1234, Order.BADC, (0x3412,)),
    (DataType.INT64, 0x0102030405060708, Order.ABCD, (0x0102, 0x0304, 0x0506, 0x0708)),
    (DataType.INT64, 0x0102030405060708, Order.CDAB, (0x0708, 0x0506, 0x0304, 0x0102)),
    (DataType.INT64, 0x0102030405060708, Order.BADC, (0x0201, 0x0403, 0x0605, 0x0807)),
    (DataType.INT64, 0x0102030405060708, Order.DCBA, (0x0807, 0x0605, 0x0403, 0x0201)),
    (DataType.INT64, -1, Order.CDAB, (0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF)),
    (DataType.FLOAT64, 1.0, Order.ABCD, (0x3FF0, 0, 0, 0)),
    (DataType.FLOAT64, 1.0, Order.CDAB, (0, 0, 0, 0x3FF0)),
    (DataType.FLOAT64, 1.0, Order.BADC, (0xF03F, 0, 0, 0)),
    (DataType.FLOAT64, 1.0, Order.DCBA, (0, 0, 0, 0xF03F)),
]


@pytest.mark.parametrize(("dtype", "value", "order", "words"), GOLDEN)
def test_golden_decode(dtype: DataType, value: float, order: Order, words: tuple[int, ...]) -> None:
    got = decode(regs(*words), dtype, order)
    if dtype is DataType.FLOAT32:
        assert got == struct.unpack(">f", struct.pack(">f", value))[0]
    else:
        assert got == value


@pytest.mark.parametrize(("dtype", "value", "order", "words"), GOLDEN)
def test_golden_encode(dtype: DataType, value: float, order: Order, words: tuple[int, ...]) -> None:
    assert tuple(bytes_to_registers(encode(value, dtype, order))) == words


def test_bits_in_a_status_word_in_every_order() -> None:
    for order in Order:
        raw = encode_bits({0: 1, 3: 1, 15: 1}, order)
        assert [decode(raw, DataType.BIT, order, bit=b) for b in range(16)] == [
            1 if b in (0, 3, 15) else 0 for b in range(16)
        ]
    # bit 0 is the least significant bit of the register as read on the wire (ABCD): 0x0009 -> bits 0 and 3
    assert decode(regs(0x0009), DataType.BIT, Order.ABCD, bit=3) == 1
    assert decode(regs(0x0009), DataType.BIT, Order.ABCD, bit=1) == 0


INT_RANGES = INT_RANGE  # the input domain of the round trips


@given(st.sampled_from(list(INT_RANGES)), st.sampled_from(list(Order)), st.data())
def test_integer_round_trip(dtype: DataType, order: Order, data: st.DataObject) -> None:
    lo, hi = INT_RANGES[dtype]
    v = data.draw(st.integers(lo, hi))
    assert decode(encode(v, dtype, order), dtype, order) == v


@given(st.sampled_from(list(Order)), st.floats(width=32, allow_nan=False))
def test_float32_round_trip(order: Order, v: float) -> None:
    assert decode(encode(v, DataType.FLOAT32, order), DataType.FLOAT32, order) == v


@given(st.sampled_from(list(Order)), st.floats(allow_nan=True))
def test_float64_round_trip(order: Order, v: float) -> None:
    got = decode(encode(v, DataType.FLOAT64, order), DataType.FLOAT64, order)
    assert got == v or (math.isnan(v) and math.isnan(got))
