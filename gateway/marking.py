"""Each reading of a batch checked against its quantity's range and its series' latest, which it then becomes."""

from __future__ import annotations

from gateway.collisions import Collisions
from gateway.latest import Latest
from gateway.metrics import Metrics
from telemetry import quantities
from telemetry.reading import Quality, Reading


class Marker:
    """The pipeline's per-reading pass (gateway/pipeline.py `mark`): an implausible value is flagged UNCERTAIN (kept,
    never clamped), two readings of one series at one timestamp are kept apart (`Collisions`), and the newest
    reading of each series is kept in `latest`."""

    def __init__(self, latest: Latest, metrics: Metrics) -> None:
        self.latest = latest
        self.metrics = metrics
        self._ranges = quantities.Ranges()
        self._collisions = Collisions(metrics)

    def mark(self, batch: list[Reading], live: list[Reading]) -> tuple[list[Reading], list[Reading]]:
        """The batch as stored, and as shown: `live` is the batch with device clocks corrected (ClockCheck), the
        batch itself when none was (nearly always), which takes the shorter loop of `_mark_same`."""
        if live is batch:
            marked = self._mark_same(batch)
            return marked, marked
        return self._mark_corrected(batch, live)

    def _mark_same(self, batch: list[Reading]) -> list[Reading]:
        # every reading of a site passes this loop: its lookups are held in locals, each field read once
        marked: list[Reading] = []
        ranges, good, append = self._ranges, Quality.GOOD, marked.append
        by_device = self.latest.by_device
        dev: str | None = None  # the run's (a poll or a message: one device's readings), whose latest are `mine`
        mine: dict[str, Reading] = {}
        for r in batch:
            q = r.quantity
            low, high = ranges[q]
            if r.quality is good and not (low <= r.value <= high):
                # implausible: keep it, flag it, never clamp (NaN fails the comparison too)
                r = Reading(r.device, q, r.value, r.ts_ns, Quality.UNCERTAIN)
                self.metrics.readings_implausible += 1
            if r.device is not dev:
                dev = r.device
                mine = by_device.setdefault(dev, {})  # (once a run: a poll's or a message's readings)
            prev = mine.get(q)
            if prev is None:
                mine[q] = r
            else:
                at = prev.ts_ns
                if at == r.ts_ns:
                    r = self._collisions.settle(prev, r)  # (the same time or 1 ns later: the newest)
                    mine[q] = r
                elif at < r.ts_ns:
                    mine[q] = r
            append(r)
        return marked

    def _mark_corrected(self, batch: list[Reading], live: list[Reading]) -> tuple[list[Reading], list[Reading]]:
        marked: list[Reading] = []
        shown: list[Reading] = []
        ranges, good = self._ranges, Quality.GOOD
        by_device = self.latest.by_device
        for i, r in enumerate(batch):
            rng = ranges[r.quantity]
            if r.quality is good and not (rng[0] <= r.value <= rng[1]):
                r = Reading(r.device, r.quantity, r.value, r.ts_ns, Quality.UNCERTAIN)
                self.metrics.readings_implausible += 1
            mine = by_device.setdefault(r.device, {})
            prev = mine.get(r.quantity)
            if prev is not None and prev.ts_ns == r.ts_ns:
                r = self._collisions.settle(prev, r)
            marked.append(r)
            v = live[i]  # as shown: the device's time corrected, the quality as marked
            if v.quality is not r.quality:
                v = Reading(v.device, v.quantity, v.value, v.ts_ns, r.quality)
            shown.append(v)
            if prev is None or prev.ts_ns <= v.ts_ns:
                mine[r.quantity] = v
        return marked, shown
