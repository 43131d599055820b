"""Device clocks checked against the gateway's: readings too far ahead or too old are kept, flagged and counted."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from gateway.metrics import Metrics
from telemetry.reading import Quality, Reading

log = logging.getLogger("sitegw.clock")

NS = 1_000_000_000
# quantities the gateway itself stamps: never a device clock
_OWN = frozenset({"up", "decode_errors", "clock_skew", "clock_ahead_s"})


class ClockCheck:
    """Per device: a reading stamped more than `max_ahead_s` ahead of the gateway's clock, or more than `max_age_s`
    behind it, is marked UNCERTAIN (kept with the device's time), counted, and the device's `clock_skew` state is
    raised; the device's next reading within its limits lowers it again.

    A reading that is ahead is re-stamped with the gateway's time everywhere, the database included, so a clock that
    runs months ahead can never freeze a device's latest value, its rates, its history or `last()` in InfluxDB. The
    time the device claimed is kept beside it: a `clock_ahead_s` field on the same line says how far ahead it was
    (device time = the line's time + clock_ahead_s), and its `_q` field says UNCERTAIN. A reading that is too old
    keeps its own time (a device's buffer sent late is history, not the present), marked UNCERTAIN.
    """

    def __init__(self, limits: Mapping[str, tuple[float, float]], metrics: Metrics) -> None:
        # devices with equal limits share one tuple (2 000 devices of one kind: one, not 2 000)
        shared: dict[tuple[int, int], tuple[int, int]] = {}
        self._limits = {
            d: shared.setdefault(lim, lim) for d, (a, b) in limits.items() for lim in [(int(a * NS), int(b * NS))]
        }
        self._default = (300 * NS, 7 * 86400 * NS)
        self.metrics = metrics
        self.skewed: dict[str, int] = {}  # device -> 1 while its clock is off

    def apply(self, batch: list[Reading], now_ns: int) -> tuple[list[Reading], list[Reading], list[Reading]]:
        """(readings to store, readings for live views and alarms, clock_skew state changes and clock_ahead_s
        marks, to store and show)."""
        # nearly always every clock is within its limits and none was off before: the batch as it came, nothing to
        # change, found without the lists, dict and set of the full pass (8 of a message's ~240 µs at 1 000 msg/s)
        dev: str | None = None
        ts = 0
        skewed = self.skewed
        for r in batch:
            if r.device is not dev or r.ts_ns != ts:
                if r.quantity in _OWN:
                    continue
                dev, ts = r.device, r.ts_ns
                if self._off(dev, ts, now_ns) or (skewed and skewed.get(dev)):
                    return self._apply(batch, now_ns)
        return batch, batch, []

    def _off(self, device: str, ts_ns: int, now_ns: int) -> bool:
        """The device's time is further ahead of the gateway's, or further behind it, than its limits allow."""
        ahead, age = self._limits.get(device, self._default)
        d = ts_ns - now_ns
        return d > ahead or -d > age

    def _apply(self, batch: list[Reading], now_ns: int) -> tuple[list[Reading], list[Reading], list[Reading]]:
        stored: list[Reading] | None = None
        live: list[Reading] | None = None
        verdict: dict[str, bool] = {}  # device -> any reading off in this batch
        # a poll or a message is a run of one device's readings at one time: checked once per run
        dev: str | None = None
        ts = 0
        off = False
        marks: list[Reading] = []  # how far ahead each re-stamped device time was
        ahead_marked: set[tuple[str, int]] = set()
        for i, r in enumerate(batch):
            if r.device is not dev or r.ts_ns != ts:
                if r.quantity in _OWN:
                    continue
                dev, ts = r.device, r.ts_ns
                off = self._off(dev, ts, now_ns)
                verdict[dev] = verdict.get(dev, False) or off
            if not off or r.quantity in _OWN:
                continue
            if stored is None:
                stored, live = list(batch), list(batch)
            assert live is not None
            q = Quality.UNCERTAIN if r.quality is Quality.GOOD else r.quality
            at = min(r.ts_ns, now_ns)
            stored[i] = live[i] = Reading(r.device, r.quantity, r.value, at, q)
            if r.ts_ns > now_ns and (r.device, r.ts_ns) not in ahead_marked:
                ahead_marked.add((r.device, r.ts_ns))
                marks.append(Reading(r.device, "clock_ahead_s", (r.ts_ns - now_ns) / NS, now_ns))
            self.metrics.clock_skew_readings[r.device] += 1
        changes: list[Reading] = marks
        for device, off in verdict.items():
            if off != bool(self.skewed.get(device)):
                self.skewed[device] = int(off)
                if off:
                    self.metrics.clock_skewed.add(device)
                    ahead, age = self._limits.get(device, self._default)
                    log.warning(
                        "device %s: its clock is off (more than %g s ahead of the gateway or %g s behind); readings "
                        "are kept and marked uncertain",
                        device,
                        ahead / NS,
                        age / NS,
                    )
                else:
                    self.metrics.clock_skewed.discard(device)
                    log.info("device %s: its clock agrees with the gateway's again", device)
                changes.append(Reading(device, "clock_skew", float(off), now_ns))
        if stored is None:
            return batch, batch, changes
        assert live is not None
        return stored, live, changes
