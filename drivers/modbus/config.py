"""The Modbus driver's config: its lines (TCP, RTU over TCP, RTU on a serial port) and the poll planner's options."""

from __future__ import annotations

import os
from collections.abc import Sequence
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field, field_validator

from drivers.config import ID, Claims, DeviceEntry, DriverModel
from telemetry.yamlnum import Float, Int, NoBool


class Parity(StrEnum):
    NONE = "N"
    EVEN = "E"
    ODD = "O"


class ModbusTcpLine(DriverModel):
    id: str = Field(pattern=ID)
    type: Literal["modbus_tcp"]
    host: str
    port: Int = Field(default=502, ge=1, le=65535)
    connect_timeout_s: Float = Field(default=2.0, gt=0, le=60)


class ModbusRtuOverTcpLine(DriverModel):
    """RTU frames (with CRC) over a TCP socket: serial device servers (串口服务器) in transparent mode."""

    id: str = Field(pattern=ID)
    type: Literal["modbus_rtu_over_tcp"]
    host: str
    port: Int = Field(ge=1, le=65535)
    connect_timeout_s: Float = Field(default=2.0, gt=0, le=60)
    inter_frame_gap_ms: Float = Field(default=5.0, ge=0, le=1000)


class ModbusRtuLine(DriverModel):
    id: str = Field(pattern=ID)
    type: Literal["modbus_rtu"]
    port: str  # /dev/ttyUSB0, or a pty link
    baudrate: Int = Field(default=9600, ge=300, le=921600)
    parity: Parity = Parity.NONE
    stopbits: Annotated[Literal[1, 2], NoBool] = 1
    bytesize: Int = 8
    inter_frame_gap_ms: Float | None = Field(default=None, ge=0, le=1000)

    @field_validator("bytesize")
    @classmethod
    def _rtu_bytes(cls, v: int) -> int:
        # Modbus over Serial Line V1.02 §2.5.1.1: an RTU character has 8 data bits (7 is ASCII mode's)
        if v != 8:
            raise ValueError("Modbus RTU characters have 8 data bits (7 is Modbus ASCII, not read here)")
        return v

    @property
    def gap_s(self) -> float:
        """Inter-frame gap: configured, or 3.5 character times (11 bits each), at least 1.75 ms above 19200 baud."""
        if self.inter_frame_gap_ms is not None:
            return self.inter_frame_gap_ms / 1000
        return max(3.5 * 11 / self.baudrate, 0.00175)


Line = Annotated[ModbusTcpLine | ModbusRtuOverTcpLine | ModbusRtuLine, Field(discriminator="type")]


class ModbusOptions(DriverModel):
    max_gap: Int = Field(default=8, ge=0, le=124)  # unused registers read to merge two blocks
    max_block: Int = Field(default=125, ge=1, le=125)
    breaker_failures: Int = Field(default=3, ge=1, le=100)  # consecutive failed polls that open the breaker
    breaker_max_backoff_s: Float = Field(default=30.0, gt=0)


