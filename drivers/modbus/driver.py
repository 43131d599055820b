"""Polled Modbus device: block reads through its line, decoded into Readings with the device's time and quality."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import tzinfo
from typing import TYPE_CHECKING

from drivers.errors import ProtocolError
from drivers.modbus.codec import registers_to_bytes
from drivers.modbus.plan import CLOCK, Block, DevicePlan, split_block
from drivers.timefmt import decode_register_clock
from telemetry.reading import Quality, Reading, make_reading

if TYPE_CHECKING:  # the link (and pymodbus) load only on a site with Modbus lines (gateway.app)
    from drivers.modbus.link import ModbusLink


@dataclass(slots=True)
class PollResult:
    readings: list[Reading] = field(default_factory=list)
    errors: list[ProtocolError] = field(default_factory=list)
    # (merged request, its parts): a request the device refused with exception 02, replaced by its gap-free parts
    split: list[tuple[Block, list[Block]]] = field(default_factory=list)


class ModbusDevice:
    """One device on a line; constructed from config with no I/O. Its poll (the requests, their retries and the
    timing) is run by the supervisor (gateway/supervisor.py `poll_device`); this holds what to read and how to
    decode it."""

    def __init__(
        self,
        device_id: str,
        unit_id: int,
        blocks: list[Block] | DevicePlan,
        timeout_s: float,
        retries: int,
        clock_zone: tzinfo | None = None,
    ) -> None:
        self.device_id = device_id
        self.unit_id = unit_id
        self.plan = blocks if isinstance(blocks, DevicePlan) else DevicePlan(blocks)
        self.blocks = self.plan.blocks
        self.timeout_s = timeout_s
        self.retries = retries
        self.clock_zone = clock_zone

    def requests(self) -> list[Block]:
        """What one poll reads, in order: the planned blocks."""
        return self.blocks

    def split(self, block: Block) -> list[Block]:
        """The gap-free parts of a block the device refused with exception 02 (illegal data address), which take its
        place in this device's requests from now on; none when it has no gaps (the registers themselves are not
        there). A device that maps only the registers its manual lists refuses a read max_gap merged across the
        others; its points were lost on every poll."""
        parts = split_block(block)
        at = next((i for i, b in enumerate(self.blocks) if b is block), None)
        if len(parts) < 2 or at is None:
            return []
        self.blocks = [*self.blocks[:at], *parts, *self.blocks[at + 1 :]]  # this device's: never the plan's list
        return parts

    async def fetch(self, link: ModbusLink, block: Block) -> list[int] | list[bool]:
        """One block, one attempt. An unreachable or busy device raises (the supervisor retries); an exception
        response raises ProtocolError (the block is lost, the poll goes on)."""
        return await link.read(block.table, block.address, block.count, self.unit_id, self.timeout_s)

    def decode(self, got: list[tuple[Block, list[int] | list[bool]]], receive_ns: int, out: PollResult) -> None:
        """The blocks one poll read -> readings appended to `out`, with the device's time and quality."""
        decode_poll(self.device_id, self.plan, got, receive_ns, out, self.clock_zone)


def decode_poll(
    device: str,
    plan: DevicePlan,
    got: list[tuple[Block, list[int] | list[bool]]],
    receive_ns: int,
    out: PollResult,
    clock_zone: tzinfo | None = None,
) -> None:
    """A poll's blocks -> readings: the device's own clock when it has one, then per-point quality from status
    points and sentinels."""
    ts_ns = receive_ns
    clock_bad = False
    if plan.clock is not None:
        words = clock_words(plan, got)
        where = f"device {device} clock"
        if words is None:
            clock_bad = True
            out.errors.append(ProtocolError(f"{where}: its registers were not read; readings use the gateway's time"))
        else:
            try:
                assert clock_zone is not None
                ts_ns = decode_register_clock(plan.clock, words, clock_zone, where)
            except ProtocolError as err:
                clock_bad = True
                out.errors.append(ProtocolError(f"{err}; readings use the gateway's time"))
    start = len(out.readings)
    for block, data in got:
        decode_block(device, block, data, ts_ns, out.readings)
    if clock_bad:  # the device's time could not be read: the gateway's clock stands in, and says so
        out.readings[start:] = [
            Reading(r.device, r.quantity, r.value, r.ts_ns, r.quality.worst(Quality.UNCERTAIN))
            for r in out.readings[start:]
        ]
    if plan.status:
        apply_status(plan, out.readings, start)


def clock_words(plan: DevicePlan, got: list[tuple[Block, list[int] | list[bool]]]) -> list[int] | None:
    for block, data in got:
        for p in block.points:
            if p.quantity == CLOCK:
                return [int(w) for w in data[p.offset : p.offset + p.width]]
    return None


def apply_status(plan: DevicePlan, readings: list[Reading], start: int) -> None:
    """Quality of points from their status points (a per-channel status register or bit) through quality maps."""
    values = {r.quantity: r.value for r in readings[start:]}
    for i in range(start, len(readings)):
        r = readings[i]
        rule = plan.status.get(r.quantity)
        if rule is None:
            continue
        status_q, qmap = rule
        code = values.get(status_q)
        # the status register was not read (its block failed): the value cannot be vouched for
        q = Quality.UNCERTAIN if code is None or not math.isfinite(code) else qmap.quality_of(code)
        if q is not Quality.GOOD:
            readings[i] = Reading(r.device, r.quantity, r.value, r.ts_ns, r.quality.worst(q))


def decode_block(device: str, block: Block, data: list[int] | list[bool], ts_ns: int, out: list[Reading]) -> None:
    """Decode a block's registers (or bits) into readings appended to `out`."""
    if block.table.is_bit:
        for p in block.points:
            out.append(make_reading(device, p.quantity, 1.0 if data[p.offset] else 0.0, ts_ns))
        return
    assert block.codec is not None  # every register block has one (plan.Block)
    block.codec.decode(registers_to_bytes(data), device, ts_ns, out)  # type: ignore[arg-type]
