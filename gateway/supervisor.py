"""Supervision of drivers: a task per Modbus line (schedule, breakers, retries), a reconnect loop per stream."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from drivers.errors import DeviceBusy, DeviceUnreachable, IllegalAddress, LineUnavailable, ProtocolError
from drivers.modbus.driver import PollResult
from drivers.modbus.plan import Block
from gateway.liveness import Liveness, Submit
from gateway.metrics import Metrics
from telemetry.clock import to_next_tick
from telemetry.reading import Reading

if TYPE_CHECKING:  # pymodbus loads only on a site with Modbus lines (gateway.app)
    from drivers.modbus.link import ModbusLink

log = logging.getLogger("sitegw.supervisor")

# a streaming driver's: with what to call once the batch is spooled (an MQTT message is acknowledged then)
StreamSubmit = Callable[[list[Reading], Callable[[], object] | None], Awaitable[None]]


@dataclass(order=True)
class _Slot:
    due: float
    seq: int
    dev: PolledDriver = field(compare=False)
    interval: float = field(compare=False)


@dataclass
class Breaker:
    """Per-device circuit breaker: after `threshold` failed polls, probe only with exponential backoff."""

    threshold: int
    max_backoff_s: float
    failures: int = 0
    open_until: float = 0.0
    backoff_s: float = 0.0

    def ok(self) -> None:
        self.failures = 0
        self.backoff_s = 0.0
        self.open_until = 0.0

    def fail(self, interval: float, now: float) -> bool:
        """Record a failure; True when the breaker is (now) open."""
        self.failures += 1
        if self.failures < self.threshold:
            return False
        self.backoff_s = min(max(interval, self.backoff_s * 2 or interval * 2), self.max_backoff_s)
        self.open_until = now + self.backoff_s * (0.9 + 0.2 * random.random())
        return True


class PolledDriver(Protocol):
    """A device read on a schedule over a line the supervisor owns (drivers.modbus.driver.ModbusDevice): the
    requests of one poll, one attempt at each, and the decoding of what came back. Retries, timing and `up` are
    the supervisor's."""

    device_id: str
    retries: int  # further attempts at a request the device did not answer

    def requests(self) -> Sequence[Block]: ...
    def split(self, request: Block) -> Sequence[Block]: ...  # a refused merged request's parts, now its requests
    async def fetch(self, link: ModbusLink, request: Block) -> list[int] | list[bool]: ...
    def decode(self, got: list[tuple[Block, list[int] | list[bool]]], receive_ns: int, out: PollResult) -> None: ...


async def poll_device(
    dev: PolledDriver, link: ModbusLink, on_split: Callable[[str], object] | None = None
) -> PollResult:
    """One poll: every request, each tried 1 + `retries` times while the device does not answer (then the poll
    fails: DeviceUnreachable / DeviceBusy); a request answered with an error is reported in `errors` and the other
    requests' readings are still decoded. One timestamp per poll, so one poll is one row in InfluxDB."""
    out = PollResult()
    receive_ns = 0
    got: list[tuple[Block, list[int] | list[bool]]] = []
    pending = list(dev.requests())
    for req in pending:  # (a request split below adds its parts to the end, read in this poll too)
        attempt = 0
        while True:
            try:
                data = await dev.fetch(link, req)
                break
            except (DeviceUnreachable, DeviceBusy):
                if attempt >= dev.retries:
                    raise
                attempt += 1
            except ProtocolError as err:
                parts = dev.split(req) if isinstance(err, IllegalAddress) else ()
                if parts:
                    # a block max_gap merged across registers the device does not map: its points would be lost
                    # on every poll; said once, since the parts replace it (and a part refused stays an error)
                    log.warning(
                        "device %s: %s; a read merged across unused registers: read from now on in gap-free parts %s",
                        dev.device_id, err, ", ".join(p.describe() for p in parts),
                    )  # fmt: skip
                    out.split.append((req, list(parts)))
                    if on_split is not None:  # (counted now: a later request may still fail this poll)
                        on_split(dev.device_id)
                    pending += parts
                else:
                    out.errors.append(err)
                data = None
                break
        if data is not None:
            receive_ns = receive_ns or time.time_ns()
            got.append((req, data))
    if got:
        dev.decode(got, receive_ns, out)
    return out


