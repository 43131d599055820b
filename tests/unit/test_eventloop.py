"""`--loop`: uvloop by default, Python's asyncio loop on request; and the timers the pipeline and a Modbus TCP line
keep for themselves work on uvloop, which answers a timer due within half a millisecond with a plain Handle (no
`when()`): the pipeline read `when()` and its task failed at 1 000 msg/s, restarting again and again; and which runs
due timers before it reads its sockets: a Modbus answer that came in time during a stall was a timeout."""

from __future__ import annotations

import asyncio
import socket
import sys
import threading
import time
from pathlib import Path

import pytest

from drivers.errors import DeviceUnreachable
from drivers.modbus.mbap import MBAP, MbapConnection, Registers
from gateway import eventloop
from gateway.config import ConfigError
from gateway.metrics import Metrics
from gateway.pipeline import _TICK, Pipeline
from telemetry.reading import Reading
from tests.unit.test_pipeline_polls import SERIES, TS, _lines, _running, _spool, _until


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_auto_and_uvloop_run_on_uvloop_and_asyncio_on_pythons_own() -> None:
    assert eventloop.run(_loop_module).startswith("uvloop")
    assert eventloop.run(_loop_module, "uvloop").startswith("uvloop")
    assert eventloop.run(_loop_module, "asyncio").startswith("asyncio")


def test_without_uvloop_auto_falls_back_and_uvloop_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop raises ImportError
    assert eventloop.loop_factory("auto") == ("asyncio (uvloop is not installed)", None)
    assert eventloop.run(_loop_module, "auto").startswith("asyncio")
    with pytest.raises(ConfigError, match=r"--loop uvloop: uvloop cannot be imported .*use --loop asyncio"):
        eventloop.run(_loop_module, "uvloop")
    with pytest.raises(ConfigError, match="choose one of auto, uvloop, asyncio"):
        eventloop.loop_factory("trio")


def test_uvloop_gives_a_plain_handle_for_a_timer_due_within_half_a_millisecond() -> None:
    """Why the timers below keep their own due time (if uvloop changes this, the comments in pipeline.py and
    mbap.py can go)."""

    async def handle() -> asyncio.Handle:
        h = asyncio.get_running_loop().call_later(0.0002, lambda: None)
        h.cancel()
        return h

    assert not hasattr(eventloop.run(handle, "uvloop"), "when")


def test_the_pipelines_fsync_timer_on_uvloop(tmp_path: Path) -> None:
    async def scenario() -> None:
        sp = _spool(tmp_path)
        pipe = Pipeline(sp, SERIES, Metrics(), poll_linger_s=0.001)
        pipe._arm(0.0002)  # a Handle
        pipe._arm(0.0001)  # kept (within a ms of it): asked of the Handle before
        async with asyncio.timeout(5):
            assert await pipe._q.get() is _TICK
        async with _running(pipe, sp):
            for i in range(20):  # polls with a 1 ms linger: timers under half a ms among them
                await pipe.submit([Reading("D", "lel", float(i), TS + i)])
                await asyncio.sleep(0.0003 * (i % 3))
            await _until(lambda: sp.appended_lines == 20, "the polls written")
            assert [ln.split(" ")[1] for ln in _lines(sp)] == [f"lel={float(i)}" for i in range(20)]

    eventloop.run(scenario, "uvloop")


def _answer(request: bytes) -> bytes:
    """A device's answer to a read of holding registers: the registers counting up from 0x0001 by 0x0202."""
    tid, _proto, _length, unit = MBAP.unpack_from(request)
    count = int.from_bytes(request[10:12], "big")
    pdu = bytes([3, 2 * count]) + bytes(range(2 * count))
    return MBAP.pack(tid, 0, len(pdu) + 1, unit) + pdu


class _Answering(asyncio.Transport):
    """A Modbus TCP device on the far side of the transport: answers a read of holding registers at once (before the
    request awaits), or never (`silent`)."""

    def __init__(self, conn: MbapConnection, silent: bool = False) -> None:
        super().__init__()
        self.conn, self.silent = conn, silent

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.silent:
            return
        self.conn.data_received(_answer(bytes(data)))

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass


def test_a_modbus_lines_deadline_timer_on_uvloop() -> None:
    async def scenario() -> list[list[int]]:
        conn = MbapConnection()
        conn.connection_made(_Answering(conn))
        got = []
        for _ in range(3):  # each answered before its timer (a Handle at 0.3 ms) fires: the next asks it
            answer = await conn.request(b"\x03\x00\x00\x00\x02", 1, 0.0003)
            assert isinstance(answer, Registers)
            got.append(list(answer.registers))
        conn.idle(1.0)  # asks it too
        conn.connection_made(_Answering(conn, silent=True))
        with pytest.raises(DeviceUnreachable, match=r"no response within 0\.05 s"):
            await conn.request(b"\x03\x00\x00\x00\x02", 1, 0.05)
        return got

    assert eventloop.run(scenario, "uvloop") == [[0x0001, 0x0203]] * 3


def _device_answering_after(sock: socket.socket, delay_s: float) -> threading.Thread:
    """A Modbus TCP device on the far end of `sock`, in a thread: answers one read of holding registers `delay_s`
    after it came."""

    def serve() -> None:
        req = sock.recv(260)
        time.sleep(delay_s)
        sock.sendall(_answer(req))

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    return th


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_an_answer_in_time_is_taken_after_a_stall_of_the_process(loop: str) -> None:
    """The device answers 5 ms after the request; the process stalls for 200 ms (a callback that blocks) before it
    reads its sockets again. uvloop runs due timers before it reads: without a look at the socket after the deadline,
    the answer that came in time was a timeout (every line's at once at 200 devices)."""

    async def scenario() -> list[int]:
        running = asyncio.get_running_loop()
        ours, theirs = socket.socketpair()
        device = _device_answering_after(theirs, 0.005)
        _, conn = await running.create_connection(MbapConnection, sock=ours)
        bell, ring = socket.socketpair()
        bell.setblocking(False)

        def stall() -> None:
            running.remove_reader(bell.fileno())
            time.sleep(0.2)

        running.add_reader(bell.fileno(), stall)
        ring.send(b"!")  # the stall comes in the loop's next read of its sockets, after the request is out
        try:
            answer = await conn.request(b"\x03\x00\x00\x00\x02", 1, 0.05)
        finally:
            conn.close()
            device.join(5)
            for s in (theirs, bell, ring):
                s.close()
        assert isinstance(answer, Registers)
        return list(answer.registers)

    assert eventloop.run(scenario, loop) == [0x0001, 0x0203]