def check_device(at: str, d: DeviceEntry, claims: Claims) -> None:
    """A polled device: on a defined line, at a unit id nobody else has there, answering within its poll interval."""
    if d.line is None or d.unit_id is None:
        raise ValueError(f"{at}: a Modbus device needs 'line' and 'unit_id'")
    if d.broker or d.topic:
        raise ValueError(f"{at}: a Modbus device takes no 'broker'/'topic'")
    if d.timestamp is not None:
        raise ValueError(f"{at}.timestamp: a Modbus device's time is its profile's register clock")
    if d.line not in claims.lines:
        raise ValueError(f"{at}.line: unknown line {d.line!r}; defined: {', '.join(claims.lines) or 'none'}")
    kind = claims.line_types.get(d.line, "modbus_tcp")
    if kind != "modbus_tcp" and not 1 <= d.unit_id <= 247:
        # Modbus over Serial Line V1.02 §2.2: 0 is broadcast (no unit answers), 248-255 are reserved. On Modbus
        # TCP a server addressed by its IP takes 255 (or 0): Messaging on TCP/IP Implementation Guide V1.0b §4.4.2
        raise ValueError(
            f"{at}.unit_id: {d.unit_id} on {kind} line {d.line}: a serial bus's units are 1-247 (0 is broadcast, "
            "248-255 reserved); 0 and 255 are for a device on a modbus_tcp line"
        )
    if d.timeout_s >= d.poll_interval_s:
        raise ValueError(f"{at}.timeout_s: {d.timeout_s:g} s must be below poll_interval_s = {d.poll_interval_s:g} s")
    if d.expected_interval_s is not None and d.expected_interval_s < d.poll_interval_s:
        # readings come once a poll: `up` fell to 0 between two polls, and health.stale chattered
        raise ValueError(
            f"{at}.expected_interval_s: {d.expected_interval_s:g} s is below poll_interval_s = {d.poll_interval_s:g} "
            "s, and a polled device reports once a poll (leave it out: the poll interval is used)"
        )
    scope = claims.unit_scope.get(d.line, d.line)
    other = claims.units.setdefault((scope, d.unit_id), d.id)
    if other != d.id:
        shared = f" (line {scope} is the same host:port)" if scope != d.line else ""
        raise ValueError(f"{at}.unit_id: {d.unit_id} on line {d.line} is already {other}{shared}")


def check_lines(lines: Sequence[ModbusTcpLine | ModbusRtuOverTcpLine | ModbusRtuLine]) -> dict[str, str]:
    """Refuse two lines on one bus: one master per serial line (Modbus over Serial Line V1.02 §2.2), and each line
    is a master of its own. Returns line id -> the line whose unit ids it shares (Modbus TCP lines to one host:port).

    A serial port is compared as written and, where it exists, as the device it leads to (/dev/serial/by-id links);
    a relative port, still relative to the site file here, is compared as written. Two `modbus_tcp` lines to one
    host:port are allowed: a Modbus TCP server takes several clients' connections, and a Modbus TCP gateway is the
    one master of its serial side (it queues, or routes by unit id to its several ports); but they reach the same
    devices, so a unit id is claimed once across them."""
    ports: dict[str, int] = {}
    endpoints: dict[tuple[str, int], int] = {}
    scope: dict[str, str] = {}
    for i, ln in enumerate(lines):
        if isinstance(ln, ModbusRtuLine):
            keys = {ln.port, os.path.normpath(ln.port)}
            if os.path.isabs(ln.port) and os.path.exists(ln.port):
                keys.add(os.path.realpath(ln.port))
            j = next((ports[k] for k in keys if k in ports), None)
            if j is not None:
                first = lines[j]
                assert isinstance(first, ModbusRtuLine)
                same = "" if first.port == ln.port else f" ({first.port!r} leads to the same device)"
                raise ValueError(
                    f"lines[{i}] ({ln.id}).port: {ln.port!r} is already the port of line {first.id} (lines[{j}])"
                    f"{same}: one master per serial bus (Modbus over Serial Line V1.02 §2.2); put both lines' "
                    "devices on one line"
                )
            ports.update(dict.fromkeys(keys, i))
            continue
        key = (ln.host.strip().lower(), ln.port)
        j = endpoints.setdefault(key, i)
        if j == i:
            continue
        first = lines[j]
        if isinstance(ln, ModbusTcpLine) and isinstance(first, ModbusTcpLine):
            scope[ln.id] = first.id
            continue
        raise ValueError(
            f"lines[{i}] ({ln.id}).host: {ln.host}:{ln.port} is already the endpoint of line {first.id} "
            f"(lines[{j}], {first.type}): a serial device server's port is one RS-485 bus, with one master "
            "(Modbus over Serial Line V1.02 §2.2); put both lines' devices on one line"
        )
    return scope
