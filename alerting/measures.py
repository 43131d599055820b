"""What a rule compares, from a reading: the value, % of design, change from baseline, a rate, a mean, a run."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, NamedTuple

from alerting.baselines import Baselines
from alerting.binding import Bound
from alerting.derived import DeviceContext
from alerting.rules import Threshold
from telemetry import quantities
from telemetry.reading import Reading

log = logging.getLogger("sitegw.alarms")

EDGE_S = 3600  # a survey this near its survey day's start is said (`_near_day_start`)

if TYPE_CHECKING:  # numpy (11 MB) is imported with the first windowed rule: crane and formwork packs have none
    import numpy as np
    import numpy.typing as npt

    from alerting.windows import DailySeries, SeriesWindow

NS = 1_000_000_000
# device, quantity, span, samples taken so far (SeriesWindow.added), the oldest live sample's time, and the times
# and values of the live samples not saved yet (all of them, loaded)
Samples = tuple[str, str, float, int, int, "npt.NDArray[np.int64]", "npt.NDArray[np.float64]"]


class Saved(NamedTuple):
    """The measures' memory: windows' samples, daily series' days, survey rates' previous readings, frozen runs."""

    windows: list[Samples]
    daily: list[tuple[str, str, list[tuple[int, float]]]]
    prev: dict[tuple[str, str], tuple[int, float, int]]
    frozen: dict[tuple[str, str], tuple[float, int]]


WINDOWED = frozenset({"rate_per_day", "window_mean", "rate_percent_of_warning"})  # the measures kept in a window
SURVEYED_S = 12 * 3600  # a point reporting this seldom or less often is surveyed: its day is whole with its survey


def _decimal(x: float) -> float:
    """A measure computed from decimal readings, to 9 places: one at a threshold is at it (a survey's 7.3 - 4.3 mm is
    2.9999999999999996 in binary, under a rate 预警值 of 3 mm/d); no gauge resolves a billionth of its unit."""
    return round(x, 9) if math.isfinite(x) else x


class Measures:
    """The evaluator's measures, with the state they need: the windows of rates and means (on the readings' own
    timestamps), each point's daily series, the runs of frozen values and the reading before the latest."""

    def __init__(
        self,
        devices: Mapping[str, DeviceContext],
        baselines: Baselines | None,
        tz: str,
        latest: dict[str, dict[str, float]],  # the evaluator's current valid values: a down device freezes no run
    ) -> None:
        self.devices = devices
        self.baselines = baselines
        self.tz = tz
        self._latest = latest
        self._measured: dict[str, bool] = {}  # quantity -> a measurement (not an on/off state)
        self._windows: dict[tuple[str, str, float], SeriesWindow] = {}
        self._daily: dict[tuple[str, str], DailySeries] = {}
        self._edge_said: set[str] = set()  # points whose survey near their day's start was said (`_near_day_start`)
        self._runs: dict[tuple[str, str], tuple[float, int]] = {}  # frozen: (device, quantity) -> (value, run)
        # rates: (device, quantity) -> (ts, value) of the reading before the latest, and the latest's ts
        self._prev: dict[tuple[str, str], tuple[int, float, int]] = {}

    @staticmethod
    def load_windows() -> None:
        """Import the windows (and numpy) ahead of the first windowed rule's first reading."""
        import alerting.windows  # noqa: F401

    def is_measured(self, quantity: str) -> bool:
        m = self._measured.get(quantity)
        if m is None:
            try:
                m = quantities.lookup(quantity).unit != "state"
            except KeyError:
                m = False
            self._measured[quantity] = m
        return m

    def measure(self, b: Bound, r: Reading, fed: set[int]) -> float | None:
        rule = b.rule
        m = rule.measure
        v = r.value
        if m == "value":
            pass
        elif m == "percent_of_design":
            assert b.design is not None
            v = v / b.design * 100.0
        elif m == "change_from_baseline":
            assert self.baselines is not None
            base = self.baselines.get(r.device, r.quantity)
            if base is None:
                return None  # inactive until someone sets the point's baseline
            v = v - base.value
        elif m == "percent_of_warning":
            assert self.baselines is not None and b.design is not None
            base = self.baselines.get(r.device, r.quantity)
            if base is None:
                return None  # inactive until someone sets the point's baseline (初始值)
            v = (v - base.value) / b.design * 100.0
        elif m in WINDOWED:
            w = self._window(b, r)
            if id(w) not in fed:
                self._previous(r, w)
                w.add(r.ts_ns, r.value)
                fed.add(id(w))
            if m != "window_mean":
                slope = w.slope_per_day(r.ts_ns)
                if slope is None:
                    slope = self._survey_rate(r)
                if rule.consecutive_days is not None:
                    days = self.daily_series(r)
                    days.add(r.ts_ns, r.value)
                    if r.device not in self._edge_said:
                        self._near_day_start(r, days)
                if m == "rate_percent_of_warning" and slope is not None:
                    assert b.design is not None
                    slope = slope / b.design * 100.0
                return None if slope is None else _decimal(slope)
            # GBZ 2.1 defines PC-TWA and PC-STEL over a fixed reference time (8 h, 15 min) with time not exposed
            # counting as zero; that is the figure the limits are written for. The early warning of an exposure
            # that has only begun is the instantaneous set point's job (gas.co alarms at the TWA value at once).
            return w.time_weighted_mean(r.ts_ns, unmeasured_as_zero=True)
        elif m == "frozen":
            key = (r.device, r.quantity)
            if self._latest.get(r.device, {}).get("up", 1.0) == 0:
                self._runs.pop(key, None)  # while the device is down, its values say nothing about the sensor
                return None
            last = self._runs.get(key)
            run = last[1] + 1 if last is not None and last[0] == r.value else 1
            self._runs[key] = (r.value, run)
            return float(run)
        if not math.isfinite(v):
            return None
        return v if m == "value" else _decimal(v)

    def _previous(self, r: Reading, w: SeriesWindow) -> None:
        """Remember the last valid reading before this one: the survey rate needs it after the window lost it."""
        last = w.last()
        if last is not None and last[0] < r.ts_ns:
            self._prev[(r.device, r.quantity)] = (last[0], last[1], r.ts_ns)

    def _survey_rate(self, r: Reading) -> float | None:
        """Change since the previous valid reading / days between them: the rate of surveys too sparse for the
        window's least-squares slope (a daily survey has two points in 24 h). Under 1 h apart says nothing."""
        prev = self._prev.get((r.device, r.quantity))
        if prev is None or prev[2] != r.ts_ns:
            return None
        dt_ns = r.ts_ns - prev[0]
        if dt_ns < 3600 * NS:
            return None
        return (r.value - prev[1]) / (dt_ns / (86400 * NS))

    def _window(self, b: Bound, r: Reading) -> SeriesWindow:
        return self._window_for(r.device, r.quantity, b.rule.window)

    def _window_for(self, device: str, quantity: str, span: float) -> SeriesWindow:
        key = (device, quantity, span)
        w = self._windows.get(key)
        if w is None:
            interval = self.devices[device].expected_interval_s
            # room for one window of samples up front; the window grows itself if the device reports faster
            cap = 256 if not interval else min(max(math.ceil(span / interval) + 8, 16), 65536)
            from alerting.windows import SeriesWindow

            w = self._windows[key] = SeriesWindow(span, capacity=cap)
        return w

    def _near_day_start(self, r: Reading, days: DailySeries) -> None:
        """A surveyed point's survey within an hour of its survey day's start: nightly surveys either side of it put
        two nights on one day and none on the next, and break a run of days. Said once per point, with the fix."""
        ctx = self.devices[r.device]
        if (ctx.expected_interval_s or 0) < SURVEYED_S:
            return  # an automated gauge: its days are judged once over, whenever its readings come
        into = days.from_day_start(r.ts_ns)
        if EDGE_S <= into <= 86400 - EDGE_S or days.local_date(r.ts_ns) != days.local_date(r.ts_ns - 1):
            return  # (the second: a survey imported with its date only, at 00:00:00: it counts for its date)
        self._edge_said.add(r.device)
        start = ctx.survey_day_starts.strftime("%H:%M")
        away = (int(into // 3600) + ctx.survey_day_starts.hour + 12) % 24  # an hour 12 h from the survey's
        log.warning(
            "%s: a survey of %s within an hour of its survey day's start (%s): surveys either side of it count two "
            'days or none in a run of days (consecutive_days); set devices[].survey_day_starts to an hour away from '
            'its surveys (e.g. "%02d:00")',
            r.device, r.quantity, start, away,
        )  # fmt: skip

    def daily_series(self, r: Reading) -> DailySeries:
        return self._daily_for(r.device, r.quantity)

    def _daily_for(self, device: str, quantity: str) -> DailySeries:
        key = (device, quantity)
        d = self._daily.get(key)
        if d is None:
            from alerting.windows import DailySeries

            d = self._daily[key] = DailySeries(self.tz, day_start=self.devices[device].survey_day_starts)
        return d

    def saved(self, since: Mapping[tuple[str, str, float], int]) -> Saved:
        """What the measures remember, copied (alerting/memory.py keeps it across a restart): of each window, only
        the samples taken after its `since` count (SeriesWindow.added when last saved)."""
        return Saved(
            [
                (d, q, span, w.added, w.oldest_ns(), *w.samples(w.added - since.get((d, q, span), 0)))
                for (d, q, span), w in self._windows.items()
                if len(w) and w.added > since.get((d, q, span), 0)
            ],
            [(d, q, series.samples()) for (d, q), series in self._daily.items() if len(series)],
            dict(self._prev),
            dict(self._runs),
        )

    def load(self, saved: Saved) -> None:
        """Start from what a run before this one remembered; what belongs to a device no longer configured is left
        out, and a window whose span no rule asks for any more is never read."""
        for d, q, span, _, _, ts, v in saved.windows:
            if d in self.devices:
                self._window_for(d, q, span).load(ts, v)
        for d, q, days in saved.daily:
            if d in self.devices:
                series = self._daily_for(d, q)
                for ts_ns, value in days:
                    series.add(ts_ns, value)
        self._prev.update((k, x) for k, x in saved.prev.items() if k[0] in self.devices)
        self._runs.update((k, x) for k, x in saved.frozen.items() if k[0] in self.devices)

    def days_run(self, b: Bound, device: str, quantity: str, ts_ns: int, v: float) -> tuple[Threshold | None, float]:
        """The rule's run of days (`consecutive_days`, Bound.days) at a reading's `ts_ns`, measured as `v` (the
        newest judged one's, when an older reading changed the days: alerting/evaluator.py). While each of n site
        days in a row had a rate beyond the limit (in the rule's unit: % of the rate 预警值, or per day): the
        threshold it cites, and `v`, or the weakest day's rate when `v` is under the limit (a gauge's slope dips
        with its daily swing). Else (None, v).

        A surveyed point's day (one reported every 12 h or less often: `expected_interval_s`; it starts at the
        point's `survey_day_starts`, DailySeries) is whole with its survey, so its n days end today; an automated
        gauge's is judged once it is over (its change so far is noise early in a day and wavers at the limit late in
        it), so they end yesterday and the run holds all of today. Decided by the point's configuration, not by how
        full its window is: a survey heard twice, or surveys twice a day, switched it between the two and dropped 报警
        while every day was above (a review)."""
        cd, days = b.rule.consecutive_days, b.days
        assert cd is not None and days is not None
        limit, inclusive = days[0], cd.inclusive
        scale = 1.0  # the daily series' rates are in the quantity's unit per day
        if b.rule.measure == "rate_percent_of_warning":
            assert b.design is not None
            scale = 100.0 / b.design
        ctx = self.devices.get(device)
        every = ctx.expected_interval_s if ctx is not None else None
        weakest: float | None = None
        series = self._daily_for(device, quantity)
        for rate in series.days_ending(cd.days, ts_ns, every is not None and every >= SURVEYED_S):
            if rate is None:
                return None, v  # a day without data (or without an earlier one) breaks the run
            x = _decimal(rate * scale)
            if not (abs(x) >= limit if inclusive else abs(x) > limit):
                return None, v
            if weakest is None or abs(x) < abs(weakest):
                weakest = x
        return days[1], v if abs(v) >= limit or weakest is None else weakest
