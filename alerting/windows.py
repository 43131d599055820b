"""Rolling windows over live readings: time-weighted means (TWA/STEL), drift slopes, frozen values, daily rates."""

from __future__ import annotations

import datetime
import itertools
import math
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

NS = 1_000_000_000  # ns per second
DAY_NS = 86_400 * NS
# a per-day slope needs half its span of data, an hour at least: over an hour of 10-minute readings with 0.2 mm of
# noise it was ±5 mm/d, and a still excavation point alarmed against a 3 mm/d rate after most restarts (a review)
_MIN_SLOPE_COVER_NS = 3_600 * NS


class SeriesWindow:
    """The samples of one series kept for the last `span_s` seconds, in numpy arrays.

    The arrays are used as a ring buffer in its contiguous form: samples are appended at the end and evicted from
    the front by moving a head index; when the end is reached the live part is moved back to the start, or the
    arrays double if more than half full. Queries therefore work on slices (views, no copies, no wrap-around)
    and `add` stays amortised O(1).

    Eviction keeps the newest sample at or before `newest - span_s` as well: under step-hold that sample is the
    value in force when the span starts, and a TWA without it would miss the first part of the span.

    Step-hold semantics everywhere: a sample's value holds until the next sample, the last one until `now_ns`.
    Queries are meant for `now_ns` at or after the newest sample (eviction follows the newest sample's time).
    """

    def __init__(self, span_s: float, capacity: int = 256) -> None:
        if not span_s > 0:
            raise ValueError(f"span_s must be positive, got {span_s}")
        if capacity < 2:
            raise ValueError(f"capacity must be at least 2, got {capacity}")
        self.span_s = span_s
        self._span_ns = round(span_s * NS)
        self._ts: npt.NDArray[np.int64] = np.empty(capacity, dtype=np.int64)
        self._v: npt.NDArray[np.float64] = np.empty(capacity, dtype=np.float64)
        self._head = 0  # index of the oldest live sample
        self._end = 0  # one past the newest live sample
        self.out_of_order = 0  # samples older than the newest one, ignored
        self.added = 0  # samples taken so far, loaded ones included (what alerting/memory.py has not saved yet)
        self.non_finite = 0  # NaN/inf values, ignored: one would poison every mean and slope of the span

    @property
    def capacity(self) -> int:
        return len(self._ts)

    def __len__(self) -> int:
        return self._end - self._head

    def add(self, ts_ns: int, value: float) -> None:
        """Append a sample. Samples must arrive in time order per series: one older than the newest is ignored
        and counted in `out_of_order` (back-filled data goes to InfluxDB but does not rewrite live windows).
        Equal timestamps are kept; the earlier of the two then holds for zero time."""
        if not math.isfinite(value):
            self.non_finite += 1
            return
        if self._end > self._head and ts_ns < int(self._ts[self._end - 1]):
            self.out_of_order += 1
            return
        if self._end == len(self._ts):
            self._make_room()
        self._ts[self._end] = ts_ns
        self._v[self._end] = value
        self._end += 1
        self.added += 1
        self._evict(ts_ns - self._span_ns)

    def _make_room(self) -> None:
        n = len(self)
        cap = len(self._ts)
        # Compacting a buffer more than half full would free too little room and repeat soon: grow instead.
        new_cap = cap if 2 * n <= cap else 2 * cap
        ts = np.empty(new_cap, dtype=np.int64) if new_cap != cap else self._ts
        v = np.empty(new_cap, dtype=np.float64) if new_cap != cap else self._v
        ts[:n] = self._ts[self._head : self._end]  # numpy copies overlapping slices correctly
        v[:n] = self._v[self._head : self._end]
        self._ts, self._v = ts, v
        self._head, self._end = 0, n

    def _evict(self, cutoff_ns: int) -> None:
        live = self._ts[self._head : self._end]
        # index of the newest sample at or before the cutoff: it stays as the value in force at the span start
        keep_from = int(live.searchsorted(cutoff_ns, side="right")) - 1
        if keep_from > 0:
            self._head += keep_from

    def _live(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
        return self._ts[self._head : self._end], self._v[self._head : self._end]

    def _span_ns_of(self, span_s: float | None) -> int:
        if span_s is None:
            return self._span_ns
        span_ns = round(span_s * NS)
        if span_ns <= 0 or span_ns > self._span_ns:
            # a longer span than the window keeps would silently average over evicted time
            raise ValueError(f"span_s must be in (0, {self.span_s}], got {span_s}")
        return span_ns

    def _segments(self, now_ns: int, span_ns: int) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]] | None:
        """Values and their step-hold durations clipped to [now - span, now]; None if no sample lies in it."""
        ts, v = self._live()
        start = now_ns - span_ns
        # (the arrays' own methods and operators: numpy's module-level wrappers cost more than the work on the short
        # arrays a live window holds, and every gas reading with a TWA or STEL rule pays this twice)
        lo = int(ts.searchsorted(start, side="left"))  # first sample at or after the span start
        hi = int(ts.searchsorted(now_ns, side="right"))  # one past the last sample at or before now
        if lo >= hi:
            return None
        first = max(lo - 1, 0)  # the sample in force at the span start, if kept
        edges = np.empty(hi - first + 1, dtype=np.int64)
        np.maximum(ts[first:hi], start, out=edges[:-1])
        edges[-1] = now_ns
        return v[first:hi], edges[1:] - edges[:-1]

    def time_weighted_mean(
        self, now_ns: int, span_s: float | None = None, *, unmeasured_as_zero: bool = False
    ) -> float | None:
        """Step-hold time-weighted mean over [now - span, now]; None if no sample lies in that interval.

        unmeasured_as_zero=False divides by the time covered by samples (from the first value in force in the
        span to now); True divides by the full span, so time before the first sample counts as zero exposure.

        For the PC-TWA rule (GBZ 2.1, 8 h) use the False form. GBZ 2.1's formula divides by 8 h because it
        assumes the worker was unexposed when not measured; a live alarm does not know that the shift is over,
        and the True form early in a shift (CO at 60 ppm for 1 h reads 7.5 ppm) hides an exposure that exceeds
        the limit if it goes on. The False form is the "shift so far" mean: what the 8 h TWA becomes if the
        exposure continues, so it alarms early and (concentrations being non-negative) never later than the
        True form. Over a short covered time it approaches the instantaneous value, which is the STEL/MAC
        rules' job, so the TWA rule should also require a minimum `covered_s`. The True form is the figure
        for the end-of-shift record compared with PC-TWA.
        """
        span_ns = self._span_ns_of(span_s)
        seg = self._segments(now_ns, span_ns)
        if seg is None:
            return None
        v, dur = seg
        covered = int(dur.sum())
        weighted = float(np.dot(v, dur.astype(np.float64)))
        if unmeasured_as_zero:
            return weighted / span_ns
        if covered == 0:
            return float(v[-1])  # only samples exactly at now: the mean over zero time is the value in force
        return weighted / covered

    def covered_s(self, now_ns: int, span_s: float | None = None) -> float:
        """Seconds of [now - span, now] covered by step-held samples (0 if no sample lies in it)."""
        seg = self._segments(now_ns, self._span_ns_of(span_s))
        return 0.0 if seg is None else int(seg[1].sum()) / NS

    def slope_per_day(self, now_ns: int, span_s: float | None = None, min_points: int = 3) -> float | None:
        """Least-squares slope of value against time over [now - span, now], in units per day (mm/d for
        displacements). None with fewer than `min_points` samples, or less than half the span (an hour at least)
        between the first and last: the first 12 h after a start for a 24 h rate window, which the windows do not
        outlive."""
        span_ns = self._span_ns_of(span_s)
        ts, v = self._live()
        lo = int(ts.searchsorted(now_ns - span_ns, side="left"))
        hi = int(ts.searchsorted(now_ns, side="right"))
        n = hi - lo
        if n < max(min_points, 2) or int(ts[hi - 1]) - int(ts[lo]) < max(_MIN_SLOPE_COVER_NS, span_ns // 2):
            return None
        # relative to the first sample: ns since the epoch squared would lose the float64 mantissa
        x = (ts[lo:hi] - ts[lo]).astype(np.float64) / DAY_NS
        y = v[lo:hi]
        xc = x - x.mean()
        return float(np.dot(xc, y - y.mean()) / np.dot(xc, xc))

    def unchanged_for(self, n: int) -> bool:
        """The last n values are exactly identical (a frozen sensor); False with fewer than n samples."""
        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}")
        if len(self) < n:
            return False
        tail = self._v[self._end - n : self._end]
        return bool(np.all(tail == tail[-1]))

    def samples(self, last: int | None = None) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
        """Copies of the live samples, or of the `last` of them, oldest first (alerting/memory.py saves them)."""
        ts, v = self._live()
        if last is not None:
            ts, v = ts[max(0, len(ts) - last) :], v[max(0, len(v) - last) :]
        return ts.copy(), v.copy()

    def oldest_ns(self) -> int:
        """The oldest live sample's time (a window with samples)."""
        return int(self._ts[self._head])

    def load(self, ts: npt.NDArray[np.int64], v: npt.NDArray[np.float64]) -> None:
        """Start an empty window from saved samples: time-ordered and finite, as `add` keeps them (checked)."""
        if len(self) or len(ts) != len(v):
            raise ValueError("load needs an empty window and as many values as times")
        if len(ts) and (bool(np.any(np.diff(ts) < 0)) or not bool(np.all(np.isfinite(v)))):
            raise ValueError("saved samples out of time order or not finite")
        n = len(ts)
        cap = max(len(self._ts), 2 * n)
        self._ts, self._v = np.empty(cap, dtype=np.int64), np.empty(cap, dtype=np.float64)
        self._ts[:n], self._v[:n] = ts, v
        self._head, self._end = 0, n
        self.added = n
        if n:
            self._evict(int(ts[-1]) - self._span_ns)

    def last(self) -> tuple[int, float] | None:
        if self._end == self._head:
            return None
        return int(self._ts[self._end - 1]), float(self._v[self._end - 1])


