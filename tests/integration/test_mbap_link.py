"""A Modbus TCP line's own connection (drivers/modbus/mbap.py) against pymodbus's server and against scripted
servers that misbehave on the wire: frames split and joined, late answers, foreign frames, silence, hang-ups.

The scripted servers answer with the examples of the Modbus Application Protocol Specification V1.1b3 (§6.1 read
coils 20-38, §6.3 read holding registers 108-110, §7 exception code 02), so the expected values are the
standard's, not ours.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator, Callable

import pytest
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from drivers.errors import DeviceUnreachable, LineUnavailable, ProtocolError
from drivers.modbus.config import ModbusTcpLine
from drivers.modbus.errors import MULTIPLE, os_reason
from drivers.modbus.link import ModbusLink
from drivers.profile import Table
from services.local import free_port

MBAP = struct.Struct(">HHHB")
# Modbus Application Protocol V1.1b3 §6.3: read holding registers 108-110 (address 0x6B, three registers)
SPEC_FC3_REQUEST = bytes.fromhex("03 006B 0003")
SPEC_FC3_RESPONSE = bytes.fromhex("03 06 022B 0000 0064")
# §6.1: read coils 20-38 (address 0x13, 19 coils)
SPEC_FC1_REQUEST = bytes.fromhex("01 0013 0013")
SPEC_FC1_RESPONSE = bytes.fromhex("01 03 CD 6B 05")


def line(port: int) -> ModbusTcpLine:
    return ModbusTcpLine(id="crane", type="modbus_tcp", host="127.0.0.1", port=port, connect_timeout_s=1.0)


Answer = Callable[[int, int, bytes], list[bytes | float]]


class Scripted:
    """A TCP server that reads MBAP requests and writes what `answer(tid, unit, pdu)` returns, byte chunks each
    written (and drained) on its own, so a frame can arrive split or two frames joined; a number is a pause in
    seconds, b"CLOSE" hangs up."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.requests: list[tuple[int, int, bytes]] = []
        self.connections = 0
        self.server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> Scripted:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self.server is not None
        self.server.close()

    async def _serve(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                tid, _, length, unit = MBAP.unpack(await r.readexactly(MBAP.size))
                pdu = await r.readexactly(length - 1)
                self.requests.append((tid, unit, pdu))
                for chunk in self.answer(tid, unit, pdu):
                    if isinstance(chunk, float):
                        await asyncio.sleep(chunk)
                        continue
                    if chunk == b"CLOSE":
                        w.close()
                        return
                    w.write(chunk)
                    await w.drain()
                    await asyncio.sleep(0.01)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass


@contextlib.asynccontextmanager
async def scripted_link(answer: Answer) -> AsyncIterator[tuple[Scripted, ModbusLink]]:
    """A scripted server and a line's link to it, closed at the end."""
    async with Scripted(answer) as srv:
        link = ModbusLink(line(srv.port))
        try:
            yield srv, link
        finally:
            link.close()


def frame(tid: int, unit: int, pdu: bytes) -> bytes:
    return MBAP.pack(tid, 0, len(pdu) + 1, unit) + pdu


@pytest.fixture
async def pymodbus_device() -> AsyncIterator[int]:
    """pymodbus's own server as the device: holding 100..104 and input 0..2 of unit 7, distinct tables."""
    port = free_port()
    dev = SimDevice(
        id=7,
        simdata=(
            [SimData(0, count=8, values=False, datatype=DataType.BITS)],
            [SimData(0, count=8, values=False, datatype=DataType.BITS)],
            [SimData(100, count=5, values=[1, 2, 3, 0xFFFF, 40000], datatype=DataType.REGISTERS)],
            [SimData(0, count=3, values=[11, 12, 13], datatype=DataType.REGISTERS)],
        ),
    )
    server = ModbusTcpServer([dev], address=("127.0.0.1", port))
    await server.serve_forever(background=True)
    try:
        yield port
    finally:
        await server.shutdown()  # type: ignore[no-untyped-call]


async def test_reads_pymodbus_server_registers_and_its_exception_answers(pymodbus_device: int) -> None:
    link = ModbusLink(line(pymodbus_device))
    try:
        assert await link.read(Table.HOLDING, 100, 5, 7, 1.0) == [1, 2, 3, 0xFFFF, 40000]
        assert await link.read(Table.INPUT, 0, 3, 7, 1.0) == [11, 12, 13]
        with pytest.raises(ProtocolError, match=r"unit 7 FC3 holding 200\+2: exception 2 \(illegal data address\)"):
            await link.read(Table.HOLDING, 200, 2, 7, 1.0)
        assert await link.read(Table.HOLDING, 101, 2, 7, 1.0) == [2, 3]  # the connection goes on after it
        assert (link.requests, link.failures) == (4, 1)
    finally:
        link.close()


async def test_the_standards_examples_split_and_joined_on_the_wire() -> None:
    def answer(tid: int, unit: int, pdu: bytes) -> list[bytes | float]:
        if pdu == SPEC_FC3_REQUEST:
            f = frame(tid, unit, SPEC_FC3_RESPONSE)
            return [f[:3], f[3:9], f[9:]]  # a frame in three segments
        if pdu == SPEC_FC1_REQUEST:
            return [frame(tid, unit, SPEC_FC1_RESPONSE)]
        return [frame(tid, unit, bytes([pdu[0] | 0x80, 2]))]  # §7: illegal data address

    async with scripted_link(answer) as (srv, link):
        assert await link.read(Table.HOLDING, 0x6B, 3, 1, 1.0) == [0x022B, 0, 0x64]
        coils = await link.read(Table.COIL, 0x13, 19, 1, 1.0)
        # CD = coils 27..20, 6B = 35..28, 05 = 38..36 (LSB first): the spec's own reading of its example
        assert [i + 20 for i, on in enumerate(coils) if on] == [20, 22, 23, 26, 27, 28, 29, 31, 33, 34, 36, 38]
        with pytest.raises(ProtocolError, match="exception 2 \\(illegal data address\\)"):
            await link.read(Table.INPUT, 5, 1, 1, 1.0)
        # what went on the wire is the standard's request PDU, transaction ids counting up, unit as given
        assert [p for _, _, p in srv.requests[:2]] == [SPEC_FC3_REQUEST, SPEC_FC1_REQUEST]
        assert [t for t, _, _ in srv.requests] == [1, 2, 3]


async def test_a_late_answer_is_skipped_and_never_taken_for_the_next_request() -> None:
    def answer(tid: int, unit: int, pdu: bytes) -> list[bytes | float]:
        if tid == 1:
            return []  # no answer in time; it comes glued to the next answer instead
        late = frame(1, unit, SPEC_FC3_RESPONSE)
        right = frame(tid, unit, bytes.fromhex("03 06 0001 0002 0003"))
        return [late + right]  # two frames in one segment, the stale one first

    async with scripted_link(answer) as (_srv, link):
        with pytest.raises(DeviceUnreachable, match=r"FC3 holding 107\+3: no response within 0.2 s; the next"):
            await link.read(Table.HOLDING, 107, 3, 1, 0.2)
        assert await link.read(Table.HOLDING, 107, 3, 1, 1.0) == [1, 2, 3]


def registers_of(late_first: float, *, echo: bool) -> Callable[[int, int, bytes], list[bytes | float]]:
    """A device answering FC3 with each register's own address as its value, the first answer `late_first` s late
    and the others after 0.1 s, with transaction id 0 unless it echoes."""
    served = []

    def answer(tid: int, unit: int, req: bytes) -> list[bytes | float]:
        address, count = struct.unpack(">HH", req[1:5])
        served.append(address)
        body = bytes([3, 2 * count]) + struct.pack(f">{count}H", *range(address, address + count))
        return [late_first if len(served) == 1 else 0.1, frame(tid if echo else 0, unit, body)]

    return answer


async def test_a_late_answer_without_a_transaction_id_is_never_taken_for_the_next_block() -> None:
    """A device that answers with transaction id 0 (taken at its word, above) answers a block after its request
    timed out: the next request, for another block of the same size, waits that answer out and gets its own
    registers. Before, it took the late answer's: addresses 0-1's values as 10-11's."""
    async with scripted_link(registers_of(0.3, echo=False)) as (srv, link):
        with pytest.raises(DeviceUnreachable, match=r"next request waits 0\.2 s for a late answer"):
            await link.read(Table.HOLDING, 0, 2, 1, 0.2)
        assert await link.read(Table.HOLDING, 10, 2, 1, 1.0) == [10, 11]
        assert await link.read(Table.HOLDING, 20, 2, 1, 1.0) == [20, 21]
        assert link.guards == 1
        assert [t for t, _, _ in srv.requests] == [1, 2, 3]


async def test_a_device_that_echoes_transaction_ids_is_asked_again_at_once() -> None:
    """Its late answer is known by its id (skipped, above): after a timeout the next request is not held back,
    and it is still told from the next request's answer."""
    slow_second = registers_of(0.0, echo=True)

    def answer(tid: int, unit: int, req: bytes) -> list[bytes | float]:
        return [0.4, *slow_second(tid, unit, req)[1:]] if tid == 2 else slow_second(tid, unit, req)

    async with scripted_link(answer) as (_srv, link):
        assert await link.read(Table.HOLDING, 0, 2, 1, 1.0) == [0, 1]
        with pytest.raises(DeviceUnreachable, match=r"no response within 0\.2 s$"):
            await link.read(Table.HOLDING, 10, 2, 1, 0.2)
        assert await link.read(Table.HOLDING, 20, 2, 1, 1.0) == [20, 21]
        assert link.guards == 0


async def test_silence_names_the_foreign_frame_it_skipped() -> None:
    """A gateway answering for another unit (a miswired serial side): the request times out, and says why."""

    async with scripted_link(lambda tid, unit, pdu: [frame(tid, unit + 1, SPEC_FC3_RESPONSE)]) as (_srv, link):
        skipped = r"no response within 0\.2 s; an answer for transaction 1 unit 4"
        with pytest.raises(DeviceUnreachable, match=skipped):
            await link.read(Table.HOLDING, 107, 3, 3, 0.2)


async def test_answers_that_do_not_echo_the_transaction_or_that_unit_0_asked_for_are_taken() -> None:
    """As with pymodbus's client: a device that answers with transaction id 0, or a gateway answering a request
    for unit 0 with its own unit id, is taken at its word."""
    async with scripted_link(
        lambda tid, unit, pdu: [frame(0 if unit == 1 else tid, unit or 17, SPEC_FC3_RESPONSE)]
    ) as (_srv, link):
        assert await link.read(Table.HOLDING, 107, 3, 1, 1.0) == [0x022B, 0, 0x64]
        assert await link.read(Table.HOLDING, 107, 3, 0, 1.0) == [0x022B, 0, 0x64]


async def test_a_hang_up_mid_request_fails_it_and_the_next_read_connects_again() -> None:
    calls = []

    def answer(tid: int, unit: int, pdu: bytes) -> list[bytes | float]:
        calls.append(tid)
        return [b"CLOSE"] if len(calls) == 1 else [frame(tid, unit, SPEC_FC3_RESPONSE)]

    async with scripted_link(answer) as (srv, link):
        with pytest.raises(DeviceUnreachable, match="connection closed by the device"):
            await link.read(Table.HOLDING, 107, 3, 1, 1.0)
        assert not link.connected
        assert await link.read(Table.HOLDING, 107, 3, 1, 1.0) == [0x022B, 0, 0x64]
        assert srv.connections == 2


async def test_a_stream_that_is_not_modbus_tcp_is_unanswered_and_the_connection_opened_again() -> None:
    """Another service on the port: the request fails as unanswered (retried, counted by the device's breaker),
    its message saying what came instead, and the next request connects again."""
    calls = []

    def answer(tid: int, unit: int, pdu: bytes) -> list[bytes | float]:
        calls.append(tid)
        if len(calls) == 1:
            return [b"HTTP/1.1 400 Bad Request\r\n\r\n"]  # something else listens on the port
        return [frame(tid, unit, SPEC_FC3_RESPONSE)]

    async with scripted_link(answer) as (srv, link):
        with pytest.raises(DeviceUnreachable, match=r"protocol id 21584 .*not Modbus TCP"):
            await link.read(Table.HOLDING, 107, 3, 1, 1.0)
        assert await link.read(Table.HOLDING, 107, 3, 1, 1.0) == [0x022B, 0, 0x64]
        assert srv.connections == 2


async def test_an_answer_pymodbus_cannot_decode_is_a_protocol_error() -> None:
    # byte count 6, two data bytes: the frame's length is consistent, its PDU is not
    async with scripted_link(lambda tid, unit, pdu: [frame(tid, unit, bytes.fromhex("03 06 0001"))]) as (_srv, link):
        with pytest.raises(ProtocolError, match="could not be decoded: 03 06 00 01"):
            await link.read(Table.HOLDING, 107, 3, 1, 1.0)


async def test_refused_connection_is_a_line_unavailable_in_words() -> None:
    link = ModbusLink(line(free_port()))
    with pytest.raises(LineUnavailable, match=r"line crane \(127.0.0.1:\d+\): cannot open: connection refused"):
        await link.read(Table.HOLDING, 0, 1, 1, 1.0)


async def test_a_cancelled_poll_stops_at_once() -> None:
    async with scripted_link(lambda tid, unit, pdu: []) as (_srv, link):  # never answers
        task = asyncio.create_task(link.read(Table.HOLDING, 0, 1, 1, 30.0))
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 2.0)


