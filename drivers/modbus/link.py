"""One pymodbus client per physical line (a TCP endpoint or an RS-485 bus); only its owner task calls it."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from drivers.errors import DeviceUnreachable, DriverError, ProtocolError
from drivers.modbus.errors import check_response, translate
from drivers.profile import Table
from gateway.config import ModbusRtuLine, ModbusRtuOverTcpLine, ModbusTcpLine

log = logging.getLogger("sitegw.modbus")

# pymodbus logs every timeout at ERROR; the supervisor logs transitions instead
logging.getLogger("pymodbus").setLevel(logging.CRITICAL)


class ModbusLink:
    """A line: connect lazily, one request at a time, inter-frame gap on serial, per-request timeout."""

    def __init__(self, line: ModbusTcpLine | ModbusRtuOverTcpLine | ModbusRtuLine) -> None:
        self.line = line
        self.client: Any
        self._gap_s = 0.0
        if isinstance(line, ModbusRtuLine):
            self.client = AsyncModbusSerialClient(
                line.port,
                framer=FramerType.RTU,
                baudrate=line.baudrate,
                parity=line.parity.value,
                stopbits=line.stopbits,
                bytesize=line.bytesize,
                timeout=1.0,
                retries=0,  # the supervisor retries, per device
                reconnect_delay=0,  # and reconnects, with its own backoff
            )
            self._gap_s = line.gap_s
            self.where = f"{line.id} ({line.port})"
        else:
            framer = FramerType.RTU if isinstance(line, ModbusRtuOverTcpLine) else FramerType.SOCKET
            if isinstance(line, ModbusRtuOverTcpLine):
                self._gap_s = line.inter_frame_gap_ms / 1000
            self.client = AsyncModbusTcpClient(
                line.host, port=line.port, framer=framer, timeout=line.connect_timeout_s, retries=0, reconnect_delay=0
            )
            self.where = f"{line.id} ({line.host}:{line.port})"
        # never let pymodbus close a serial line because one device on it is dead
        self.client.set_max_no_responses(1_000_000)
        self._last_io = 0.0
        self.requests = 0
        self.failures = 0

    @property
    def connected(self) -> bool:
        return bool(self.client.connected)

    async def connect(self) -> None:
        timeout = getattr(self.line, "connect_timeout_s", 2.0)
        self.client.ctx.comm_params.timeout_connect = timeout
        try:
            ok = await self.client.connect()
        except (ModbusException, OSError) as err:
            raise translate(err, f"line {self.where}: connect") from err
        _reraise_lost_cancel()
        if not ok:
            raise DeviceUnreachable(f"line {self.where}: cannot connect")

    async def read(self, table: Table, address: int, count: int, unit: int, timeout_s: float) -> list[int] | list[bool]:
        """Read one block; raises DeviceUnreachable / DeviceBusy / ProtocolError."""
        if not self.connected:
            await self.connect()
        what = f"line {self.where} unit {unit} FC{table.function_code} {table.value} {address}+{count}"
        if self._gap_s:
            wait = self._last_io + self._gap_s - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        # the transaction manager reads its timeout per request; one owner task per line makes this safe
        self.client.ctx.comm_params.timeout_connect = timeout_s
        self.requests += 1
        try:
            if table is Table.HOLDING:
                rr = await self.client.read_holding_registers(address, count=count, device_id=unit)
            elif table is Table.INPUT:
                rr = await self.client.read_input_registers(address, count=count, device_id=unit)
            elif table is Table.COIL:
                rr = await self.client.read_coils(address, count=count, device_id=unit)
            else:
                rr = await self.client.read_discrete_inputs(address, count=count, device_id=unit)
        except (TimeoutError, ModbusException, OSError) as err:
            self.failures += 1
            raise translate(err, what) from err
        finally:
            self._last_io = time.monotonic()
        _reraise_lost_cancel()
        try:
            check_response(rr, what)
        except DriverError:
            self.failures += 1
            raise
        if table.is_bit:
            return [bool(b) for b in rr.bits[:count]]
        regs: list[int] = rr.registers
        if len(regs) != count:
            self.failures += 1
            raise ProtocolError(f"{what}: {len(regs)} registers in the answer")
        return regs

    def close(self) -> None:
        self.client.close()


def _reraise_lost_cancel() -> None:
    """pymodbus awaits each response with asyncio.wait_for, which on Python 3.11 can return the result and drop a
    cancel that arrived in the same loop turn (CPython gh-86296): the owner task would then poll forever and a
    shutdown would hang. If our task is being cancelled, honour it here."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
