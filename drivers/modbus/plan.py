"""Read planning: coalesce a device's points into as few block reads as the limits allow."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from drivers.modbus.blockcodec import BlockCodec, PointPlan
from drivers.profile import ModbusProfile, Table
from drivers.quality import QualityMap, QualityName
from drivers.registers import WIDTH, DataType, Order, sentinel_value
from drivers.timefmt import RegisterClock
from telemetry import quantities
from telemetry.reading import Quality

CLOCK = "@clock"  # the pseudo point of a register clock inside a block (never a reading)


@dataclass(frozen=True, slots=True)
class Block:
    """One request: `count` registers or bits of `table` from `address`."""

    table: Table
    address: int
    count: int
    points: tuple[PointPlan, ...]
    # the register points compiled into one unpack, worked out once here (bit tables have none)
    codec: BlockCodec | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.table.is_bit:
            object.__setattr__(self, "codec", BlockCodec(self.points, CLOCK))

    def describe(self) -> str:
        fc = self.table.function_code
        return (
            f"FC{fc} {self.table.value} {self.address}..{self.address + self.count - 1} ({self.count}) -> "
            + ", ".join("device clock" if p.quantity == CLOCK else p.quantity for p in self.points)
        )


@dataclass(frozen=True)
class DevicePlan:
    """A device's requests, its register clock, and which points take their quality from which status point."""

    blocks: list[Block]
    clock: RegisterClock | None = None
    status: dict[str, tuple[str, QualityMap]] = field(default_factory=dict)  # quantity -> (status quantity, map)


def plan_device(profile: ModbusProfile, max_gap: int = 8, max_block: int = 125) -> DevicePlan:
    status = {
        p.quantity: (p.status, profile.quality_maps[p.quality])
        for p in profile.points
        if p.status is not None and p.quality is not None
    }
    return DevicePlan(plan_reads(profile, max_gap, max_block), profile.clock, status)


def _point_plan(
    p_quantity: str,
    offset: int,
    dtype: DataType,
    order: Order,
    bit: int | None,
    scale: float,
    add: float,
    unit: str | None,
    invalid: Mapping[str, QualityName] | None = None,
    nbits: int = 1,
) -> PointPlan:
    target = quantities.lookup(p_quantity).unit
    convert: Callable[[float], float] | None = None
    if unit is not None and unit != target and target != "state":
        lin = quantities.linear_factor(unit, target)
        if lin is not None:
            # fold a linear unit conversion into scale and offset: one multiply-add per value on the hot path
            k, off = lin
            scale, add = scale * k, add * k + off
        else:
            convert = quantities.converter(unit, target)
    sentinels: dict[int | float, Quality] | None = None
    if invalid:
        sentinels = {}
        for text, qname in invalid.items():
            sentinels[sentinel_value(text, dtype)] = qname.quality  # as decoded: exact ints, binary32 floats
    return PointPlan(p_quantity, offset, WIDTH[dtype], dtype, order, bit or 0, scale, add, convert, sentinels, nbits)


def plan_reads(profile: ModbusProfile, max_gap: int = 8, max_block: int = 125) -> list[Block]:
    """Group the profile's points into blocks per table: contiguous or within `max_gap`, at most `max_block` long.

    Bit tables (coils, discrete inputs) allow 2000 bits per request; the same gap rule applies, in bits.
    """
    by_table: dict[Table, list[tuple[int, int, PointPlan]]] = {}
    for p, table, addr, order in profile.resolved():
        pp = _point_plan(p.quantity, 0, p.type, order, p.bit, p.scale, p.offset, p.unit, p.invalid, p.bit_count)
        by_table.setdefault(table, []).append((addr, pp.width, pp))
    if profile.clock is not None:
        ctable, caddr = profile.clock_address()
        n = profile.clock.count
        by_table.setdefault(ctable, []).append(
            (caddr, n, PointPlan(CLOCK, 0, n, DataType.UINT16, Order.ABCD, 0, 1.0, 0.0, None))
        )
    blocks: list[Block] = []
    for table in Table:
        blocks += _group(table, by_table.get(table, []), max_gap, 2000 if table.is_bit else max_block)
    return blocks


def split_block(block: Block) -> list[Block]:
    """A block's gap-free parts, as plan_reads makes them with max_gap 0: what replaces a merged read the device
    refuses (exception 02) because it does not map the registers between the block's points."""
    return _group(block.table, [(block.address + p.offset, p.width, p) for p in block.points], 0, block.count)


def _group(table: Table, items: list[tuple[int, int, PointPlan]], max_gap: int, limit: int) -> list[Block]:
    """(address, width, point) of one table -> blocks: contiguous or within `max_gap`, at most `limit` long."""
    blocks: list[Block] = []
    cur: list[tuple[int, int, PointPlan]] = []
    start = end = 0
    for addr, width, pp in sorted(items, key=lambda x: x[0]):
        if cur and (addr - end > max_gap or addr + width - start > limit):
            blocks.append(_block(table, start, end, cur))
            cur = []
        if not cur:
            start = addr
            end = addr
        cur.append((addr, width, pp))
        end = max(end, addr + width)
    if cur:
        blocks.append(_block(table, start, end, cur))
    return blocks


def _block(table: Table, start: int, end: int, items: list[tuple[int, int, PointPlan]]) -> Block:
    pts = tuple(
        PointPlan(
            pp.quantity,
            addr - start,
            pp.width,
            pp.dtype,
            pp.order,
            pp.bit,
            pp.scale,
            pp.add,
            pp.convert,
            pp.invalid,
            pp.nbits,
        )
        for addr, _w, pp in items
    )
    return Block(table, start, end - start, pts)
