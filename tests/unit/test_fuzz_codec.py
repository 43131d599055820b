"""Fuzzing the Modbus register codec: round trips of every type in every word order, arbitrary words decode."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from drivers.modbus.codec import (
    INT_RANGE,
    WIDTH,
    DataType,
    Order,
    bytes_to_registers,
    decode,
    encode,
    encode_bits,
    registers_to_bytes,
    to_canonical,
)

FUZZ = settings(derandomize=True, database=None, deadline=None, max_examples=150)
ORDERS = st.sampled_from(list(Order))
INTS = sorted(INT_RANGE)
FLOATS = [DataType.FLOAT32, DataType.FLOAT64]
REGISTER_TYPES = [t for t in DataType if t is not DataType.BOOL]  # BOOL comes from coils, not registers


def words(n: int) -> st.SearchStrategy[list[int]]:
    return st.lists(st.integers(0, 0xFFFF), min_size=n, max_size=n)


@st.composite
def int_value(draw: st.DrawFn, dtype: DataType) -> int:
    lo, hi = INT_RANGE[dtype]
    # the extremes and their neighbours, where sign and carry bugs live, half of the time
    edges = st.sampled_from([lo, lo + 1, -1 if lo else 1, 0, 1, hi - 1, hi])
    return draw(edges | st.integers(lo, hi))


@FUZZ
@given(dtype=st.sampled_from(INTS), order=ORDERS, data=st.data())
@example(dtype=DataType.INT64, order=Order.CDAB, data=None)  # -2**63: all sign, no magnitude
def test_integer_round_trip_in_every_order(dtype: DataType, order: Order, data: st.DataObject | None) -> None:
    v = INT_RANGE[dtype][0] if data is None else data.draw(int_value(dtype))
    raw = encode(v, dtype, order)
    assert len(raw) == 2 * WIDTH[dtype]
    got = decode(raw, dtype, order)
    assert got == v and type(got) is int
    # through the register list a Modbus read returns, too
    assert decode(registers_to_bytes(bytes_to_registers(raw)), dtype, order) == v


def _f32(bits: int) -> float:
    return float(struct.unpack(">f", struct.pack(">I", bits))[0])


# the smallest subnormal, the largest finite value, signed zeros and infinities, exactly representable
F32_EDGES = [_f32(1), _f32(0x80000001), _f32(0x7F7FFFFF), _f32(0xFF7FFFFF), 0.0, -0.0, math.inf, -math.inf]
float32s = st.floats(width=32) | st.sampled_from(F32_EDGES)
float64s = st.floats() | st.sampled_from([5e-324, -5e-324, 1.7976931348623157e308, -0.0])


@FUZZ
@given(dtype=st.sampled_from(FLOATS), order=ORDERS, data=st.data())
def test_float_round_trip_in_every_order(dtype: DataType, order: Order, data: st.DataObject) -> None:
    v = data.draw(float32s if dtype is DataType.FLOAT32 else float64s)
    got = decode(encode(v, dtype, order), dtype, order)
    assert isinstance(got, float)
    if math.isnan(v):
        assert math.isnan(got)
    else:
        assert got == v and math.copysign(1, got) == math.copysign(1, v)  # -0.0 stays negative


@FUZZ
@given(order=ORDERS, bits=st.dictionaries(st.integers(0, 15), st.integers(0, 1)))
def test_status_word_bits_round_trip_in_every_order(order: Order, bits: dict[int, int]) -> None:
    raw = encode_bits(bits, order)
    assert [decode(raw, DataType.BIT, order, bit=b) for b in range(16)] == [bits.get(b, 0) for b in range(16)]


@FUZZ
@given(dtype=st.sampled_from(REGISTER_TYPES), order=ORDERS, data=st.data(), bit=st.integers(0, 15))
def test_arbitrary_register_words_always_decode(dtype: DataType, order: Order, data: st.DataObject, bit: int) -> None:
    regs = data.draw(words(WIDTH[dtype]))
    raw = registers_to_bytes(regs)
    got = decode(raw, dtype, order, bit)
    if dtype is DataType.BIT:
        assert got in (0, 1)
    elif dtype in INT_RANGE:
        lo, hi = INT_RANGE[dtype]
        assert type(got) is int and lo <= got <= hi
        assert encode(got, dtype, order) == raw  # every bit pattern is a value: the codec is a bijection
    else:
        assert isinstance(got, float)  # NaN and infinities included: the driver marks those BAD
        if not math.isnan(got):
            assert encode(got, dtype, order) == raw


@FUZZ
@given(order=ORDERS, n=st.sampled_from([1, 2, 4]), data=st.data())
def test_byte_orders_are_involutions(order: Order, n: int, data: st.DataObject) -> None:
    raw = registers_to_bytes(data.draw(words(n)))
    assert to_canonical(to_canonical(raw, order), order) == raw


@FUZZ
@given(dtype=st.sampled_from(REGISTER_TYPES), order=ORDERS, n=st.integers(0, 6), data=st.data())
def test_wrong_number_of_registers_is_a_struct_error(
    dtype: DataType, order: Order, n: int, data: st.DataObject
) -> None:
    if n == WIDTH[dtype]:
        return
    raw = registers_to_bytes(data.draw(words(n)))
    with pytest.raises(struct.error):  # never a silently wrong value
        decode(raw, dtype, order)


@FUZZ
@given(dtype=st.sampled_from(INTS), order=ORDERS, over=st.integers(1, 2**70), below=st.booleans())
def test_integers_that_do_not_fit_are_refused(dtype: DataType, order: Order, over: int, below: bool) -> None:
    lo, hi = INT_RANGE[dtype]
    with pytest.raises(struct.error):
        encode(lo - over if below else hi + over, dtype, order)


def test_bool_is_not_a_register_type() -> None:
    with pytest.raises(ValueError, match="coil"):
        decode(b"\x00\x01", DataType.BOOL)
    with pytest.raises(ValueError, match="encode_bits"):
        encode(1, DataType.BIT)


def test_float32_beyond_its_range_is_refused_on_encode() -> None:
    # a simulator concern only (the gateway never encodes): struct refuses rather than writing infinity
    with pytest.raises(OverflowError):
        encode(1e39, DataType.FLOAT32)
