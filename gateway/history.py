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
MS = 1_000_000  # ns in a ms
# A ring's times are uint32 ms after its t0 (49.7 days). It moves t0 up past REBASE_MS (24.8 days); with a window
# of at most a week an offset then never passes 24.8 + 2 × 7 days (the last point, one window after the oldest
# held, one more to a reading in the same bucket).
REBASE_MS = 2**31
MAX_WINDOW_S = 7 * 86400.0


def _finite(v: float) -> float | None:
    # JSON has no NaN / Infinity; the API shows a non-finite value as null, as /api/latest does
    return v if math.isfinite(v) else None


class _Rings:
    """Every series' points, as columns: ring i is the slice [base[i], base[i] + cap[i]) of three shared point
    arrays, used circularly, and its state (start, n, t0, bucket) is entry i of six more arrays.

    A point is 9 bytes: its time in ms after the ring's own `t0` (uint32), its value as float32 (shown to 7
    significant digits; float32 holds 6-9: this is the console's chart, InfluxDB and /api/latest keep every value
    exact) and its quality. A deque of (ts, value, quality) tuples took about 140 bytes a point (2 000 devices grew
    ~25 MB a minute for two hours); three arrays of their own per ring cost ~240 bytes of headers each; 8-byte times
    and values took 17 bytes a point (17 MB of the 2 000-device site's 122 MB). A ring is 40 bytes of columns: as
    an object with its own int fields it took ~190 (4 MB and 22 000 objects for the collector to walk at 2 000
    devices)."""

    __slots__ = ("base", "bucket_ms", "cap", "end_ms", "last", "n", "q", "start", "t0", "ts", "v")

    def __init__(self) -> None:
        self.ts, self.v, self.q = array("I"), array("f"), array("b")
        self.base, self.cap, self.bucket_ms = array("I"), array("I"), array("I")
        self.start, self.n = array("I"), array("I")
        self.t0 = array("q")  # ms since the epoch that ring i's offset 0 stands for
        # the newest point's index in the point arrays, and the ms its bucket ends at: a reading in that bucket
        # (most of them: a bucket holds many readings) replaces the point after four lookups
        self.last = array("I")
        self.end_ms = array("q")

    def new(self, cap: int, bucket_ms: int) -> int:
        i = len(self.base)
        self.base.append(len(self.ts))
        self.cap.append(cap)
        self.bucket_ms.append(bucket_ms)
        for col in (self.start, self.n, self.t0, self.last, self.end_ms):
            col.append(0)
        # the point arrays grow by this ring's slice (their objects stay, so every ring's offsets stay good)
        self.ts.frombytes(bytes(4 * cap))
        self.v.frombytes(bytes(4 * cap))
        self.q.frombytes(bytes(cap))
        return i

    def push(self, i: int, ms: int, v: float, q: int, window_ms: int) -> None:
        """A reading past ring i's newest bucket (at or after `end_ms[i]`): a new point. One in the newest bucket, or
        older, is History.add's (inline: most readings are)."""
        b, cap, start, n, t0, tsa = self.base[i], self.cap[i], self.start[i], self.n[i], self.t0[i], self.ts
        off = ms - t0
        if n:
            last_off = tsa[self.last[i]]
            if off - last_off > window_ms:
                n = 0  # quiet for longer than the window: nothing it holds is still shown
            elif off > REBASE_MS:
                # weeks after t0: count from the oldest point held instead (at most two windows back), so the
                # offsets stay far from uint32's end however long the gateway runs
                shift = tsa[b + start]
                for k in range(n):
                    tsa[b + (start + k) % cap] -= shift
                t0 += shift
                off -= shift
        if not n:
            start, t0, off = 0, ms, 0
        if n < cap:
            j = (start + n) % cap
            n += 1
        else:  # full: the new point takes the oldest one's place
            j = start
            start = (start + 1) % cap
        tsa[b + j], self.v[b + j], self.q[b + j] = off, v, q
        horizon = off - window_ms
        while tsa[b + start] < horizon:
            start = (start + 1) % cap
            n -= 1
        bucket = self.bucket_ms[i]
        self.start[i], self.n[i], self.t0[i], self.last[i] = start, n, t0, b + j
        self.end_ms[i] = (ms // bucket + 1) * bucket

    def points(self, i: int, since_ns: int) -> list[tuple[int, float, int]]:
        b, cap, start, t0, out = self.base[i], self.cap[i], self.start[i], self.t0[i], []
        for k in range(self.n[i]):
            j = b + (start + k) % cap
            ts = (t0 + self.ts[j]) * MS
            if ts >= since_ns:
                out.append((ts, _float32(self.v[j]), self.q[j]))
        return out

    def last_ts(self, i: int) -> int:
        return (self.t0[i] + self.ts[self.last[i]]) * MS


def _float32(v: float) -> float:
    # a float32 shown to 7 significant digits (it holds 6-9): 20.9, not 20.899999618530273
    return float(f"{v:.7g}") if math.isfinite(v) else v


class History:
    """One ring per (device, quantity): the last `window_s`, at most `max_points` points (one per bucket).

    A crane polled 4 times a second makes 28 800 readings in 2 h; the ring keeps the newest reading of each
    window_s / points bucket instead. All rings together hold at most `budget_points` points (9 MB by default),
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
        if not 0 < window_s <= MAX_WINDOW_S or max_points < 2:
            raise ValueError("window_s must be positive and at most a week (604800 s), and max_points at least 2")
        self.window_ns = int(window_s * NS)
        self.window_ms = self.window_ns // MS
        self.max_points = max_points
        self.budget_points = budget_points
        self.expected_series = series
        # device -> quantity -> its ring (nested: 2 000 devices' 22 000 (device, quantity) keys took 1.4 MB)
        self._ids: dict[str, dict[str, int]] = {}
        self._rings = _Rings()
        # each ring's newest reading, while its bucket is open: a reading in that bucket (most of them) replaces the
        # reference here, and the point arrays take its time, value and quality when the bucket closes or the ring
        # is read (`_settle`). History.add was a tenth of the main thread at 4 000 msg/s; a reference stored instead
        # of three converted values takes it from 612 to 393 ns a reading (in process), and the reading referred to
        # is nearly always the one the pipeline's latest values hold anyway.
        self._head: list[Reading | None] = []
        self.hub = LiveHub(alarm_json=alarm_json)

    def _new_ring(self) -> int:
        # more series than expected (a depth family grew) only make the newer rings coarser: the budget holds
        cap = max(2, min(self.max_points, self.budget_points // max(self.expected_series, len(self._rings.base) + 1)))
        self._head.append(None)
        return self._rings.new(cap, max(1, self.window_ms // cap))

    def _settle(self, i: int) -> None:
        """Ring i's newest point takes its open bucket's newest reading (which stays held: later readings of the
        bucket are compared with it)."""
        r = self._head[i]
        if r is not None:
            rings = self._rings
            last = rings.last[i]
            rings.ts[last], rings.v[last], rings.q[last] = r.ts_ns // MS - rings.t0[i], r.value, r.quality

    def add(self, batch: list[Reading]) -> None:
        """Pipeline listener: store the batch in the rings, then hand it to the live subscribers as one event."""
        ids, rings, window_ms, head = self._ids, self._rings, self.window_ms, self._head
        end_ms = rings.end_ms  # (the arrays only grow in place: this stays the ring's)
        # a poll or a message is a run of one device's readings at one time: its rings and ms are found once per run
        dev: str | None = None
        mine: dict[str, int] = {}
        ts, ms = -1, 0
        for r in batch:
            if r.device is not dev:
                dev = r.device
                got = ids.get(dev)
                if got is None:
                    got = ids[dev] = {}
                mine = got
            i = mine.get(r.quantity)
            if i is None:
                i = mine[r.quantity] = self._new_ring()
            if r.ts_ns != ts:
                ts = r.ts_ns
                ms = ts // MS
            if ms < end_ms[i]:
                # a reading in its ring's newest bucket (most of them: a 5 s bucket holds fifty of a 10 Hz poll) is
                # the bucket's newest, unless it is older than the one held: a late or replayed reading (the ring is
                # for the live view, kept in time order; every bucket of a ring with points has a reading held)
                h = head[i]
                if h is None or h.ts_ns <= ts:
                    head[i] = r
                continue
            self._settle(i)
            rings.push(i, ms, r.value, r.quality, window_ms)
            head[i] = r
        if batch and self.hub.subscribers:
            rows = [[r.device, r.quantity, _finite(r.value), r.ts_ns, r.quality.name.lower()] for r in batch]
            self.hub.publish("reading", rows)

    def points(self) -> int:
        """Points held now, over all rings (for tests and the memory benchmark's report)."""
        return sum(self._rings.n)

    def quantities(self, device: str) -> list[str]:
        return sorted(self._ids.get(device, ()))

    def devices(self) -> set[str]:
        return set(self._ids)

    def series(self, device: str, quantity: str, minutes: float, now_ns: int | None = None) -> dict[str, Any]:
        """Points of the last `minutes` (before the newest point, or `now_ns`) and the slope over them per day."""
        i = self._ids.get(device, {}).get(quantity)
        if i is None or not self._rings.n[i]:
            return {"device": device, "quantity": quantity, "points": [], "rate_per_day": None}
        self._settle(i)
        end = now_ns if now_ns is not None else self._rings.last_ts(i)
        pts = self._rings.points(i, end - int(minutes * 60 * NS))
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
    owner: str = ""  # the user whose stream it is: streams are limited per user

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


class StreamsFull(Exception):
    """No more live streams: `limit` of them are open, of the whole gateway (owner None) or of one owner."""

    def __init__(self, limit: int, owner: str | None) -> None:
        super().__init__(limit, owner)
        self.limit, self.owner = limit, owner


class LiveHub:
    """Fan-out of live events to SSE subscribers; publishing never blocks and never waits on a client."""

    def __init__(self, queue_events: int = 256, alarm_json: Callable[[Any], dict[str, Any]] | None = None) -> None:
        self.queue_events = queue_events
        self.subscribers: set[Subscriber] = set()
        # the alarm as the API shows it (the gateway passes gateway.api.deps.alarm_json with the rules' units)
        self.alarm_json = alarm_json or (lambda a: {"id": getattr(a, "id", None)})

    def subscribe(self, owner: str = "", max_total: int | None = None, max_per_owner: int | None = None) -> Subscriber:
        """A new subscriber, unless `max_total` streams are open or `max_per_owner` of `owner`'s: StreamsFull."""
        if max_total is not None and len(self.subscribers) >= max_total:
            raise StreamsFull(max_total, None)
        if max_per_owner is not None and sum(s.owner == owner for s in self.subscribers) >= max_per_owner:
            raise StreamsFull(max_per_owner, owner)
        sub = Subscriber(self.queue_events, asyncio.get_running_loop(), owner=owner)
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
