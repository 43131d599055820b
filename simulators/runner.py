"""SiteSimulator: every device of a site config served for real, with runtime faults, pins and inspection."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from types import TracebackType

from drivers.profile import ModbusProfile, SurveyProfile
from gateway.config import SiteConfig
from gateway.tasks import Recancel
from simulators.device import DeviceSim, quantities_of
from simulators.faults import FaultMode, parse_mode
from simulators.modbus import ModbusLine
from simulators.mqtt import publish_forever
from simulators.scenarios import Scenario
from simulators.signals import MODELS, Values, rng_for

log = logging.getLogger(__name__)


class SiteSimulator:
    """Async context manager running all devices of `config`; stops every server, task and socat on exit."""

    TICK_S = 0.1  # model update period; fine enough for a crane hook moving a few m/s

    def __init__(
        self,
        config: SiteConfig,
        scenario: str = "normal",
        seed: int = 0,
        time_scale: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if time_scale <= 0:
            raise ValueError("time_scale must be positive")
        self.config = config
        self.scenario = Scenario(scenario)
        self.clock = clock
        self.devices: dict[str, DeviceSim] = {}
        for d in config.devices:
            profile = config.profile_of(d)
            if isinstance(profile, SurveyProfile):
                continue  # surveyed by hand: its results come as files, nothing to simulate on a bus or a broker
            if profile.kind not in MODELS:
                log.warning("device %s: no simulator model for kind %s; it is not simulated", d.id, profile.kind.value)
                continue
            quantities = quantities_of(profile)
            model = MODELS[profile.kind](d, quantities, rng_for(seed, d.id), self.scenario, time_scale)
            self.devices[d.id] = DeviceSim(d, profile, model, config.site.timezone)
        self.lines = [
            ModbusLine(ln, [s for s in self.devices.values() if s.device.line == ln.id])
            for ln in config.lines
            if any(d.line == ln.id for d in config.devices)
        ]
        self._t0 = clock()
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> SiteSimulator:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Render initial values, then open every line (and pty) and start the MQTT publishers."""
        self._t0 = self.clock()
        self.tick()
        started = False
        try:
            for line in self.lines:
                await line.start()
            started = True
        finally:
            if not started:
                await self.stop()  # do not leave a socat or a bound port behind
        self._tasks.append(asyncio.create_task(self._tick_forever(), name="sim-tick"))
        brokers = {b.id: b for b in self.config.brokers}
        for dev in self.devices.values():
            if dev.device.broker is not None:
                task = publish_forever(dev, brokers[dev.device.broker], self.config.site.id)
                self._tasks.append(asyncio.create_task(task, name=f"sim-mqtt-{dev.id}"))

    async def stop(self) -> None:
        # cancelled again while any goes on: aiomqtt's publish waits on its PUBACK with Python 3.11's asyncio.wait_for,
        # which can drop a cancellation, and the publisher then went on for good (a CI run hung on it, 2026-12-07)
        with Recancel(self._tasks, every_s=1.0):
            await asyncio.gather(*self._tasks, return_exceptions=True)  # (what they raised: none "never retrieved")
        self._tasks.clear()
        for line in self.lines:
            with contextlib.suppress(OSError):  # keep stopping the other lines (and their socat)
                await line.stop()

    def tick(self) -> None:
        """Advance every model to the clock's now and re-render what the devices serve."""
        t = self.clock() - self._t0
        for dev in self.devices.values():
            dev.update(dev.model.static() if self.scenario.static else dev.model.advance(t))

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(self.TICK_S)
            self.tick()

    def _dev(self, device_id: str) -> DeviceSim:
        try:
            return self.devices[device_id]
        except KeyError:
            raise KeyError(f"unknown device {device_id!r}; known: {', '.join(self.devices)}") from None

    async def set_fault(self, device_id: str, mode: str | FaultMode) -> None:
        """Switch a device's fault mode ('none' clears it); ValueError for a mode its transport cannot show."""
        dev = self._dev(device_id)
        dev.fault = parse_mode(str(mode), dev.profile)
        if isinstance(dev.profile, ModbusProfile):
            for line in self.lines:
                if line.line.id == dev.device.line:
                    await line.refresh()

    def set_values(self, device_id: str, values: dict[str, float]) -> None:
        """Pin quantities (canonical units) to exact values until release(); KeyError for unknown quantities."""
        self._dev(device_id).pin(values)

    def release(self, device_id: str) -> None:
        self._dev(device_id).release()

    def current(self, device_id: str) -> Values:
        """The canonical values the device serves now (decoded from its registers or payload)."""
        return self._dev(device_id).current()

    def state(self) -> dict[str, Values]:
        return {d: self.current(d) for d in self.devices}

    def faults(self) -> dict[str, str]:
        return {d: str(s.fault) for d, s in self.devices.items()}
