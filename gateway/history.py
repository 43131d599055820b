"""Recent history per device × quantity in bounded memory rings, and the live event hub behind /api/stream."""

from __future__ import annotations

import asyncio
import json
import math
import sqlite3
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from alerting.lifecycle import AlarmEvent
from gateway.model import Reading

NS = 1_000_000_000


def _finite(v: float) -> float | None:
    # JSON has no NaN / Infinity; the API shows a non-finite value as null, as /api/latest does
    return v if math.isfinite(v) else None


class History:
    """One ring per (device, quantity): the last `window_s`, at most `max_points` points (one per bucket).

    A crane polled 4 times a second makes 28 800 readings in 2 h; the ring keeps the newest reading of each
    window_s / max_points bucket instead, so memory stays bounded by series × max_points whatever the poll rate.
    It is a pipeline listener: add() runs inline in the pipeline task, so it only appends and never waits.
    """

    def __init__(self, window_s: float = 7200.0, max_points: int = 1440) -> None:
        if window_s <= 0 or max_points < 2:
            raise ValueError("window_s must be positive and max_points at least 2")
        self.window_ns = int(window_s * NS)
        self.max_points = max_points
        self.bucket_ns = max(1, self.window_ns // max_points)
        self._rings: dict[tuple[str, str], deque[tuple[int, float, int]]] = {}
        self.hub = LiveHub()

    def add(self, batch: list[Reading]) -> None:
        """Pipeline listener: store the batch in the rings, then hand it to the live subscribers as one event."""
        for r in batch:
            ring = self._rings.get((r.device, r.quantity))
            if ring is None:
                ring = self._rings[(r.device, r.quantity)] = deque(maxlen=self.max_points)
            point = (r.ts_ns, r.value, int(r.quality))
            if ring:
                last_ts = ring[-1][0]
                if r.ts_ns < last_ts:
                    continue  # a late or replayed reading: the ring is for the live view, kept in time order
                if r.ts_ns // self.bucket_ns == last_ts // self.bucket_ns:
                    ring[-1] = point  # same bucket: keep the newest value
                    continue
            ring.append(point)
            horizon = r.ts_ns - self.window_ns
            while ring[0][0] < horizon:
                ring.popleft()
        if batch and self.hub.subscribers:
            rows = [[r.device, r.quantity, _finite(r.value), r.ts_ns, r.quality.name.lower()] for r in batch]
            self.hub.publish("reading", rows)

    def quantities(self, device: str) -> list[str]:
        return sorted(q for d, q in self._rings if d == device)

    def devices(self) -> set[str]:
        return {d for d, _ in self._rings}

    def series(self, device: str, quantity: str, minutes: float, now_ns: int | None = None) -> dict[str, Any]:
        """Points of the last `minutes` (before the newest point, or `now_ns`) and the slope over them per day."""
        ring = self._rings.get((device, quantity), deque())
        if not ring:
            return {"device": device, "quantity": quantity, "points": [], "rate_per_day": None}
        end = now_ns if now_ns is not None else ring[-1][0]
        start = end - int(minutes * 60 * NS)
        pts = [p for p in ring if p[0] >= start]
        return {
            "device": device,
            "quantity": quantity,
            "points": [[ts, _finite(v), q] for ts, v, q in pts],
            "rate_per_day": _slope_per_day(pts, min(600 * NS, self.window_ns // 2)),
        }


def _slope_per_day(pts: list[tuple[int, float, int]], min_span_ns: int) -> float | None:
    """Least-squares slope of the good points in units per day; None when too few or too short to say."""
    good = [(ts, v) for ts, v, q in pts if q == 0 and math.isfinite(v)]
    if len(good) < 3 or good[-1][0] - good[0][0] < min_span_ns:
        return None
    t0 = good[0][0]
    xs = [(ts - t0) / (86400 * NS) for ts, _ in good]
    ys = [v for _, v in good]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx


@dataclass(eq=False)
class Subscriber:
    """One SSE client: a bounded queue of encoded events. Overflow empties it and leaves one `resync` event."""

    maxsize: int
    loop: asyncio.AbstractEventLoop
    queue: deque[str] = field(default_factory=deque)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    dropped: int = 0

    def push(self, frame: str) -> None:
        if len(self.queue) >= self.maxsize:
            # a slow phone must not grow memory: forget what it missed and tell it to fetch the state afresh
            self.dropped += len(self.queue) + 1
            self.queue.clear()
            self.queue.append(sse("resync", {"dropped": self.dropped}))
        else:
            self.queue.append(frame)
        self.wakeup.set()

    async def next(self, timeout_s: float) -> str | None:
        """The next frame, or None after `timeout_s` with nothing to send (time for a heartbeat)."""
        if not self.queue:
            self.wakeup.clear()
            try:
                await asyncio.wait_for(self.wakeup.wait(), timeout_s)
            except TimeoutError:
                return None
        return self.queue.popleft() if self.queue else None


def sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n"


class LiveHub:
    """Fan-out of live events to SSE subscribers; publishing never blocks and never waits on a client."""

    def __init__(self, queue_events: int = 256) -> None:
        self.queue_events = queue_events
        self.subscribers: set[Subscriber] = set()
        self.alarm_json: Callable[[Any], dict[str, Any]] = lambda a: {"id": getattr(a, "id", None)}

    def subscribe(self) -> Subscriber:
        sub = Subscriber(self.queue_events, asyncio.get_running_loop())
        self.subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)

    def publish(self, event: str, data: Any) -> None:
        if not self.subscribers:
            return
        frame = sse(event, data)
        for sub in list(self.subscribers):
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is sub.loop:
                sub.push(frame)
            else:  # called from another thread (a lifecycle change outside the event loop): hand it over
                sub.loop.call_soon_threadsafe(sub.push, frame)

    def on_alarm(self, _conn: sqlite3.Connection, ev: AlarmEvent) -> None:
        """Lifecycle hook: runs inside the SQLite transaction of the change, so it only encodes and enqueues."""
        if self.subscribers:
            self.publish(
                "alarm", {"event": ev.kind, "at_ns": ev.at_ns, "actor": ev.actor, "alarm": self.alarm_json(ev.alarm)}
            )
