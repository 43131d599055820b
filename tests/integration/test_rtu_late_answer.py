"""An RTU answer that comes after its request timed out is never taken for the next request's, on a serial device
server (RTU frames over TCP, pymodbus's client): RTU frames carry no transaction id and no register address, so two
blocks of the same size cannot be told apart by their answers.

The scripted device frames its answers as the Modbus over Serial Line specification V1.02 §2.5.1 (address,
function code, byte count, registers, CRC-16 low byte first), the CRC computed by pymodbus's framer, not ours
(its `compute_CRC` returns the two bytes already swapped into wire order, so they are packed big-endian).
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator

import pytest
from pymodbus.framer.rtu import FramerRTU

from drivers.errors import DeviceUnreachable
from drivers.modbus.blockcodec import PointPlan
from drivers.modbus.config import ModbusRtuOverTcpLine
from drivers.modbus.driver import ModbusDevice
from drivers.modbus.link import ModbusLink
from drivers.modbus.plan import Block
from drivers.profile import Table
from drivers.registers import DataType, Order
from gateway.supervisor import poll_device


class SlowRtuDevice:
    """Answers FC3 with each register's address as its value; the first answer `first_s` late, the others after
    `then_s`. Answers are written from their own tasks, so a late one can land after the next request."""

    def __init__(self, first_s: float, then_s: float) -> None:
        self.first_s, self.then_s = first_s, then_s
        self.requests: list[tuple[int, int]] = []
        self.port = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def _serve(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while True:
                req = await r.readexactly(8)
                assert struct.unpack(">H", req[6:])[0] == FramerRTU.compute_CRC(req[:6]), req.hex(" ")
                unit, fc, address, count = struct.unpack(">BBHH", req[:6])
                self.requests.append((address, count))
                body = struct.pack(f">BBB{count}H", unit, fc, 2 * count, *range(address, address + count))
                delay = self.first_s if len(self.requests) == 1 else self.then_s
                task = asyncio.create_task(
                    self._answer(w, delay, body + struct.pack(">H", FramerRTU.compute_CRC(body)))
                )
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass

    @staticmethod
    async def _answer(w: asyncio.StreamWriter, delay: float, frame: bytes) -> None:
        await asyncio.sleep(delay)
        if not w.is_closing():
            w.write(frame)


@contextlib.asynccontextmanager
async def rtu_link(device: SlowRtuDevice) -> AsyncIterator[ModbusLink]:
    server = await asyncio.start_server(device._serve, "127.0.0.1", 0)
    device.port = server.sockets[0].getsockname()[1]
    link = ModbusLink(
        ModbusRtuOverTcpLine(
            id="dtu", type="modbus_rtu_over_tcp", host="127.0.0.1", port=device.port, inter_frame_gap_ms=0
        )
    )
    try:
        yield link
    finally:
        link.close()
        server.close()


@pytest.fixture
async def late_first() -> AsyncIterator[tuple[SlowRtuDevice, ModbusLink]]:
    device = SlowRtuDevice(first_s=0.3, then_s=0.1)
    async with rtu_link(device) as link:
        yield device, link


async def test_the_next_block_waits_out_a_late_answer_and_reads_its_own_registers(
    late_first: tuple[SlowRtuDevice, ModbusLink],
) -> None:
    device, link = late_first
    with pytest.raises(DeviceUnreachable, match=r"unit 1 FC3 holding 0\+2: no response") as timed_out:
        await link.read(Table.HOLDING, 0, 2, 1, 0.2)
    # the answer to 0+2 comes 0.1 s after the timeout: before, this read took it ([0, 1])
    assert await link.read(Table.HOLDING, 10, 2, 1, 1.0) == [10, 11]
    assert "; the next request waits 0.2 s for a late answer" in str(timed_out.value)
    assert await link.read(Table.HOLDING, 20, 2, 1, 1.0) == [20, 21]
    assert (link.guards, device.requests) == (1, [(0, 2), (10, 2), (20, 2)])


async def test_a_poll_whose_retry_is_answered_late_decodes_every_point_from_its_own_block() -> None:
    """The review's case: the first block times out (its answer 0.25 s late) and is retried at once; the late first
    answer was taken for the retry, and the retry's (0.12 s) for the second block: pm10 read as 0, pm2_5's
    register."""

    def point(q: str) -> tuple[PointPlan, ...]:
        return (PointPlan(q, 0, 1, DataType.UINT16, Order.ABCD, 0, 1.0, 0.0, None),)

    dev = ModbusDevice(
        "AQ-1", 1, [Block(Table.HOLDING, 0, 1, point("pm2_5")), Block(Table.HOLDING, 10, 1, point("pm10"))], 0.2, 1
    )
    async with rtu_link(SlowRtuDevice(first_s=0.25, then_s=0.12)) as link:
        got = await poll_device(dev, link)
        assert {r.quantity: r.value for r in got.readings} == {"pm2_5": 0.0, "pm10": 10.0}
        assert link.guards == 1
