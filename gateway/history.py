"""Recent history per device × quantity in bounded memory rings, and the live event hub behind /api/stream."""

from __future__ import annotations

import asyncio
import json
import math
import sqlite3
from array import array
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from alerting.alarms import AlarmEvent
from telemetry.reading import Reading

NS = 1_000_000_000


def _finite(v: float) -> float | None:
    # JSON has no NaN / Infinity; the API shows a non-finite value as null, as /api/latest does
    return v if math.isfinite(v) else None


class _Ring:
    """The points of one series: a slice [base, base + cap) of the history's three shared arrays, used circularly
    (17 bytes a point). A deque of (ts, value, quality) tuples took about 140 bytes a point (2 000 devices grew
    ~25 MB a minute for two hours); three arrays of its own per ring cost ~240 bytes of headers each (6 MB for the
    24 000 series of 2 000 devices), which the shared arrays do not."""

    __slots__ = ("base", "bucket_ns", "cap", "n", "q", "start", "ts", "v")

    def __init__(self, arena: tuple[array[int], array[float], array[int]], cap: int, bucket_ns: int) -> None:
        self.ts, self.v, self.q = arena
        self.base = len(self.ts)
        # the arrays grow by this ring's slice (their objects stay, so every ring's references stay good)
        self.ts.frombytes(bytes(8 * cap))
        self.v.frombytes(bytes(8 * cap))
        self.q.frombytes(bytes(cap))
        self.cap = cap
        self.bucket_ns = bucket_ns
        self.start = 0
        self.n = 0

    def add(self, ts: int, v: float, q: int, window_ns: int) -> None:
        b, tsa = self.base, self.ts
        if self.n:
            last = b + (self.start + self.n - 1) % self.cap
            last_ts = tsa[last]
            if ts < last_ts:
                return  # a late or replayed reading: the ring is for the live view, kept in time order
            if ts // self.bucket_ns == last_ts // self.bucket_ns:
                tsa[last], self.v[last], self.q[last] = ts, v, q  # same bucket: keep the newest value
                return
        if self.n < self.cap:
            i = (self.start + self.n) % self.cap
            self.n += 1
        else:  # full: the new point takes the oldest one's place
            i = self.start
            self.start = (self.start + 1) % self.cap
        tsa[b + i], self.v[b + i], self.q[b + i] = ts, v, q
        horizon = ts - window_ns
        while tsa[b + self.start] < horizon:
            self.start = (self.start + 1) % self.cap
            self.n -= 1

    def points(self, since_ns: int) -> list[tuple[int, float, int]]:
        b, out = self.base, []
        for k in range(self.n):
            i = b + (self.start + k) % self.cap
            if self.ts[i] >= since_ns:
                out.append((self.ts[i], self.v[i], self.q[i]))
        return out

    def last_ts(self) -> int:
        return self.ts[self.base + (self.start + self.n - 1) % self.cap]


class History:
    """One ring per (device, quantity): the last `window_s`, at most `max_points` points (one per bucket).

    A crane polled 4 times a second makes 28 800 readings in 2 h; the ring keeps the newest reading of each
    window_s / points bucket instead. All rings together hold at most `budget_points` points (17 MB by default),
    whatever the number of devices: with `series` expected series, each ring gets budget / series points (at most
    `max_points`), so a site of 2 000 devices sees its last 2 h in coarser buckets, not an ever larger process.
    It is a pipeline listener: add() runs inline in the pipeline task, so it only appends and never waits.
    """

    def __init__(
        self,
        window_s: float = 7200.0,
        max_points: int = 1440,
        budget_points: int = 1_000_000,
        series: int = 0,
        alarm_json: Callable[[Any], dict[str, Any]] | None = None,
    ) -> None:
        if window_s <= 0 or max_points < 2:
            raise ValueError("window_s must be positive and max_points at least 2")
        self.window_ns = int(window_s * NS)
        self.max_points = max_points
        self.budget_points = budget_points
        self.expected_series = series
        self._rings: dict[tuple[str, str], _Ring] = {}
        self._arena: tuple[array[int], array[float], array[int]] = (array("q"), array("d"), array("b"))
        self.hub = LiveHub(alarm_json=alarm_json)

    def _new_ring(self) -> _Ring:
        # more series than expected (a depth family grew) only make the newer rings coarser: the budget holds
        cap = max(2, min(self.max_points, self.budget_points // max(self.expected_series, len(self._rings) + 1)))
        return _Ring(self._arena, cap, max(1, self.window_ns // cap))

    def add(self, batch: list[Reading]) -> None:
        """Pipeline listener: store the batch in the rings, then hand it to the live subscribers as one event."""
        rings = self._rings
        for r in batch:
            ring = rings.get((r.device, r.quantity))
            if ring is None:
                ring = rings[(r.device, r.quantity)] = self._new_ring()
            ring.add(r.ts_ns, r.value, int(r.quality), self.window_ns)
        if batch and self.hub.subscribers:
            rows = [[r.device, r.quantity, _finite(r.value), r.ts_ns, r.quality.name.lower()] for r in batch]
            self.hub.publish("reading", rows)

    def points(self) -> int:
        """Points held now, over all rings (for tests and the memory benchmark's report)."""
        return sum(r.n for r in self._rings.values())

    def quantities(self, device: str) -> list[str]:
        return sorted(q for d, q in self._rings if d == device)

    def devices(self) -> set[str]:
        return {d for d, _ in self._rings}

    def series(self, device: str, quantity: str, minutes: float, now_ns: int | None = None) -> dict[str, Any]:
        """Points of the last `minutes` (before the newest point, or `now_ns`) and the slope over them per day."""
        ring = self._rings.get((device, quantity))
        if ring is None or not ring.n:
            return {"device": device, "quantity": quantity, "points": [], "rate_per_day": None}
        end = now_ns if now_ns is not None else ring.last_ts()
        pts = ring.points(end - int(minutes * 60 * NS))
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
            try:  # asyncio.timeout, not wait_for: on 3.11 wait_for can lose a cancel (CPython gh-86296)
                async with asyncio.timeout(timeout_s):
                    await self.wakeup.wait()
            except TimeoutError:
                return None
        return self.queue.popleft() if self.queue else None


def sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n"


class LiveHub:
    """Fan-out of live events to SSE subscribers; publishing never blocks and never waits on a client."""

    def __init__(self, queue_events: int = 256, alarm_json: Callable[[Any], dict[str, Any]] | None = None) -> None:
        self.queue_events = queue_events
        self.subscribers: set[Subscriber] = set()
        # the alarm as the API shows it (the gateway passes gateway.api.deps.alarm_json with the rules' units)
        self.alarm_json = alarm_json or (lambda a: {"id": getattr(a, "id", None)})

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