async def test_a_deadline_is_its_own_request_s_whatever_timer_an_earlier_one_left() -> None:
    """One timer serves a line's requests. Armed by a long-timeout request it must still fire for a short one after
    it; firing for an earlier request it must not cut short one still within its own time."""

    def not_the_second(tid: int, unit: int, pdu: bytes) -> list[bytes | float]:
        return [] if tid == 2 else [frame(tid, unit, SPEC_FC3_RESPONSE)]

    async with scripted_link(not_the_second) as (_srv, link):
        assert await link.read(Table.HOLDING, 107, 3, 1, 5.0) == [0x022B, 0, 0x64]  # arms a timer at +5 s
        with pytest.raises(DeviceUnreachable, match=r"no response within 0\.2 s"):
            await asyncio.wait_for(link.read(Table.HOLDING, 107, 3, 1, 0.2), 3.0)  # and not only at +5 s

    def late(tid: int, unit: int, pdu: bytes) -> list[bytes | float]:
        return [frame(tid, unit, SPEC_FC3_RESPONSE)] if tid == 1 else [2.0, frame(tid, unit, SPEC_FC3_RESPONSE)]

    async with scripted_link(late) as (_srv, link):
        assert await link.read(Table.HOLDING, 107, 3, 1, 1.0) == [0x022B, 0, 0x64]  # arms a timer at +1 s
        # answered after 2 s: the timer fires meanwhile, finds this request within its 5 s, and re-arms
        assert await link.read(Table.HOLDING, 107, 3, 1, 5.0) == [0x022B, 0, 0x64]


