"""A Modbus TCP (MBAP) connection that runs one request at a time; pymodbus encodes the PDUs and decodes most."""

from __future__ import annotations

import asyncio
import struct
import time
from typing import Any

from pymodbus.pdu import DecodePDU, ExceptionResponse, ModbusPDU
from pymodbus.pdu.bit_message import ReadCoilsResponse, ReadDiscreteInputsResponse

from drivers.errors import DeviceUnreachable, ProtocolError
from drivers.modbus.errors import decode_errors

# MBAP header (Modbus Messaging on TCP/IP Implementation Guide v1.0b, §3.1.3): transaction id, protocol id (0),
# length of what follows it (unit id + PDU), unit id
MBAP = struct.Struct(">HHHB")
LATE_LOOK_S = 0.001  # a timer this far ahead fires in a later loop turn than this one, after its read of the sockets
MAX_LENGTH = 254  # unit id + the longest PDU (253 bytes, Modbus Application Protocol v1.1b3 §4.1)
# bit reads' answers, decoded by their pymodbus classes directly (DecodePDU also formats every PDU it decodes for a
# debug log, work a poll does not need); register reads' answers are decoded here (Registers)
READ_RESPONSES: dict[int, type[ModbusPDU]] = {
    1: ReadCoilsResponse,
    2: ReadDiscreteInputsResponse,
}


class Registers:
    """A register read's answer (FC3, FC4), decoded here: one `struct` call for its registers where pymodbus's
    response class unpacks them one at a time (with a ModbusPDU built around them): 3.6 % of the main thread at 200
    devices (py-spy). What link.read asks of an answer: its function code, its registers, isError()."""

    __slots__ = ("function_code", "registers")

    def __init__(self, function_code: int, registers: list[int]) -> None:
        self.function_code = function_code
        self.registers = registers

    def isError(self) -> bool:  # (pymodbus's name: check_response calls it)
        return False


_WORDS: dict[int, struct.Struct] = {}  # big-endian uint16 run per register count


