"""Modbus lines: one pymodbus server per TCP line, RTU-over-TCP line or socat pty RTU bus, serving by unit id."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import cast

from pymodbus.constants import ExcCodes
from pymodbus.framer import FramerType
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from drivers.modbus.config import ModbusRtuLine, ModbusRtuOverTcpLine, ModbusTcpLine
from drivers.profile import Table
from simulators.device import DeviceSim
from simulators.faults import FaultMode

log = logging.getLogger(__name__)

Line = ModbusTcpLine | ModbusRtuOverTcpLine | ModbusRtuLine
_TABLES = (Table.COIL, Table.DISCRETE, Table.HOLDING, Table.INPUT)  # the order of SimDevice's 4-tuple
_FC_TABLE = {1: Table.COIL, 5: Table.COIL, 15: Table.COIL, 2: Table.DISCRETE, 4: Table.INPUT}
_FC_TABLE.update(dict.fromkeys((3, 6, 16, 22, 23), Table.HOLDING))


def _simdata(dev: DeviceSim) -> tuple[list[SimData], list[SimData], list[SimData], list[SimData]]:
    """One block per table spanning the device's addresses; the values come from the device at every read."""
    blocks: list[list[SimData]] = []
    for table in _TABLES:
        tab = dev.image.get(table)
        lo, hi = (min(tab), max(tab)) if tab else (0, 0)  # pymodbus needs a block even for an unused table
        if table.is_bit:
            blocks.append([SimData(lo, count=hi - lo + 1, values=False, datatype=DataType.BITS)])
        else:
            blocks.append([SimData(lo, count=hi - lo + 1, values=0, datatype=DataType.REGISTERS)])
    return blocks[0], blocks[1], blocks[2], blocks[3]


async def _serve(
    dev: DeviceSim,
    function_code: int,
    start_address: int,
    _address: int,
    _count: int,
    regs: list[int],
    set_values: list[int] | list[bool] | None,
) -> ExcCodes | None:
    """SimDevice action: answer from the device's current register image (pymodbus slices `regs` afterwards)."""
    if dev.fault is FaultMode.EXCEPTION:
        return ExcCodes.DEVICE_FAILURE
    table = _FC_TABLE.get(function_code)
    if table is None or set_values is not None:
        return ExcCodes.ILLEGAL_FUNCTION  # the simulated devices are read-only monitors
    tab = dev.image.get(table)
    if not tab:
        return ExcCodes.ILLEGAL_ADDRESS
    if table.is_bit:
        # bit blocks are packed 16 per register, bit 0 first; start_address counts registers
        for k in range(len(regs)):
            base = (start_address + k) * 16
            regs[k] = sum(1 << j for j in range(16) if tab.get(base + j))
    else:
        for k in range(len(regs)):
            regs[k] = int(tab.get(start_address + k, 0))
    return None


def _remove_stale_links(port: str) -> None:
    for p in (port, f"{port}.sim"):
        if os.path.islink(p):  # a link left by a killed run; socat must create fresh ones
            os.unlink(p)


def _links_exist(port: str) -> bool:
    return Path(port).exists() and Path(f"{port}.sim").exists()


class ModbusLine:
    """The server of one configured line with every device on it."""

    def __init__(self, line: Line, devices: list[DeviceSim]) -> None:
        self.line = line
        self.devices = {d.device.unit_id or 0: d for d in devices}
        self.server: ModbusTcpServer | ModbusSerialServer | None = None
        self.socat: asyncio.subprocess.Process | None = None
        self._drain: asyncio.Task[None] | None = None

    def _filter(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU | None:
        """trace_pdu hook: a request to an unknown or offline unit id is dropped unanswered, as on a real bus."""
        if sending:
            return pdu
        dev = self.devices.get(pdu.dev_id)
        return None if dev is None or dev.fault is FaultMode.OFFLINE else pdu

    def _make_server(self) -> ModbusTcpServer | ModbusSerialServer:
        # pymodbus annotates trace_pdu as returning a PDU, but its request handler skips a None (no answer)
        trace = cast(Callable[[bool, ModbusPDU], ModbusPDU], self._filter)
        sims = [SimDevice(id=uid, simdata=_simdata(d), action=partial(_serve, d)) for uid, d in self.devices.items()]
        ln = self.line
        if isinstance(ln, ModbusRtuLine):
            return ModbusSerialServer(
                sims,
                framer=FramerType.RTU,
                port=f"{ln.port}.sim",
                baudrate=ln.baudrate,
                parity=ln.parity.value,
                stopbits=ln.stopbits,
                bytesize=ln.bytesize,
                trace_pdu=trace,
            )
        framer = FramerType.RTU if isinstance(ln, ModbusRtuOverTcpLine) else FramerType.SOCKET
        return ModbusTcpServer(sims, framer=framer, address=(ln.host, ln.port), trace_pdu=trace)

    async def _listen(self) -> None:
        server = self._make_server()
        try:
            await server.serve_forever(background=True)
        except RuntimeError as err:  # pymodbus' way of saying the port is taken or the pty cannot be opened
            raise OSError(f"line {self.line.id}: cannot serve: {err}") from None
        self.server = server

    async def start(self) -> None:
        if isinstance(self.line, ModbusRtuLine):
            await self._start_socat(self.line.port)
        await self._listen()
        log.info("line %s: serving unit ids %s", self.line.id, sorted(self.devices))

    async def refresh(self) -> None:
        """Apply a fault change: a Modbus TCP device alone on its line going offline closes its listener."""
        if not isinstance(self.line, ModbusTcpLine) or len(self.devices) != 1:
            return  # other lines drop the unit's requests in _filter
        offline = next(iter(self.devices.values())).fault is FaultMode.OFFLINE
        if offline and self.server is not None:
            await self.server.shutdown()  # type: ignore[no-untyped-call]  # pymodbus: untyped; closes connections too
            self.server = None
        elif not offline and self.server is None:
            await self._listen()

    async def _start_socat(self, port: str) -> None:
        _remove_stale_links(port)
        self.socat = await asyncio.create_subprocess_exec(
            "socat",
            "-d",
            "-d",
            f"pty,raw,echo=0,link={port}",
            f"pty,raw,echo=0,link={port}.sim",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        stderr = self.socat.stderr
        if stderr is None:
            raise RuntimeError("socat started without a stderr pipe")
        # socat logs "starting data transfer loop" after both ptys and their links exist: wait for that line
        async with asyncio.timeout(10):
            while b"starting data transfer loop" not in (text := await stderr.readline()):
                if not text:
                    raise RuntimeError(f"socat for {port} exited with {await self.socat.wait()}")
        if not _links_exist(port):
            raise RuntimeError(f"socat did not create {port} and {port}.sim")
        self._drain = asyncio.create_task(self._drain_stderr(stderr), name=f"socat-stderr-{self.line.id}")

    async def _drain_stderr(self, stderr: asyncio.StreamReader) -> None:
        while text := await stderr.readline():  # keep the pipe from filling up; socat rarely logs after start
            log.debug("socat %s: %s", self.line.id, text.decode(errors="replace").rstrip())

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.shutdown()  # type: ignore[no-untyped-call]  # pymodbus leaves it untyped
            self.server = None
        if self.socat is not None and self.socat.returncode is None:
            self.socat.terminate()
            try:
                async with asyncio.timeout(3):
                    await self.socat.wait()
            except TimeoutError:
                self.socat.kill()
                await self.socat.wait()
        if self._drain is not None:
            self._drain.cancel()
            await asyncio.gather(self._drain, return_exceptions=True)
