"""A polled line between polls does not wake the process: its request timer is cancelled when its owner sleeps
until a next poll that comes after it (drivers/modbus/mbap.py `idle`, gateway/supervisor.py LineOwner).

The event loop runs on a selector that counts its wake-ups by timer (a wait that ended with no socket ready), and
the device is a Modbus TCP server on that loop answering at once, with no timers of its own: every timer wake-up
counted is the gateway side's.
"""

from __future__ import annotations

import asyncio
import selectors
import struct
from collections.abc import Awaitable, Callable
from typing import Any

from drivers.modbus.config import ModbusTcpLine
from drivers.modbus.driver import ModbusDevice
from drivers.modbus.link import ModbusLink
from drivers.modbus.plan import plan_device
from drivers.profile import ModbusProfile, Table, builtin_profiles
from gateway.liveness import Liveness, watch_liveness
from gateway.metrics import Metrics
from gateway.supervisor import LineOwner
from telemetry.reading import Reading

MBAP = struct.Struct(">HHHB")


class CountingSelector(selectors.DefaultSelector):
    """Counts the waits that ended by their timeout with nothing ready: the loop woken by a timer."""

    timer_wakes = 0

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready: list[tuple[selectors.SelectorKey, int]] = super().select(timeout)
        if not ready and timeout != 0:
            self.timer_wakes += 1
        return ready


class Zeros(asyncio.Protocol):
    """A Modbus TCP device answering every read (FC1-4) with zeros in the same loop turn: no timers."""

    def connection_made(self, transport: Any) -> None:
        self.transport: asyncio.Transport = transport
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while len(self.buf) >= 12:  # MBAP header + function code + address + count
            tid, _, length, unit = MBAP.unpack_from(self.buf)
            pdu, self.buf = self.buf[7 : 6 + length], self.buf[6 + length :]
            fc, count = pdu[0], struct.unpack_from(">H", pdu, 3)[0]
            body = bytes((count + 7) // 8) if fc in (1, 2) else bytes(2 * count)
            answer = bytes([fc, len(body)]) + body
            self.transport.write(MBAP.pack(tid, 0, len(answer) + 1, unit) + answer)


def on_counting_loop(scenario: Callable[[CountingSelector, int], Awaitable[None]]) -> None:
    sel = CountingSelector()
    with asyncio.Runner(loop_factory=lambda: asyncio.SelectorEventLoop(sel)) as runner:

        async def main() -> None:
            server = await asyncio.get_running_loop().create_server(Zeros, "127.0.0.1", 0)
            try:
                await scenario(sel, server.sockets[0].getsockname()[1])
            finally:
                server.close()

        runner.run(main())


def line(port: int) -> ModbusTcpLine:
    return ModbusTcpLine(id="crane", type="modbus_tcp", host="127.0.0.1", port=port, connect_timeout_s=1.0)


def test_a_request_timer_due_while_the_line_idles_is_cancelled_and_one_due_after_is_kept() -> None:
    async def scenario(sel: CountingSelector, port: int) -> None:
        link = ModbusLink(line(port))
        try:
            await link.read(Table.HOLDING, 0, 4, 1, 1.0)  # connected
            for timeout_s in (0.05, 1.0):
                sel.timer_wakes = 0
                for _ in range(4):
                    assert await link.read(Table.HOLDING, 0, 4, 1, timeout_s) == [0, 0, 0, 0]
                    link.idle(0.15)
                    await asyncio.sleep(0.15)
                # one wake-up per sleep: a 50 ms timer would have added one 50 ms after each request; the 1 s one
                # (kept, due after the next request) has not fallen due yet
                assert sel.timer_wakes == 4, timeout_s
        finally:
            link.close()

    on_counting_loop(scenario)


def test_a_line_polled_every_150_ms_with_a_50_ms_timeout_wakes_once_per_poll() -> None:
    prof = builtin_profiles()["tower_crane_tcp_v1"]
    assert isinstance(prof, ModbusProfile)
    dev = ModbusDevice("TC-01", 1, plan_device(prof, max_gap=0, max_block=125), 0.05, 0)

    async def scenario(sel: CountingSelector, port: int) -> None:
        metrics = Metrics()
        got: list[Reading] = []

        async def submit(rs: list[Reading]) -> None:
            got.extend(rs)

        owner = LineOwner(ModbusLink(line(port)), [(dev, 0.15)], submit, Liveness(metrics, {}), metrics, 3, 30.0)
        task = asyncio.create_task(owner.run())
        await asyncio.sleep(0.2)  # connected, first poll made
        polls, wakes = metrics.polls["TC-01"], sel.timer_wakes
        await asyncio.sleep(1.5)
        polls, wakes = metrics.polls["TC-01"] - polls, sel.timer_wakes - wakes
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert got and polls >= 8 and not metrics.poll_failures["TC-01"]
        # the poll's own timer, and (at the end) the test's: the request timers never wake it
        assert wakes <= polls + 1, (wakes, polls)

    on_counting_loop(scenario)


def test_polls_and_the_liveness_check_started_apart_wake_the_process_together() -> None:
    """Polls fall due on their interval's grid and the liveness check on its own (0.5 s): started 0.23 s apart, they
    still wake the process together, not the check in wake-ups of its own."""
    prof = builtin_profiles()["tower_crane_tcp_v1"]
    assert isinstance(prof, ModbusProfile)
    dev = ModbusDevice("TC-01", 1, plan_device(prof, max_gap=0, max_block=125), 0.05, 0)

    async def scenario(sel: CountingSelector, port: int) -> None:
        metrics = Metrics()
        liveness = Liveness(metrics, {"TC-01": 30.0})

        async def submit(rs: list[Reading]) -> None:
            pass

        owner = LineOwner(ModbusLink(line(port)), [(dev, 0.1)], submit, liveness, metrics, 3, 30.0)
        tasks = [asyncio.create_task(owner.run())]
        await asyncio.sleep(0.23)
        tasks.append(asyncio.create_task(watch_liveness(liveness, submit)))
        await asyncio.sleep(0.3)
        polls, wakes = metrics.polls["TC-01"], sel.timer_wakes
        await asyncio.sleep(1.5)
        polls, wakes = metrics.polls["TC-01"] - polls, sel.timer_wakes - wakes
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert polls >= 10 and not metrics.poll_failures["TC-01"]
        # the polls' wake-ups and the test's own sleep: three checks of the liveness in them, none of their own
        assert wakes <= polls + 1, (wakes, polls)

    on_counting_loop(scenario)