class MbapConnection(asyncio.Protocol):
    """One TCP connection to a Modbus server or gateway. The line's owner task is its only caller, so at most one
    request is outstanding: its answer is the frame with its transaction and unit id, anything else (a late answer
    to a request that timed out) is skipped and named if the request then times out. Transaction id 0 in an
    answer and unit id 0 in a request match anything, as in pymodbus's client; so a device that does not echo the
    id could have a late answer taken for the next request: after a timeout on such a connection the next request
    waits one timeout, skipping what comes (`guards`), as on a serial line (link.py).

    pymodbus's client does the same through a general transaction manager (locks, retries, sync and async paths);
    this is the part a gateway polling one request at a time needs, at about half the CPU per request (README,
    "Performance")."""

    def __init__(self) -> None:
        self._decoder = DecodePDU(is_server=False)
        self._transport: asyncio.Transport | None = None
        self._buf = b""
        self._tid = 0
        self._unit = 0
        self._waiter: asyncio.Future[ModbusPDU | Registers] | None = None
        self._deadline = 0.0
        self._timeout_s = 0.0
        self._timer: asyncio.Handle | None = None
        self._timer_at = 0.0  # its due time, kept here: uvloop gives a plain Handle, with no when(), for a 0 ms delay
        self._late = False  # the deadline passed once: the verdict waits for one more look at the socket
        self._skipped = ""
        self._echoes = False  # the last answer taken carried our transaction id (a late one would be known)
        self._quiet_until = 0.0  # no request before then: a late answer we could not tell from the next one's
        self.guards = 0
        self.closed_why = ""

    # ------------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: Any) -> None:
        self._transport = transport
        self._buf = b""
        self.closed_why = ""

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if not self.closed_why:  # (not closed by us: close, _abort)
            self.closed_why = f"connection lost ({exc})" if exc else "connection closed by the device"
        self._fail(DeviceUnreachable(self.closed_why))

    def data_received(self, data: bytes) -> None:
        buf = self._buf + data if self._buf else data
        while len(buf) >= MBAP.size:
            tid, proto, length, unit = MBAP.unpack_from(buf)
            if proto != 0 or not 2 <= length <= MAX_LENGTH:
                # not Modbus TCP, or out of step with the frames: nothing after this can be trusted
                self._abort(f"a frame with protocol id {proto} and length {length} (not Modbus TCP)")
                return
            end = 6 + length
            if length == 2 and len(buf) > MBAP.size and buf[MBAP.size] & 0x80:
                end = 9  # an exception answer whose length left out its code byte: pymodbus's client takes it too
            if len(buf) < end:
                break
            frame, buf = buf[MBAP.size : end], buf[end:]
            waiter = self._waiter
            # as pymodbus's client: a device answering with transaction id 0 (it does not echo it) or to a request
            # for unit 0 (any device on the far side of a gateway) is taken at its word
            if (
                waiter is None
                or waiter.done()
                or (tid != self._tid and tid != 0)
                or (unit != self._unit and self._unit != 0)
            ):
                self._skipped = f"; an answer for transaction {tid} unit {unit} was skipped"
                continue
            self._echoes = tid != 0
            pdu = _decode(frame, self._decoder)
            if frame[0] & 0x80 and len(frame) > 1 and frame[1] == 11:
                # a gateway's own serial timeout (exception 11, target device failed to respond): the device's
                # answer may still come through it, with the next request's transaction id; wait it out too
                self._quiet_until = time.monotonic() + self._timeout_s
                self.guards += 1
            if pdu is None:
                waiter.set_exception(ProtocolError(f"an answer that could not be decoded: {frame[:16].hex(' ')}"))
            else:
                waiter.set_result(pdu)
        self._buf = buf

    # ------------------------------------------------------------------ the owner's side

    @property
    def connected(self) -> bool:
        return self._transport is not None and not self._transport.is_closing()

    async def request(self, pdu_bytes: bytes, unit: int, timeout_s: float) -> ModbusPDU | Registers:
        """Send one request PDU (function code + data) to `unit`; its answer, decoded. Raises DeviceUnreachable
        (no answer in time, connection lost, a stream that is not Modbus TCP) or ProtocolError (an answer whose
        PDU cannot be decoded)."""
        wait = self._quiet_until - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)  # what comes meanwhile finds no waiter and is skipped
        transport = self._transport
        if transport is None or transport.is_closing():
            raise DeviceUnreachable(self.closed_why or "not connected")
        loop = asyncio.get_running_loop()
        self._tid = self._tid + 1 if self._tid < 0xFFFF else 1
        self._unit = unit
        self._skipped = ""
        waiter: asyncio.Future[ModbusPDU | Registers] = loop.create_future()
        self._waiter = waiter
        transport.write(MBAP.pack(self._tid, 0, len(pdu_bytes) + 1, unit) + pdu_bytes)
        # No timer per request: one armed timer checks the deadline of whichever request is waiting when it fires
        # and re-arms for it, so a line polled every 100 ms with a 1 s timeout makes one timer a second, not ten.
        # No wrapping task either: a cancel of the owner reaches the future directly.
        # The deadline on the monotonic clock itself, not loop.time(): uvloop's is the time its loop turn began, so
        # a request sent late in a long turn (200 lines answering together) had tens of ms less than its timeout.
        self._deadline = deadline = time.monotonic() + timeout_s
        self._timeout_s = timeout_s
        self._late = False
        timer = self._timer
        if timer is None or self._timer_at > deadline:
            if timer is not None:
                timer.cancel()
            self._timer = loop.call_later(timeout_s, self._check_deadline)
            self._timer_at = deadline
        try:
            return await waiter
        finally:
            self._waiter = None

    def idle(self, for_s: float) -> None:
        """The owner asks nothing for `for_s` seconds: a deadline timer that would fire before then is cancelled. It
        would only wake the event loop to find no request waiting: a device polled every 100 ms with a 50 ms timeout
        cost the process a wake-up 50 ms after every poll, and a wake-up from idle costs about as much CPU as the
        rest of a poll on a small site (README, Performance). A timer due after the next request is kept: that
        request's deadline is later still, so the timer serves it (one a second at a 1 s timeout, not ten)."""
        timer = self._timer
        if timer is not None and self._waiter is None and self._timer_at < time.monotonic() + for_s:
            timer.cancel()
            self._timer = None

    def _check_deadline(self) -> None:
        self._timer = None
        waiter = self._waiter
        if waiter is None or waiter.done():
            return  # nothing waits: the next request arms a timer of its own
        loop = waiter.get_loop()
        now = time.monotonic()
        if now < self._deadline:  # early by the real clock (uvloop's: whole ms, as its turn began)
            self._timer = loop.call_later(self._deadline - now, self._check_deadline)
            self._timer_at = self._deadline
            return
        if not self._late:
            # uvloop (libuv) runs due timers before it reads the sockets: after a stall of the process longer than
            # the timeout, answers that came in time would be found late, every line's at once. The verdict waits
            # for one read of the socket; asyncio reads before its timers anyway.
            self._late = True
            self._timer = loop.call_later(LATE_LOOK_S, self._check_deadline)
            self._timer_at = now + LATE_LOOK_S
            return
        why = f"no response within {self._timeout_s:g} s{self._skipped}"
        if self._buf:  # part of a frame came and the rest did not: where the next frame starts is unknown
            self._abort(f"{why}; {len(self._buf)} bytes of an answer came without the rest")
            return
        if not self._echoes:
            # its answer may still come, with nothing to tell it from the next request's: wait it out first (a
            # connection opened again after an abort has no such answer to wait for)
            self._quiet_until = now + self._timeout_s
            self.guards += 1
            why += (
                f"; the next request waits {self._timeout_s:g} s for a late answer"
                " (no answer here has echoed a transaction id)"
            )
        waiter.set_exception(DeviceUnreachable(why))

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.closed_why = "closed"
        self._fail(DeviceUnreachable("the line was closed"))
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def _fail(self, err: Exception) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(err)

    def _abort(self, what: str) -> None:
        """Out of step with the stream, or not Modbus TCP: the request fails as unanswered (retried, the device's
        breaker counts it, its `up` reason says this) and the next one opens a new connection."""
        self._buf = b""
        self.closed_why = f"{what}; the connection is closed and opened again"
        self._fail(DeviceUnreachable(self.closed_why))
        if self._transport is not None:
            self._transport.abort()


