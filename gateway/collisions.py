"""Two readings of one series at one timestamp: kept apart by 1 ns, counted and logged once per episode."""

from __future__ import annotations

import logging
import math

from gateway.metrics import Metrics
from telemetry.reading import Reading

log = logging.getLogger("sitegw.pipeline")


class Collisions:
    """The pipeline's check of each reading against the latest of its series (gateway/pipeline.py `mark`)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._devices: set[str] = set()  # devices in a timestamp-collision episode (logged once)

    def settle(self, prev: Reading, r: Reading) -> Reading:
        """Two readings of one series at one timestamp: InfluxDB would keep only the last. Equal ones are a
        redelivery (nothing is lost); a different one moves on by 1 ns, is counted and logged once per episode."""
        same = prev.value == r.value or (math.isnan(prev.value) and math.isnan(r.value))
        if same and prev.quality is r.quality:
            return r
        self.metrics.series_collisions[r.device] += 1
        if r.device not in self._devices:
            self._devices.add(r.device)
            log.warning(
                "device %s: two %s readings at the same timestamp %d (%r, then %r): the second is stored 1 ns later "
                "so neither is lost; does the device stamp in whole seconds, or send one reading twice? "
                "(counted in sitegw_series_collisions_total; logged once)",
                r.device,
                r.quantity,
                r.ts_ns,
                prev.value,
                r.value,
            )
        return Reading(r.device, r.quantity, r.value, r.ts_ns + 1, r.quality)