class StreamingDriver(Protocol):
    """A connection that delivers readings as they come (drivers.mqtt.session.MqttSession); `stream` lives one
    connection, `errors` are what end one, `retry_after` a driver's own wait for an error, the texts its log lines."""

    errors: tuple[type[BaseException], ...]

    async def stream(self, on_connected: Callable[[], None]) -> None: ...
    def retry_after(self, err: BaseException) -> float | None: ...
    def describe(self, err: BaseException) -> str: ...
    def restored(self) -> str: ...


async def run_stream(driver: StreamingDriver, first_s: float = 0.2, max_s: float = 5.0) -> None:
    """Keep a streaming driver connected: back off from `first_s` doubling to `max_s` (±20 % jitter), start over once
    connected, wait what the driver asks where its error says so (refused credentials: long); the first failure of
    an episode is logged, and the recovery."""
    backoff, warned = first_s, False

    def connected() -> None:
        nonlocal backoff, warned
        if warned:
            log.info("%s", driver.restored())
        backoff, warned = first_s, False

    while True:
        delay = backoff
        try:
            await driver.stream(connected)
        except driver.errors as err:
            if not warned:
                log.warning("%s", driver.describe(err))
                warned = True
            delay = driver.retry_after(err) or backoff
        backoff = min(backoff * 2, max_s)
        await asyncio.sleep(delay * (0.8 + 0.4 * random.random()))