def _decode(frame: bytes, decoder: DecodePDU) -> ModbusPDU | Registers | None:
    """A PDU -> its answer (Registers, or pymodbus's response object), or None when it cannot be decoded."""
    fc = frame[0]
    if fc == 3 or fc == 4:
        # as ReadHoldingRegistersResponse.decode: the byte count must fit in the frame; its registers are the
        # count's whole pairs of bytes after it
        n = frame[1] if len(frame) > 1 else 0
        if len(frame) < 2 or n >= len(frame) - 1:
            return None
        words = _WORDS.get(n)
        if words is None:
            words = _WORDS[n] = struct.Struct(f">{n // 2}H")
        return Registers(fc, list(words.unpack_from(frame, 2)))
    cls = READ_RESPONSES.get(fc)
    if cls is None and not fc & 0x80:
        return decoder.decode(frame)  # an answer to something we did not ask: decoded to be named
    pdu = cls() if cls is not None else ExceptionResponse(fc & 0x7F)
    try:
        pdu.decode(frame[1:])
    except decode_errors():
        return None
    return pdu


async def open_connection(host: str, port: int, timeout_s: float) -> MbapConnection:
    """Connect; raises OSError (refused, unreachable, DNS) or TimeoutError."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(timeout_s):
        _, conn = await loop.create_connection(MbapConnection, host, port)
    return conn
