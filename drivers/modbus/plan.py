"""Read planning: coalesce a device's points into as few block reads as the limits allow."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from drivers.modbus.codec import WIDTH, DataType, Order
from drivers.profile import ModbusProfile, Table
from gateway import quantities


@dataclass(frozen=True, slots=True)
class PointPlan:
    """How to turn a slice of a block into one canonical value."""

    quantity: str
    offset: int  # registers (or bits) from the block start
    width: int
    dtype: DataType
    order: Order
    bit: int
    scale: float
    add: float
    convert: Callable[[float], float] | None  # non-linear unit conversion applied after scale/offset


@dataclass(frozen=True, slots=True)
class Block:
    """One request: `count` registers or bits of `table` from `address`."""

    table: Table
    address: int
    count: int
    points: tuple[PointPlan, ...]

    def describe(self) -> str:
        fc = self.table.function_code
        return (
            f"FC{fc} {self.table.value} {self.address}..{self.address + self.count - 1} ({self.count}) -> "
            + ", ".join(p.quantity for p in self.points)
        )


def _point_plan(
    p_quantity: str,
    offset: int,
    dtype: DataType,
    order: Order,
    bit: int | None,
    scale: float,
    add: float,
    unit: str | None,
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
    return PointPlan(p_quantity, offset, WIDTH[dtype], dtype, order, bit or 0, scale, add, convert)


def plan_reads(profile: ModbusProfile, max_gap: int = 8, max_block: int = 125) -> list[Block]:
    """Group the profile's points into blocks per table: contiguous or within `max_gap`, at most `max_block` long.

    Bit tables (coils, discrete inputs) allow 2000 bits per request; the same gap rule applies, in bits.
    """
    by_table: dict[Table, list[tuple[int, int, PointPlan]]] = {}
    for p, table, addr, order in profile.resolved():
        pp = _point_plan(p.quantity, 0, p.type, order, p.bit, p.scale, p.offset, p.unit)
        by_table.setdefault(table, []).append((addr, pp.width, pp))
    blocks: list[Block] = []
    for table in Table:
        items = sorted(by_table.get(table, []), key=lambda x: x[0])
        limit = 2000 if table.is_bit else max_block
        cur: list[tuple[int, int, PointPlan]] = []
        start = end = 0
        for addr, width, pp in items:
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
        PointPlan(pp.quantity, addr - start, pp.width, pp.dtype, pp.order, pp.bit, pp.scale, pp.add, pp.convert)
        for addr, _w, pp in items
    )
    return Block(table, start, end - start, pts)