class LineOwner:
    """The one task that talks to a physical line. Polls each device on its own schedule; a dead device trips
    its breaker and costs the others at most two timeouts per backoff period (its own, and the wait for a late
    answer after it: drivers/modbus/link.py)."""

    def __init__(
        self,
        link: ModbusLink,
        devices: Sequence[tuple[PolledDriver, float]],
        submit: Submit,
        liveness: Liveness,
        metrics: Metrics,
        breaker_failures: int,
        breaker_max_backoff_s: float,
    ) -> None:
        self.link = link
        self.devices = devices
        self.submit = submit
        self.liveness = liveness
        self.metrics = metrics
        self.breakers = {d.device_id: Breaker(breaker_failures, breaker_max_backoff_s) for d, _ in devices}
        self._warned: set[str] = set()
        self._erring: set[str] = set()
        self._line_down: str | None = None  # why the line cannot be opened, while it cannot
        self._crashed = False  # an unexpected error in a poll was logged (with its traceback) this episode

    async def run(self) -> None:
        heap: list[_Slot] = []
        # polls fall due on the grid of their interval (at most a second: the first poll waits no longer), on the
        # loop's clock, so the devices of every line and the periodic tasks (to_next_tick) wake the process
        # together, not each on its own
        now = time.monotonic()
        start = now + to_next_tick(now, min(1.0, self.devices[0][1])) if self.devices else now
        for i, (dev, interval) in enumerate(self.devices):
            # stagger first polls so devices on one bus do not all fall due at the same instant
            heapq.heappush(heap, _Slot(start + interval * i / max(1, len(self.devices)), i, dev, interval))
        task = asyncio.current_task()  # (each lookup of the running loop is a getpid() system call on 3.11)
        try:
            while True:
                slot = heapq.heappop(heap)
                delay = slot.due - time.monotonic()
                if delay > 0:
                    self.link.idle(delay)  # (its request timer would wake the process for nothing meanwhile)
                    await asyncio.sleep(delay)
                try:
                    await self._poll(slot.dev, slot.interval)
                except Exception as err:
                    # The line's boundary: a library error we do not know yet must cost this line a poll, never the
                    # gateway (a TaskGroup would take every other line and the pipeline down with it).
                    self._unexpected(slot.dev, slot.interval, err)
                if task is not None and task.cancelling():  # a cancel swallowed below us (see modbus.link)
                    raise asyncio.CancelledError
                now = time.monotonic()
                br = self.breakers[slot.dev.device_id]
                nxt = slot.due + slot.interval
                if nxt < now:  # overran: skip missed ticks rather than bursting to catch up
                    nxt = now + slot.interval - ((now - slot.due) % slot.interval)
                if br.open_until > nxt:
                    nxt = br.open_until
                slot.due = nxt
                heapq.heappush(heap, slot)
        finally:
            self.link.close()

    async def poll_once(self, dev: PolledDriver) -> list[Reading]:
        """For `sitegw once`: one poll, errors raised."""
        res = await poll_device(dev, self.link)
        for e in res.errors:
            log.error("device %s: %s", dev.device_id, e)
        return res.readings

    def _unexpected(self, dev: PolledDriver, interval: float, err: Exception) -> None:
        line = self.link.line.id
        self.metrics.line_failures[line] += 1
        self.metrics.poll_failures[dev.device_id] += 1
        self.breakers[dev.device_id].fail(interval, time.monotonic())
        if not self._crashed:
            self._crashed = True
            log.error("line %s: unexpected error polling %s (retrying with backoff)", line, dev.device_id, exc_info=err)
        with contextlib.suppress(Exception):
            self.link.close()  # reopen from scratch on the next poll

    def _line_failed(self, err: LineUnavailable) -> None:
        line = self.link.line.id
        self.metrics.line_failures[line] += 1
        self.metrics.lines_down[line] = str(err)
        if self._line_down is None:
            names = ", ".join(d.device_id for d, _ in self.devices)
            log.warning("%s; its devices (%s) are down until it opens; retrying with backoff", err, names)
        self._line_down = str(err)

    def _split_counted(self, device: str) -> None:
        self.metrics.blocks_split[device] += 1

    async def _poll(self, dev: PolledDriver, interval: float) -> None:
        name = dev.device_id
        self.metrics.polls[name] += 1
        now = time.monotonic()
        try:
            res = await poll_device(dev, self.link, self._split_counted)
        except (DeviceUnreachable, DeviceBusy) as err:
            # failed polls count too: a timeout is the latency the neighbours on the bus pay
            self.metrics.observe_poll(self.link.line.id, time.monotonic() - now)
            self.metrics.poll_failures[name] += 1
            br = self.breakers[name]
            opened = br.fail(interval, now)
            if isinstance(err, LineUnavailable):
                self._line_failed(err)  # one warning for the line, not one per device
                self._warned.add(name)
            elif name not in self._warned:
                self._warned.add(name)
                log.warning("device %s: poll failed: %s", name, err)
            if opened:
                r = self.liveness.down(name, f"{br.failures} failed polls; retrying every {br.backoff_s:.1f} s: {err}")
                if r:
                    await self.submit([r])
            return
        self.metrics.observe_poll(self.link.line.id, time.monotonic() - now)
        self._crashed = False
        if self._line_down is not None:
            log.info("line %s: open again", self.link.line.id)
            self._line_down = None
            self.metrics.lines_down.pop(self.link.line.id, None)
        for e in res.errors:
            # counted every time; logged once per episode (until the device answers cleanly again)
            self.metrics.protocol_errors[name] += 1
            log.log(logging.DEBUG if name in self._erring else logging.ERROR, "device %s: %s", name, e)
            self._erring.add(name)
        if not res.errors and name in self._erring:
            self._erring.discard(name)
            log.info("device %s: answering without exceptions again", name)
        if not res.readings:
            opened = self.breakers[name].fail(interval, now)
            if opened:
                r = self.liveness.down(name, "every block answered with an exception")
                if r:
                    await self.submit([r])
            return
        self.breakers[name].ok()
        self.metrics.readings_by_driver["modbus"] += len(res.readings)
        if name in self._warned:
            self._warned.discard(name)
            log.info("device %s: polling again", name)
        up = self.liveness.seen(name, now, res.readings[0].ts_ns)
        if up:
            res.readings.append(up)
        await self.submit(res.readings)
