"""A block compiled into one unpack (drivers/modbus/blockcodec.py) decodes as codec.decode does point by point."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.modbus.blockcodec import PointPlan
from drivers.modbus.codec import WIDTH, DataType, Order, decode, registers_to_bytes, to_canonical
from drivers.modbus.driver import decode_block
from drivers.modbus.plan import CLOCK, Block
from drivers.profile import Table
from telemetry.reading import Quality, Reading

FUZZ = settings(derandomize=True, database=None, deadline=None, max_examples=300)
REGISTER_TYPES = [t for t in DataType if t is not DataType.BOOL]


def reference(device: str, block: Block, regs: list[int], ts: int) -> list[Reading]:
    """The point-by-point decode the compiled codec replaced (kept here as the oracle)."""
    raw, out = registers_to_bytes(regs), []
    for p in block.points:
        if p.quantity == CLOCK:
            continue
        chunk = raw[p.offset * 2 : (p.offset + p.width) * 2]
        if p.nbits > 1:
            x: int | float = (int.from_bytes(to_canonical(chunk, p.order), "big") >> p.bit) & ((1 << p.nbits) - 1)
        else:
            x = decode(chunk, p.dtype, p.order, p.bit)
        if p.invalid and x in p.invalid:
            out.append(Reading(device, p.quantity, math.nan, ts, p.invalid[x]))
            continue
        v = float(x)
        if p.dtype is not DataType.BIT:
            v = v * p.scale + p.add
            if p.convert is not None:
                v = p.convert(v)
        out.append(Reading(device, p.quantity, v, ts, Quality.GOOD if math.isfinite(v) else Quality.BAD))
    return out


@st.composite
def blocks(draw: st.DrawFn) -> tuple[Block, list[int]]:
    """A block of up to 12 points anywhere in up to 40 registers: gaps, overlaps (status bits inside a word, a bit
    field beside them), every type and word order, sentinels and scales, and the clock's pseudo point."""
    count = draw(st.integers(4, 40))
    points = []
    for i in range(draw(st.integers(1, 12))):
        dtype = draw(st.sampled_from(REGISTER_TYPES))
        nbits = draw(st.sampled_from([1, 1, 2, 4])) if dtype in (DataType.UINT16, DataType.BIT) else 1
        width = WIDTH[dtype]
        offset = draw(st.integers(0, count - width))
        bit = draw(st.integers(0, 15 - (nbits - 1))) if dtype is DataType.BIT or nbits > 1 else 0
        invalid = None
        if draw(st.booleans()):
            sentinel: int | float = (
                draw(st.sampled_from([-9999.0, 3.0e38])) if dtype in (DataType.FLOAT32, DataType.FLOAT64) else 1
            )
            invalid = {sentinel: draw(st.sampled_from([Quality.BAD, Quality.NOT_READY]))}
        scale, add = draw(st.sampled_from([(1.0, 0.0), (0.1, 0.0), (0.01, -40.0)]))
        convert = (lambda v: v * 9 / 5 + 32) if draw(st.integers(0, 5)) == 0 else None
        quantity = CLOCK if i == 0 and draw(st.booleans()) else f"q{i}"
        order = draw(st.sampled_from(list(Order)))
        points.append(PointPlan(quantity, offset, width, dtype, order, bit, scale, add, convert, invalid, nbits))
    regs = draw(st.lists(st.integers(0, 0xFFFF), min_size=count, max_size=count))
    if draw(st.booleans()):  # the sentinels' own bytes, so the "no value" branch is taken too
        regs[0:2] = [0x0001, 0x0001]
    return Block(Table.HOLDING, 0, count, tuple(points)), regs


def same(a: list[Reading], b: list[Reading]) -> bool:
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        if (x.device, x.quantity, x.ts_ns, x.quality) != (y.device, y.quantity, y.ts_ns, y.quality):
            return False
        if not (x.value == y.value or (math.isnan(x.value) and math.isnan(y.value))):
            return False
    return True


@FUZZ
@given(blocks())
def test_a_compiled_block_decodes_as_each_point_alone(case: tuple[Block, list[int]]) -> None:
    block, regs = case
    got: list[Reading] = []
    decode_block("D1", block, regs, 123, got)
    assert same(got, reference("D1", block, regs, 123)), (block.describe(), regs)


def test_word_orders_of_one_float_in_one_block() -> None:
    # 12.5 as float32 is 0x41480000: the four orders of its bytes as a technician's manual lists them
    words = {Order.ABCD: [0x4148, 0x0000], Order.CDAB: [0x0000, 0x4148], Order.BADC: [0x4841, 0x0000]}
    words[Order.DCBA] = [0x0000, 0x4841]
    pts, regs = [], []
    for i, (order, w) in enumerate(words.items()):
        pts.append(PointPlan(f"q{i}", 2 * i, 2, DataType.FLOAT32, order, 0, 1.0, 0.0, None))
        regs += w
    got: list[Reading] = []
    decode_block("D1", Block(Table.HOLDING, 0, 8, tuple(pts)), regs, 1, got)
    assert [r.value for r in got] == [12.5] * 4


def test_status_bits_and_a_state_field_share_one_word() -> None:
    # bit 0: fault, bit 3: alarm, bits 8-11: a 4-bit state enum, all read from the one word 0x0A09
    pts = (
        PointPlan("fault", 0, 1, DataType.BIT, Order.ABCD, 0, 1.0, 0.0, None),
        PointPlan("alarm", 0, 1, DataType.BIT, Order.ABCD, 3, 1.0, 0.0, None),
        PointPlan("state", 0, 1, DataType.UINT16, Order.ABCD, 8, 1.0, 0.0, None, None, 4),
        PointPlan("value", 1, 1, DataType.INT16, Order.ABCD, 0, 0.1, 0.0, None, {-1: Quality.NOT_READY}),
    )
    got: list[Reading] = []
    decode_block("D1", Block(Table.HOLDING, 0, 2, pts), [0x0A09, 0xFFFF], 1, got)
    assert [(r.quantity, r.value) for r in got[:3]] == [("fault", 1.0), ("alarm", 1.0), ("state", 10.0)]
    assert got[3].quality is Quality.NOT_READY and math.isnan(got[3].value)
