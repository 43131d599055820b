"""Our error taxonomy: what the supervisor needs to decide how to back off and what to log."""

from __future__ import annotations


class DriverError(Exception):
    """Base of every error a driver raises."""


class DeviceUnreachable(DriverError):
    """No answer: socket down, timeout, serial silence. Back off, mark the device down."""


class LineUnavailable(DeviceUnreachable):
    """The line itself cannot be opened (serial settings refused, no such port, permission, DNS): every device on
    it is unreachable until it opens."""


class DeviceBusy(DriverError):
    """The device answered 'busy' or 'acknowledge, try later'. Retry soon."""


class ProtocolError(DriverError):
    """A bad frame, an exception response or an undecodable payload. Count it; keep going."""


class IllegalAddress(ProtocolError):
    """Exception 02 (illegal data address): the device maps not every register or bit the request spans."""


class AuthError(DriverError):
    """Credentials refused (MQTT). Back off long: retrying fast will not help."""