async def test_half_an_answer_then_silence_reopens_the_connection_and_the_next_answer_is_read() -> None:
    """The rest of a frame never came: where the next frame starts is unknown, so the connection is opened again
    rather than the next good answer being read against the stale half."""

    calls: list[int] = []

    def answer(tid: int, unit: int, pdu: bytes) -> list[bytes | float]:
        calls.append(tid)
        f = frame(tid, unit, SPEC_FC3_RESPONSE)
        return [f[:5]] if len(calls) == 1 else [f]

    async with scripted_link(answer) as (srv, link):
        with pytest.raises(DeviceUnreachable, match=r"no response within 0\.3 s; 5 bytes of an answer came"):
            await link.read(Table.HOLDING, 107, 3, 1, 0.3)
        assert await link.read(Table.HOLDING, 107, 3, 1, 1.0) == [0x022B, 0, 0x64]
        assert srv.connections == 2


async def test_an_exception_answer_whose_length_leaves_out_its_code_is_read_as_pymodbus_reads_it() -> None:
    """A device that counts unit + function code only (MBAP length 2) in an exception answer: the code byte after
    it is the frame's, as pymodbus's framer takes it, and the connection goes on in step."""

    def answer(tid: int, unit: int, pdu: bytes) -> list[bytes | float]:
        if tid == 1:
            return [MBAP.pack(tid, 0, 2, unit) + bytes([0x83, 0x02])]
        return [frame(tid, unit, SPEC_FC3_RESPONSE)]

    async with scripted_link(answer) as (srv, link):
        with pytest.raises(ProtocolError, match=r"exception 2 \(illegal data address\)"):
            await link.read(Table.HOLDING, 107, 3, 1, 1.0)
        assert await link.read(Table.HOLDING, 107, 3, 1, 1.0) == [0x022B, 0, 0x64]
        assert srv.connections == 1


