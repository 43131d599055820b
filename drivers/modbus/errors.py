"""Typed Modbus errors; the only module that looks at pymodbus exception types and exception responses."""

from __future__ import annotations

from typing import Any

from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

from drivers.errors import DeviceBusy, DeviceUnreachable, ProtocolError

# Modbus exception codes (Modbus Application Protocol v1.1b3, §7)
EXCEPTION_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}


def check_response(rr: Any, what: str) -> Any:
    """Raise our typed error for an exception response; return the response otherwise."""
    if rr is None:
        raise DeviceUnreachable(f"{what}: no response")
    if rr.isError():
        code = getattr(rr, "exception_code", None)
        name = EXCEPTION_NAMES.get(code or 0, "unknown")
        if code in (5, 6):
            raise DeviceBusy(f"{what}: exception {code} ({name})")
        if code in (10, 11):
            raise DeviceUnreachable(f"{what}: exception {code} ({name})")
        raise ProtocolError(f"{what}: exception {code} ({name})")
    return rr


def translate(err: BaseException, what: str) -> Exception:
    """Map a pymodbus exception to our error taxonomy."""
    if isinstance(err, ConnectionException):
        return DeviceUnreachable(f"{what}: {err}")
    if isinstance(err, ModbusIOException):
        return DeviceUnreachable(f"{what}: no response ({err})")
    if isinstance(err, ModbusException):
        return ProtocolError(f"{what}: {err}")
    if isinstance(err, (OSError, TimeoutError)):
        return DeviceUnreachable(f"{what}: {type(err).__name__}: {err}")
    return ProtocolError(f"{what}: {type(err).__name__}: {err}")
