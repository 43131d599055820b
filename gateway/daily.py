"""Each excavation point's last value per site day, kept for months in the state database: trends over days."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Iterable
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from alerting.db import tx
from telemetry.reading import Quality, Reading

log = logging.getLogger("sitegw.daily")

NS = 1_000_000_000


class DailyValues:
    """The last valid reading of each (device, quantity) per local day, for the devices given (excavation points:
    surveyed daily or gauged every few seconds, judged by their change over days, GB 50497-2019 §8). Readings are
    taken in memory as they pass; a supervised task writes the changed days once a minute (never one write per
    reading) and drops days older than `keep_days`."""

    def __init__(self, conn: sqlite3.Connection, tz: str, devices: Iterable[str], keep_days: int = 180) -> None:
        self.conn = conn
        self.zone = ZoneInfo(tz)
        self.devices = frozenset(devices)
        self.keep_days = keep_days
        self._days: dict[tuple[str, str], dict[str, tuple[int, float]]] = {}
        for r in conn.execute("SELECT device, quantity, day, ts_ns, value FROM daily_values ORDER BY day"):
            self._days.setdefault((r[0], r[1]), {})[r[2]] = (int(r[3]), float(r[4]))
        self._dirty: dict[str, set[tuple[str, str]]] = {}  # day -> (device, quantity) changed since the last flush
        self._span = (0, 0, "")  # [start_ns, end_ns) of the last local day seen, and its ISO date
        # the newest valid reading of each point in the span's day, by device and quantity, held by reference and
        # taken into `_days` when the span moves to another day or the days are read or flushed (`_fold`): a
        # reference per reading instead of a tuple, a nested lookup and a set entry. Keyed by device, then quantity
        # (strings, whose hashes are kept), not by a (device, quantity) tuple made and hashed twice per reading
        self._open: dict[str, dict[str, Reading]] = {}

    def _day(self, ts_ns: int) -> str:
        """The site-local date of `ts_ns`. A zone lookup per reading was the biggest cost of a polled excavation
        site's pipeline; nearly every reading falls in the day of the one before it, so that day's bounds are kept."""
        lo, hi, day = self._span
        if lo <= ts_ns < hi:
            return day
        local = datetime.fromtimestamp(ts_ns / NS, self.zone)
        d = local.date()
        start = datetime(d.year, d.month, d.day, tzinfo=self.zone)
        end = start + timedelta(days=1)  # wall-clock arithmetic: the next local midnight, DST or not
        lo_s, hi_s = int(start.timestamp()), int(end.timestamp())
        # where a DST change skips midnight itself the bounds are off by the shift: such a day is not kept
        if datetime.fromtimestamp(lo_s, self.zone).date() == d == datetime.fromtimestamp(hi_s - 1, self.zone).date():
            self._span = (lo_s * NS, hi_s * NS, d.isoformat())
        return d.isoformat()

    def add(self, batch: list[Reading]) -> None:
        """Pipeline listener: O(1) per reading of a watched device, nothing else. A poll or a message is a run of one
        device's readings at one time: whether the device is watched, and the day, are looked up once per run."""
        if not self.devices:
            return
        devices, opened = self.devices, self._open
        bad, not_ready = Quality.BAD, Quality.NOT_READY
        lo, hi, _ = self._span
        dev: str | None = None
        watched = False
        mine: dict[str, Reading] | None = None  # the run's device's open day, found at its first valid reading
        for r in batch:
            if r.device is not dev:
                dev = r.device
                watched = dev in devices
                mine = None
            if not watched:
                continue
            q, v, ts = r.quality, r.value, r.ts_ns
            if q is bad or q is not_ready or v != v:
                continue
            if not lo <= ts < hi:  # another day than the span's (or the first reading): the open day is closed
                self._fold()
                mine = None  # (folded: the device's open day is gone)
                day = self._day(ts)
                lo, hi, spanned = self._span
                if spanned != day:  # a day whose bounds are not kept (see _day): looked up for every reading
                    lo = hi = 0
                    self._keep((r.device, r.quantity), day, ts, v)
                    continue
            if mine is None:
                mine = opened.get(r.device)
                if mine is None:
                    mine = opened[r.device] = {}
            prev = mine.get(r.quantity)
            if prev is None or prev.ts_ns <= ts:
                mine[r.quantity] = r

    def _keep(self, key: tuple[str, str], day: str, ts: int, v: float) -> None:
        kept = self._days.get(key)
        if kept is None:
            kept = self._days[key] = {}
        prev = kept.get(day)
        if prev is None or prev[0] <= ts:
            kept[day] = (ts, v)
            self._dirty.setdefault(day, set()).add(key)

    def _fold(self) -> None:
        """The open day's readings into `_days` (and the changed keys to write)."""
        if self._open:
            day = self._span[2]
            for dev, mine in self._open.items():
                for quantity, r in mine.items():
                    self._keep((dev, quantity), day, r.ts_ns, r.value)
            self._open.clear()  # (the same dict: add holds it)

    def series(self, device: str, quantity: str, days: int, today: date | None = None) -> list[tuple[int, float]]:
        """(ts_ns, value) of the last reading of each of the last `days` site days, oldest first."""
        self._fold()
        today = today or datetime.now(self.zone).date()
        first = (today - timedelta(days=days - 1)).isoformat()
        got = self._days.get((device, quantity), {})
        return [got[d] for d in sorted(got) if d >= first]

    def quantities(self, device: str) -> list[str]:
        self._fold()
        return sorted(q for d, q in self._days if d == device)

    def flush(self) -> int:
        """Write the days that changed; drop those past `keep_days`. The number of rows written."""
        self._fold()
        dirty, self._dirty = self._dirty, {}
        rows = []
        for day, keys in dirty.items():
            for dev, q in keys:
                v = self._days.get((dev, q), {}).get(day)
                if v is not None:
                    rows.append((dev, q, day, v[0], v[1]))
        cutoff = (datetime.now(self.zone).date() - timedelta(days=self.keep_days)).isoformat()
        try:
            with tx(self.conn):
                self.conn.executemany("INSERT OR REPLACE INTO daily_values VALUES (?, ?, ?, ?, ?)", rows)
                self.conn.execute("DELETE FROM daily_values WHERE day < ?", (cutoff,))
        except sqlite3.OperationalError:
            # kept in memory; written with the next flush once the database takes writes
            for day, keys in dirty.items():
                self._dirty.setdefault(day, set()).update(keys)
            raise
        for days in self._days.values():
            for d in [d for d in days if d < cutoff]:
                del days[d]
        return len(rows)

    async def run(self, period_s: float = 60.0) -> None:
        while True:
            await asyncio.sleep(period_s)
            self.flush()