async def test_an_answer_to_another_function_or_short_of_bits_is_a_protocol_error() -> None:
    def answer(tid: int, unit: int, pdu: bytes) -> list[bytes | float]:
        if pdu[0] == 1:
            return [frame(tid, unit, bytes.fromhex("01 01 CD"))]  # 8 coils where 19 were asked for
        return [frame(tid, unit, bytes.fromhex("04 06 022B 0000 0064"))]  # input registers for a holding read

    async with scripted_link(answer) as (_srv, link):
        with pytest.raises(ProtocolError, match="FC3 holding 107\\+3: answered with function code 4"):
            await link.read(Table.HOLDING, 107, 3, 1, 1.0)
        with pytest.raises(ProtocolError, match="FC1 coil 19\\+19: 8 bits in the answer"):
            await link.read(Table.COIL, 19, 19, 1, 1.0)


async def test_a_host_name_that_is_not_one_is_a_line_unavailable() -> None:
    bad = ModbusTcpLine(id="crane", type="modbus_tcp", host="crane..site", port=502, connect_timeout_s=1.0)
    link = ModbusLink(bad)
    with pytest.raises(LineUnavailable, match=r"line crane \(crane\.\.site:502\): cannot open: UnicodeError"):
        await link.read(Table.HOLDING, 0, 1, 1, 1.0)