class DailySeries:
    """Per site day: the last value of the day; each day's rate against the day before it with data, per day of the
    time between their last values (`days_ending`). A site day is a calendar day in the site time zone, or for a
    point surveyed at night a survey day from `day_start` (12:00: the night from the 3rd to the 4th is the 3rd's).

    Why an hour, not "surveys about a day apart are days in a row": nightly surveys either side of midnight put two
    nights on one date (00:20, then 23:40) and none on the next. Counting intervals tells those two nights from one
    night surveyed twice (20:00, 08:00) only by a least gap, a number no source gives and one that miscounts a
    schedule near it (surveys every 12 h); bridging a date without data when the surveys either side are close
    enough forgives a night really missed (22:00, then 07:00 the day after next: 33 h). A day that starts at an
    hour away from the surveys (the project's, from its schedule) counts each night once whatever the times, and a
    night missed still leaves a day without data.

    Unlike `SeriesWindow`, samples may arrive in any order: a late manual survey or back-filled reading
    replaces a day's value if it is later in that day, so the rates stay those of the data as measured.
    """

    def __init__(
        self, tz: str = "Asia/Shanghai", keep_days: int = 62, day_start: datetime.time = datetime.time(0)
    ) -> None:
        if keep_days < 2:
            raise ValueError(f"keep_days must be at least 2, got {keep_days}")
        self.tz = ZoneInfo(tz)
        self.keep_days = keep_days
        # how far a day's start is past midnight, on the wall clock (a survey at 00:20 minus 12 h is the day before's)
        self._start = datetime.timedelta(hours=day_start.hour, minutes=day_start.minute, seconds=day_start.second)
        self._days: dict[datetime.date, tuple[int, float]] = {}  # site day -> (ts_ns, value) of its last sample
        # and of its first: saved with the last (`samples`), so that days counted from another hour after a restart
        # (survey_day_starts set) find both nights of a date that held two (00:20, then 23:40)
        self._first: dict[datetime.date, tuple[int, float]] = {}
        self.non_finite = 0

    def local_date(self, ts_ns: int) -> datetime.date:
        """The site day of `ts_ns`, named by the date it starts on. A survey at 00:00:00 exactly is one imported with
        its date only (drivers/survey.py): it counts for the date written, whatever hour the days start at (at 12:00
        it fell on the day before, onto the evening's survey of the day before, and its own night had none)."""
        # whole seconds: a day boundary is a whole second, and floor division keeps pre-boundary ns on their day;
        # an aware datetime minus a timedelta is wall-clock arithmetic, so the day starts at its hour across DST
        # (a day may then start an hour early or late once a year: choose an hour no clock change falls in)
        local = datetime.datetime.fromtimestamp(ts_ns // NS, self.tz)
        if not self._start or (ts_ns % NS == 0 and not (local.hour or local.minute or local.second)):
            return local.date()
        return (local - self._start).date()

    def from_day_start(self, ts_ns: int) -> float:
        """Seconds on the wall clock from the start of `ts_ns`'s site day (0 up to a day)."""
        local = datetime.datetime.fromtimestamp(ts_ns // NS, self.tz)
        wall = datetime.timedelta(hours=local.hour, minutes=local.minute, seconds=local.second)
        return (wall - self._start).total_seconds() % 86400

    def __len__(self) -> int:
        return len(self._days)

    def add(self, ts_ns: int, value: float) -> None:
        if not math.isfinite(value):
            self.non_finite += 1
            return
        day = self.local_date(ts_ns)
        old = self._days.get(day)
        if old is None or ts_ns >= old[0]:
            self._days[day] = (ts_ns, value)
        first = self._first.get(day)
        if first is None or ts_ns < first[0]:
            self._first[day] = (ts_ns, value)
        if old is None and len(self._days) > self.keep_days:
            newest = max(self._days)
            for d in [d for d in self._days if (newest - d).days >= self.keep_days]:
                del self._days[d], self._first[d]

    def samples(self) -> list[tuple[int, float]]:
        """(ts_ns, value) of every kept day's first and last samples (one when they are one), oldest first
        (alerting/memory.py)."""
        out: list[tuple[int, float]] = []
        for d in sorted(self._days):
            first, last = self._first[d], self._days[d]
            out.extend((first, last) if first[0] != last[0] else (last,))
        return out

    def last_values(self) -> list[tuple[datetime.date, float]]:
        """The last value of every kept day, oldest first."""
        return [(d, self._days[d][1]) for d in sorted(self._days)]

    def days_ending(self, n: int, now_ns: int, today: bool) -> list[float | None]:
        """The rates of n site days in a row, newest first, the newest today or yesterday: each day's last value
        against the last of the day before it with data, per day of the time between them (a survey at 08:00 after
        one at 17:00 the day before is 15 h of change, not a day's). None for a day without data, or without an
        earlier day with data, or less than an hour after it (which says nothing)."""
        end = self.local_date(now_ns) - datetime.timedelta(days=0 if today else 1)
        days = sorted(d for d in self._days if d <= end)
        rates: dict[datetime.date, float] = {}
        for p, d in itertools.pairwise(days):
            (t0, v0), (t1, v1) = self._days[p], self._days[d]
            if t1 - t0 >= 3600 * NS:
                rates[d] = (v1 - v0) / ((t1 - t0) / (86400 * NS))
        return [rates.get(end - datetime.timedelta(days=k)) for k in range(n)]
