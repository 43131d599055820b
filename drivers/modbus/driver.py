"""Polled Modbus device: block reads through its line, decoded into Readings."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from drivers.errors import DeviceBusy, DeviceUnreachable, ProtocolError
from drivers.modbus.codec import DataType, decode, registers_to_bytes
from drivers.modbus.link import ModbusLink
from drivers.modbus.plan import Block
from gateway.model import Quality, Reading


@dataclass(slots=True)
class PollResult:
    readings: list[Reading] = field(default_factory=list)
    errors: list[ProtocolError] = field(default_factory=list)


class ModbusDevice:
    """One device on a line; constructed from config with no I/O."""

    def __init__(self, device_id: str, unit_id: int, blocks: list[Block], timeout_s: float, retries: int) -> None:
        self.device_id = device_id
        self.unit_id = unit_id
        self.blocks = blocks
        self.timeout_s = timeout_s
        self.retries = retries

    async def poll(self, link: ModbusLink) -> PollResult:
        """Read every block. An unreachable device raises; a block answered with an exception is reported in
        `errors` and the other blocks' readings are still returned."""
        out = PollResult()
        ts_ns = 0  # one timestamp per poll, so one poll is one row in InfluxDB
        for block in self.blocks:
            attempt = 0
            while True:
                try:
                    data = await link.read(block.table, block.address, block.count, self.unit_id, self.timeout_s)
                    break
                except (DeviceUnreachable, DeviceBusy):
                    if attempt >= self.retries:
                        raise
                    attempt += 1
                except ProtocolError as err:
                    out.errors.append(err)
                    data = None
                    break
            if data is not None:
                ts_ns = ts_ns or time.time_ns()
                decode_block(self.device_id, block, data, ts_ns, out.readings)
        return out


def decode_block(device: str, block: Block, data: list[int] | list[bool], ts_ns: int, out: list[Reading]) -> None:
    """Decode a block's registers (or bits) into readings appended to `out`."""
    if block.table.is_bit:
        for p in block.points:
            out.append(Reading(device, p.quantity, 1.0 if data[p.offset] else 0.0, ts_ns))
        return
    raw = registers_to_bytes(data)  # type: ignore[arg-type]
    for p in block.points:
        chunk = raw[p.offset * 2 : (p.offset + p.width) * 2]
        v = float(decode(chunk, p.dtype, p.order, p.bit))
        if p.dtype is not DataType.BIT:
            v = v * p.scale + p.add
            if p.convert is not None:
                v = p.convert(v)
        q = Quality.GOOD if math.isfinite(v) else Quality.BAD  # NaN floats from a device: keep, flag
        out.append(Reading(device, p.quantity, v, ts_ns, q))