def test_every_address_of_a_host_refusing_is_said_in_words() -> None:
    """Python 3.11's create_connection, when each of a name's addresses (IPv4 and IPv6) failed: one OSError with
    no errno, its addresses' errors joined in the message (built here as asyncio builds it)."""
    refused = [
        ConnectionRefusedError(111, "Connect call failed ('::1', 502, 0, 0)"),
        ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 502)"),
    ]
    err = OSError(MULTIPLE + ", ".join(str(e) for e in refused))
    assert os_reason(err) == "connection refused (at every address of the host)"
    mixed = [refused[0], OSError(113, "Connect call failed ('10.0.0.9', 502)")]
    err = OSError(MULTIPLE + ", ".join(str(e) for e in mixed))
    assert os_reason(err).startswith("no address of the host could be reached: [Errno 111]")


async def test_closing_the_line_fails_a_request_waiting_on_it() -> None:
    async with Scripted(lambda tid, unit, pdu: []) as srv:  # never answers
        link = ModbusLink(line(srv.port))
        task = asyncio.create_task(link.read(Table.HOLDING, 0, 1, 1, 30.0))
        await asyncio.sleep(0.2)
        link.close()
        with pytest.raises(DeviceUnreachable, match="the line was closed"):
            await asyncio.wait_for(task, 2.0)
        assert not link.connected


