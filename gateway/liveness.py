"""Device liveness: `up` readings on every change, `decode_errors` when messages come and none decodes."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence

from gateway.metrics import Metrics
from telemetry.clock import to_next_tick
from telemetry.reading import Reading

log = logging.getLogger("sitegw.supervisor")

Submit = Callable[[list[Reading]], Awaitable[None]]


class Liveness:
    """Emits `up` readings on every state change of a device: 1 on the first good data, 0 when it goes silent."""

    def __init__(self, metrics: Metrics, stale_after_s: dict[str, float]) -> None:
        self.metrics = metrics
        self.stale_after_s = stale_after_s
        self.state: dict[str, int] = {}
        self.last_good: dict[str, float] = {}
        self.last_bad: dict[str, float] = {}  # last message that arrived but did not decode
        self.decoding: dict[str, int] = {}  # device -> 1 while its messages arrive but none decodes
        self.last_heard: dict[str, float] = {}  # last heartbeat (PayloadMap.heartbeat): there, with no data
        self._pending: list[Reading] = []

    def decode_error(self, device: str, now: float) -> None:
        """A message from `device` arrived but nothing in it could be used (dead-lettered)."""
        self.last_bad[device] = now

    def seen(self, device: str, now: float, ts_ns: int | None = None) -> Reading | None:
        self.last_good[device] = now
        if self.decoding.get(device):
            self.decoding[device] = 0
            self.metrics.decode_failing.discard(device)
            self._pending.append(Reading(device, "decode_errors", 0.0, time.time_ns()))
            log.info("device %s: its messages decode again", device)
        return self._up(device, "", ts_ns)

    def seen_at(self, device: str, at: float, now: float) -> Reading | None:
        """Data made at `at` (monotonic: a survey's time, before its file was imported): the device's stale clock
        runs from then, never back, and it is up only if that is within its stale limit (a late file of old
        surveys says nothing of the point being surveyed now)."""
        last = max(at, self.last_good.get(device, -math.inf))  # (the sweep's start-up grace sets one too)
        limit = self.stale_after_s.get(device)
        if limit is not None and now - at > limit:
            self.last_good[device] = last  # the next sweep takes it down, if it is up
            return None
        return self.seen(device, last)

    def heard(self, device: str, now: float | None = None) -> None:
        """A device's heartbeat (no readings): it is there, so it is up (an `up` it brings goes with the next batch
        or sweep); it says nothing of its data, which may still not decode (`decode_errors` is left as it is)."""
        self.last_heard[device] = time.monotonic() if now is None else now
        if (up := self._up(device, " (a heartbeat)")) is not None:
            self._pending.append(up)

    def _up(self, device: str, how: str, ts_ns: int | None = None) -> Reading | None:
        """The device's `up` = 1 reading, when it was not up."""
        prev = self.state.get(device)
        if prev == 1:
            return None
        self.state[device] = 1
        self.metrics.up[device] = 1
        self.metrics.readings_by_driver["liveness"] += 1
        log.info("device %s: %s%s", device, "back online" if prev == 0 else "online", how)
        return Reading(device, "up", 1.0, ts_ns or time.time_ns())

    def take(self) -> Sequence[Reading]:
        """Health readings produced outside a sweep (decode_errors back to 0), to submit with the next batch."""
        if not self._pending:  # (nearly always: no list made per message)
            return ()
        out, self._pending = self._pending, []
        return out

    def down(self, device: str, why: str) -> Reading | None:
        if self.state.get(device) != 0:
            self.state[device] = 0
            self.metrics.up[device] = 0
            self.metrics.readings_by_driver["liveness"] += 1
            log.warning("device %s: offline (%s)", device, why)
            return Reading(device, "up", 0.0, time.time_ns())
        return None

    def sweep(self, now: float) -> list[Reading]:
        """Devices that produced nothing for longer than their stale limit go down."""
        out: list[Reading] = []
        for device, limit in self.stale_after_s.items():
            last = self.last_good.get(device)
            if self.state.get(device) == 0:
                continue
            if last is None:
                last = self.last_good.setdefault(device, now)  # grace period from start-up
            if now - last <= limit:
                continue
            bad = self.last_bad.get(device)
            if bad is not None and bad > last and now - bad <= limit:
                # messages arrive and none decodes: say so, not "offline" (the link works; the payload or profile
                # does not); the device stays up, its values stay where they were
                if not self.decoding.get(device):
                    self.decoding[device] = 1
                    self.metrics.decode_failing.add(device)
                    log.warning(
                        "device %s: messages arrive but none decoded for %.1f s (see the dead letters)",
                        device,
                        now - last,
                    )
                    out.append(Reading(device, "decode_errors", 1.0, time.time_ns()))
                continue
            heard = self.last_heard.get(device)
            if heard is not None and now - heard <= limit:
                continue  # its heartbeats say it is there; no data for a while is not a fault (an idle crane)
            if self.decoding.get(device):
                self.decoding[device] = 0
                self.metrics.decode_failing.discard(device)
                out.append(Reading(device, "decode_errors", 0.0, time.time_ns()))
            r = self.down(device, f"no data for {now - last:.1f} s (limit {limit:g} s)")
            if r:
                out.append(r)
        out.extend(self.take())
        return out


async def watch_liveness(liveness: Liveness, submit: Submit, period_s: float = 0.5, stall_s: float = 1.0) -> None:
    """Checks staleness twice a second, on the grid of `period_s` (to_next_tick) with the other periodic tasks. If
    this timer woke up more than `stall_s` late, the gateway (not the devices) was stalled, e.g. a host starved of
    CPU or a blocking disk: every device would look silent at once. The stall is credited to every device instead
    of raising a burst of false offline alarms; it is logged and counted."""
    loop = asyncio.get_running_loop()
    while True:
        asked = to_next_tick(loop.time(), period_s)
        prev = time.monotonic()
        await asyncio.sleep(asked)
        now = time.monotonic()
        late = now - prev - asked
        if late > stall_s:
            liveness.metrics.loop_stalls += 1
            log.warning("the gateway was stalled for %.1f s; staleness checks resume from now", late)
            for seen in (liveness.last_good, liveness.last_heard):
                for dev in seen:
                    seen[dev] += late
            continue
        ups = liveness.sweep(now)
        if ups:
            await submit(ups)
