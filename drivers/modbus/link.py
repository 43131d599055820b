"""One connection per physical line (a TCP endpoint or an RS-485 bus); only its owner task calls it."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from typing import Any

from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException, ModbusIOException
from pymodbus.pdu import ModbusPDU
from pymodbus.pdu.bit_message import ReadCoilsRequest, ReadDiscreteInputsRequest
from pymodbus.pdu.register_message import ReadHoldingRegistersRequest, ReadInputRegistersRequest

from drivers.errors import DeviceUnreachable, DriverError, LineUnavailable, ProtocolError
from drivers.modbus.config import ModbusRtuLine, ModbusRtuOverTcpLine, ModbusTcpLine
from drivers.modbus.errors import check_response, line_errors, os_reason, translate
from drivers.modbus.mbap import MbapConnection, open_connection
from drivers.profile import Table

log = logging.getLogger("sitegw.modbus")

# pymodbus logs every timeout at ERROR; the supervisor logs transitions instead
logging.getLogger("pymodbus").setLevel(logging.CRITICAL)


READ_REQUEST: dict[Table, Any] = {
    Table.HOLDING: ReadHoldingRegistersRequest,
    Table.INPUT: ReadInputRegistersRequest,
    Table.COIL: ReadCoilsRequest,
    Table.DISCRETE: ReadDiscreteInputsRequest,
}


class ModbusLink:
    """A line: connect lazily, one request at a time, inter-frame gap on serial, per-request timeout.

    A Modbus TCP line is an `MbapConnection` of ours (pymodbus's PDUs, half the CPU per request of its client);
    serial and RTU-over-TCP lines, with their CRC framing and inter-frame gaps, use pymodbus's clients.

    An RTU answer carries no transaction id and no register address: an answer that comes after its request timed
    out would be taken for the next request's, another block's registers read as this one's when both are the same
    size. So after a timeout the line waits one more timeout before its next request, and pymodbus drops what comes
    meanwhile (it has no request to give it to): libmodbus's recovery likewise flushes "after a delay based on the
    current response timeout" (modbus_set_error_recovery(3)). `guards` counts these waits."""

    def __init__(self, line: ModbusTcpLine | ModbusRtuOverTcpLine | ModbusRtuLine) -> None:
        self.line = line
        self.client: Any = None
        self._tcp: MbapConnection | None = None
        self._pdus: dict[tuple[Table, int, int], bytes] = {}
        self._gap_s = 0.0
        self.requests = 0
        self.failures = 0
        self._last_io = 0.0
        self._quiet_until = 0.0  # no request before then (a late answer may still come)
        self._guards = 0  # (those of closed Modbus TCP connections; an open one counts its own)
        if isinstance(line, ModbusTcpLine):
            self.where = f"{line.id} ({line.host}:{line.port})"
            return
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
            self._gap_s = line.inter_frame_gap_ms / 1000
            self.client = AsyncModbusTcpClient(
                line.host,
                port=line.port,
                framer=FramerType.RTU,
                timeout=line.connect_timeout_s,
                retries=0,
                reconnect_delay=0,
            )
            self.where = f"{line.id} ({line.host}:{line.port})"
        # never let pymodbus close a serial line because one device on it is dead
        self.client.set_max_no_responses(1_000_000)

    @property
    def connected(self) -> bool:
        if self.client is None:
            return self._tcp is not None and self._tcp.connected
        return bool(self.client.connected)

    @property
    def guards(self) -> int:
        """How many times the line has waited out a possible late answer after a timeout."""
        return self._guards + (self._tcp.guards if self._tcp is not None else 0)

    @property
    def settings(self) -> str:
        ln = self.line
        if isinstance(ln, ModbusRtuLine):
            return f"{ln.baudrate} {ln.bytesize}{ln.parity.value}{ln.stopbits}" + (
                f" (parity {ln.parity.value})" if ln.parity.value != "N" else ""
            )
        return ""

    async def connect(self) -> None:
        """Open the line. Every failure is a DeviceUnreachable whose message says why in words: no such file,
        permission denied, port busy, line settings refused, DNS lookup failed, connection refused."""
        timeout = getattr(self.line, "connect_timeout_s", 2.0)
        if self.client is None:
            await self._connect_tcp(timeout)
            return
        self.client.ctx.comm_params.timeout_connect = timeout
        try:
            ok = await self.client.connect()
        except ModbusException as err:
            self.client.close()
            raise translate(err, f"line {self.where}: connect") from err
        except line_errors() as err:  # termios.error for refused serial settings is not an OSError
            self.client.close()
            raise LineUnavailable(f"line {self.where}: cannot open: {os_reason(err, self.settings)}") from err
        _reraise_lost_cancel()
        if not ok:
            self.client.close()
            raise LineUnavailable(f"line {self.where}: cannot open: {await self._why()}")

    async def _connect_tcp(self, connect_s: float) -> None:
        ln = self.line
        assert isinstance(ln, ModbusTcpLine)
        if self._tcp is not None:
            self._guards += self._tcp.guards
            self._tcp.close()
            self._tcp = None
        try:
            self._tcp = await open_connection(ln.host, ln.port, connect_s)
        except TimeoutError as err:
            why = f"no answer to connect within {connect_s:g} s"
            raise LineUnavailable(f"line {self.where}: cannot open: {why}") from err
        except line_errors() as err:  # (a host name that is not one: UnicodeError from its IDNA encoding)
            raise LineUnavailable(f"line {self.where}: cannot open: {os_reason(err)}") from err

    async def _why(self) -> str:
        """pymodbus answers a failed connect with False and no reason: probe the port or the name ourselves."""
        ln = self.line
        if isinstance(ln, ModbusRtuLine):
            try:
                fd = os.open(ln.port, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
                os.close(fd)
            except OSError as err:
                return os_reason(err)
            try:  # the port opens: try its settings the way pymodbus does (pyserial), to name what was refused
                import serial

                port = serial.Serial(
                    ln.port, ln.baudrate, bytesize=ln.bytesize, parity=ln.parity.value, stopbits=ln.stopbits, timeout=0
                )
                port.close()
            except line_errors() as err:
                return os_reason(err, self.settings)
            return "the port opens with these settings, but the Modbus client could not use it"
        try:
            await asyncio.get_running_loop().getaddrinfo(ln.host, ln.port, type=socket.SOCK_STREAM)
        except socket.gaierror as err:
            return f"DNS lookup of {ln.host!r} failed: {err.strerror or err}"
        except OSError as err:
            return os_reason(err)
        return "connection refused or timed out"

    async def read(self, table: Table, address: int, count: int, unit: int, timeout_s: float) -> list[int] | list[bool]:
        """Read one block; raises DeviceUnreachable / DeviceBusy / ProtocolError."""
        if not self.connected:
            await self.connect()
        self.requests += 1
        rr: Any
        try:
            if self._tcp is not None:
                rr = await self._tcp.request(self._pdu(table, address, count), unit, timeout_s)
            else:
                rr = await self._pymodbus(READ_REQUEST[table](address=address, count=count, dev_id=unit), timeout_s)
            check_response(rr, "")
        except DriverError as err:  # said without the request (or after an empty one): named here, where it is known
            self.failures += 1
            raise type(err)(f"{self._what(table, address, count, unit)}: {str(err).removeprefix(': ')}") from err
        if rr.function_code != table.function_code:
            self.failures += 1
            raise ProtocolError(f"{self._what(table, address, count, unit)}: answered with function code "
                                f"{rr.function_code}")  # fmt: skip
        if table.is_bit:
            if len(rr.bits) < count:
                self.failures += 1
                raise ProtocolError(f"{self._what(table, address, count, unit)}: {len(rr.bits)} bits in the answer")
            return [bool(b) for b in rr.bits[:count]]
        regs: list[int] = rr.registers
        if len(regs) != count:
            self.failures += 1
            raise ProtocolError(f"{self._what(table, address, count, unit)}: {len(regs)} registers in the answer")
        return regs

    def _what(self, table: Table, address: int, count: int, unit: int) -> str:
        return f"line {self.where} unit {unit} FC{table.function_code} {table.value} {address}+{count}"

    def _pdu(self, table: Table, address: int, count: int) -> bytes:
        """A read request's PDU (function code + data), encoded by pymodbus once per block."""
        key = (table, address, count)
        pdu = self._pdus.get(key)
        if pdu is None:
            req = READ_REQUEST[table](address=address, count=count)
            pdu = self._pdus[key] = bytes([req.function_code]) + req.encode()
        return pdu

    async def _pymodbus(self, request: ModbusPDU, timeout_s: float) -> ModbusPDU:
        """One request through pymodbus's client (serial, RTU over TCP), its errors in our words."""
        wait = max(self._last_io + self._gap_s, self._quiet_until) - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        # the transaction manager reads its timeout per request; one owner task per line makes this safe
        self.client.ctx.comm_params.timeout_connect = timeout_s
        try:
            rr: ModbusPDU = await self.client.execute(False, request)
        except ModbusIOException as err:  # no answer in time (or one from another unit): its own may still come
            self._quiet_until = time.monotonic() + timeout_s
            self._guards += 1
            raise DeviceUnreachable(
                f": no response ({err}); the next request waits {timeout_s:g} s for a late answer"
            ) from err
        except (TimeoutError, ModbusException) as err:
            raise translate(err, "") from err
        except line_errors() as err:  # the port vanished (USB adapter pulled), a settings call refused mid-use
            self.client.close()
            raise DeviceUnreachable(f": {os_reason(err, self.settings)}") from err
        finally:
            self._last_io = time.monotonic()
        _reraise_lost_cancel()
        return rr

    def idle(self, for_s: float) -> None:
        """Nothing will be asked of the line for `for_s` seconds (its owner sleeps until its next poll)."""
        if self._tcp is not None:
            self._tcp.idle(for_s)

    def close(self) -> None:
        if self._tcp is not None:
            self._guards += self._tcp.guards
            self._tcp.close()
            self._tcp = None
        if self.client is not None:
            self.client.close()


def _reraise_lost_cancel() -> None:
    """pymodbus awaits each response with asyncio.wait_for, which on Python 3.11 can return the result and drop a
    cancel that arrived in the same loop turn (CPython gh-86296): the owner task would then poll forever and a
    shutdown would hang. If our task is being cancelled, honour it here."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