async def test_a_gateway_s_serial_timeout_is_waited_out_like_our_own() -> None:
    """A Modbus TCP to RTU gateway answers exception 11 (its serial side timed out, Modbus Application Protocol
    §7), then forwards the device's late answer stamped with the transaction id of whatever request it holds by
    then. The next request waits one timeout, so that answer comes stamped with the old id and is skipped; sent at
    once, it took the late answer for its own: block 0's registers as block 10's."""
    last_tid = 0
    tasks: set[asyncio.Task[None]] = set()

    async def serve(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        nonlocal last_tid
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                tid, _, length, unit = MBAP.unpack(await r.readexactly(MBAP.size))
                pdu = await r.readexactly(length - 1)
                last_tid = tid
                address, count = struct.unpack(">HH", pdu[1:5])
                body = bytes([3, 2 * count]) + struct.pack(f">{count}H", *range(address, address + count))
                if address == 0:
                    w.write(frame(tid, unit, bytes([0x83, 11])))
                    later(w, 0.1, unit, body)  # the device's answer, through the gateway, stamped when it comes
                else:
                    later(w, 0.2, unit, body)

    def later(w: asyncio.StreamWriter, delay: float, unit: int, body: bytes) -> None:
        async def send() -> None:
            await asyncio.sleep(delay)
            w.write(frame(last_tid, unit, body))

        task = asyncio.create_task(send())
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    link = ModbusLink(line(server.sockets[0].getsockname()[1]))
    try:
        assert await link.read(Table.HOLDING, 20, 2, 1, 1.0) == [20, 21]  # it echoes ids
        with pytest.raises(DeviceUnreachable, match=r"exception 11 \(gateway target device failed to respond\)"):
            await link.read(Table.HOLDING, 0, 2, 1, 0.3)
        assert await link.read(Table.HOLDING, 10, 2, 1, 1.0) == [10, 11]
        assert link.guards == 1
    finally:
        link.close()
        server.close()


async def test_units_255_and_0_of_a_server_addressed_by_its_ip_are_read() -> None:
    """A device on a modbus_tcp line may be unit 255 (Messaging on TCP/IP Implementation Guide V1.0b §4.4.2: a
    server addressed directly by IP) or 0; the config took only 1-247. The request carries the unit as given and
    the answer that echoes it is taken, not unit 1's (pymodbus's server: each unit with its own registers)."""
    port = free_port()

    def unit(uid: int, value: int) -> SimDevice:
        return SimDevice(id=uid, simdata=[SimData(0, count=2, values=[uid, value], datatype=DataType.REGISTERS)])

    server = ModbusTcpServer([unit(1, 100), unit(255, 2550)], address=("127.0.0.1", port))
    await server.serve_forever(background=True)
    link = ModbusLink(line(port))
    try:
        assert await link.read(Table.HOLDING, 0, 2, 255, 1.0) == [255, 2550]
        assert await link.read(Table.HOLDING, 0, 2, 1, 1.0) == [1, 100]
    finally:
        link.close()
        await server.shutdown()  # type: ignore[no-untyped-call]
    seen: list[int] = []

    def echo(tid: int, uid: int, pdu: bytes) -> list[bytes | float]:
        seen.append(uid)
        return [frame(tid, uid, SPEC_FC3_RESPONSE)] if pdu == SPEC_FC3_REQUEST else []

    async with scripted_link(echo) as (_srv, link):
        for uid in (0, 255):
            assert await link.read(Table.HOLDING, 0x6B, 3, uid, 1.0) == [0x022B, 0, 0x64]
    assert seen == [0, 255]
