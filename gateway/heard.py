"""The submit of drivers whose devices are heard rather than polled (MQTT, survey files): liveness on the way in."""

from __future__ import annotations

import operator
import time
from collections.abc import Callable

from gateway.acks import unheld
from gateway.liveness import Liveness
from gateway.supervisor import StreamSubmit
from telemetry.reading import Reading

_device = operator.attrgetter("device")


class SeenSubmit:
    """The submit of a driver whose devices are heard rather than polled (MQTT, survey files): the devices of each
    batch are marked seen, their `up` readings (and pending health readings) join it. `ready` / `now`: the same
    without a coroutine, when the pipeline takes a batch at once (gateway/pipeline.py `ready_now`): the MQTT session
    hands over a wake of its reader from the reader's callback then, with no task to wake."""

    def __init__(
        self,
        liveness: Liveness,
        submit: StreamSubmit,
        counted: Callable[[int], None],
        ready: Callable[[], bool] | None = None,
        now: Callable[[list[Reading], Callable[[], object] | None], None] | None = None,
        by_time: bool = False,
    ) -> None:
        self.liveness = liveness
        self.by_time = by_time  # seen when the readings were made, not when they came (survey files: `_surveyed`)
        self._submit = submit
        self.counted = counted
        self._ready = ready
        self._now = now

    async def __call__(self, readings: list[Reading], on_spooled: Callable[[], object] | None = None) -> None:
        out = self._seen(readings)
        await self._submit(out, on_spooled if out is readings else unheld(on_spooled))

    def ready(self) -> bool:
        return self._ready is not None and self._ready()

    def now(self, readings: list[Reading], on_spooled: Callable[[], object] | None) -> None:
        """Hand over at once; only right after `ready` said yes, in the same loop turn."""
        assert self._now is not None
        out = self._seen(readings)
        self._now(out, on_spooled if out is readings else unheld(on_spooled))

    def _seen(self, readings: list[Reading]) -> list[Reading]:
        self.counted(len(readings))
        now = time.monotonic()
        liveness = self.liveness
        if self.by_time:
            ups = self._surveyed(readings, now)
        else:
            # (the devices' set made by map and attrgetter, in C: a message is one device's readings)
            ups = [up for dev in sorted(set(map(_device, readings))) if (up := liveness.seen(dev, now)) is not None]
        ups.extend(liveness.take())
        return readings + ups if ups else readings

    def _surveyed(self, readings: list[Reading], now: float) -> list[Reading]:
        """Each point seen at its newest survey's time: a file imported late marked its points fresh from the
        import, and their missed-survey alarm (health.stale) came a whole stale limit later."""
        newest: dict[str, int] = {}
        for r in readings:
            if r.ts_ns > newest.get(r.device, 0):
                newest[r.device] = r.ts_ns
        wall = time.time_ns()
        ups = []
        for dev, ts in sorted(newest.items()):
            at = now - max(0.0, (wall - ts) / 1e9)  # the survey's time on the monotonic clock
            if (up := self.liveness.seen_at(dev, at, now)) is not None:
                ups.append(up)
        return ups


def marking_seen(liveness: Liveness, submit: StreamSubmit, counted: Callable[[int], None]) -> SeenSubmit:
    """SeenSubmit without the at-once hand-over, seeing each point at its survey's time (survey files)."""
    return SeenSubmit(liveness, submit, counted, by_time=True)
