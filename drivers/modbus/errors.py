"""Typed Modbus errors; the only module that looks at pymodbus exception types and exception responses."""

from __future__ import annotations

import errno
import re
import socket
import struct
import termios
from typing import Any

from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

from drivers.errors import DeviceBusy, DeviceUnreachable, IllegalAddress, ProtocolError

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
        if code == 2:  # the poll may split a merged block at its gaps (gateway/supervisor.py poll_device)
            raise IllegalAddress(f"{what}: exception {code} ({name})")
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


_ERRNO_WORDS = {
    errno.ENOENT: "no such file",
    errno.ENODEV: "no such device",
    errno.ENXIO: "no such device",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EBUSY: "port busy",
    errno.EIO: "input/output error",
    errno.ECONNREFUSED: "connection refused",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ENETUNREACH: "network unreachable",
    errno.ETIMEDOUT: "timed out",
}


def os_reason(err: BaseException, settings: str = "") -> str:
    """An OS-level failure to open or use a line, in words a technician can act on.

    `settings` describes the serial line settings (`9600 8E1`): a termios EINVAL means the port refused them.
    """
    if isinstance(err, termios.error):
        code = err.args[0] if err.args and isinstance(err.args[0], int) else None
        if code == errno.EINVAL:
            return f"line settings {settings} not supported by this port (termios refused them)".replace("  ", " ")
        return f"line settings refused: {err}"
    if isinstance(err, socket.gaierror):
        return f"DNS lookup failed: {err.strerror or err}"
    if isinstance(err, OSError) and err.errno is None and str(err).startswith(MULTIPLE):
        return _every_address(str(err)[len(MULTIPLE) :])
    if isinstance(err, OSError):
        words = _ERRNO_WORDS.get(err.errno or -1)
        if words is None:
            return f"{type(err).__name__}: {err}"
        name = f" ({err.filename})" if err.filename else ""
        return f"{words}{name}"
    return f"{type(err).__name__}: {err}"


# asyncio's create_connection when each of a host name's addresses failed differently (Python 3.11): one OSError,
# no errno, the addresses' errors joined in its message
MULTIPLE = "Multiple exceptions: "


def _every_address(errors: str) -> str:
    codes = {int(c) for c in re.findall(r"\[Errno (\d+)\]", errors)}
    words = {_ERRNO_WORDS.get(c) for c in codes}
    if len(words) == 1 and None not in words:
        return f"{words.pop()} (at every address of the host)"
    return f"no address of the host could be reached: {errors}"


def line_errors() -> tuple[type[BaseException], ...]:
    """What opening or using a line can raise besides pymodbus's own errors (pyserial wraps OSError as
    SerialException, itself an OSError; termios.error is neither)."""
    return (OSError, termios.error, ValueError)


def decode_errors() -> tuple[type[BaseException], ...]:
    """What pymodbus's decoding of a malformed answer PDU can raise."""
    return (ModbusException, ValueError, IndexError, struct.error)
