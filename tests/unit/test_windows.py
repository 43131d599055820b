"""Rolling windows against hand-computed TWA/STEL values, a slow reference, synthetic drift and Shanghai days."""

from __future__ import annotations

import datetime
import math
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alerting.windows import DailySeries, SeriesWindow

S = 1_000_000_000  # ns per second
MIN = 60 * S
H = 3_600 * S
DAY = 86_400 * S
SHANGHAI = ZoneInfo("Asia/Shanghai")


def _window(samples: list[tuple[int, float]], span_s: float, capacity: int = 256) -> SeriesWindow:
    w = SeriesWindow(span_s, capacity)
    for ts, v in samples:
        w.add(ts, v)
    return w


def reference_twa(samples: list[tuple[int, float]], now: int, span_ns: int, zero: bool) -> float | None:
    """Slow, obvious step-hold TWA: every sample holds until the next, the last until now."""
    start = now - span_ns
    pts = [(t, v) for t, v in samples if t <= now]
    if not any(t >= start for t, _ in pts):
        return None
    covered = 0
    weighted = 0.0
    for i, (t, v) in enumerate(pts):
        end = pts[i + 1][0] if i + 1 < len(pts) else now
        a, b = max(t, start), min(end, now)
        if b > a:
            covered += b - a
            weighted += v * (b - a)
    if zero:
        return weighted / span_ns
    if covered == 0:
        return pts[-1][1]
    return weighted / covered


# --- time-weighted means ---------------------------------------------------------------------------------------


def test_co_twa_seven_hours_clean_then_one_hour_at_60_ppm_is_7_5_ppm() -> None:
    # one sample a minute: 0 ppm for minutes 0..419 (held to 7 h), 60 ppm for 420..479 (held to 8 h)
    samples = [(m * MIN, 0.0 if m < 420 else 60.0) for m in range(480)]
    w = _window(samples, span_s=8 * 3600)
    assert w.time_weighted_mean(8 * H) == pytest.approx(7.5)
    assert w.time_weighted_mean(8 * H, unmeasured_as_zero=True) == pytest.approx(7.5)


def test_twa_forms_differ_when_the_shift_started_late() -> None:
    # the detector came on 1 h into the window: 0 ppm for 6 h, then 60 ppm for 1 h
    w = _window([(1 * H, 0.0), (7 * H, 60.0)], span_s=8 * 3600)
    assert w.time_weighted_mean(8 * H, unmeasured_as_zero=True) == pytest.approx(60 / 8)  # GBZ 2.1: 7.5 ppm
    assert w.time_weighted_mean(8 * H) == pytest.approx(60 / 7)  # shift so far: 8.57 ppm, the conservative one
    assert w.covered_s(8 * H) == pytest.approx(7 * 3600)


def test_stel_of_a_square_pulse() -> None:
    # 50 ppm from minute 100 to 105, 0 before and after; only the changes are reported
    w = _window([(0, 0.0), (100 * MIN, 50.0), (105 * MIN, 0.0)], span_s=8 * 3600)
    stel = 15 * 60
    assert w.time_weighted_mean(105 * MIN, stel) == pytest.approx(50 * 5 / 15)
    assert w.time_weighted_mean(110 * MIN, stel) == pytest.approx(50 * 5 / 15)
    assert w.time_weighted_mean(103 * MIN, stel) == pytest.approx(50 * 3 / 15)
    assert w.time_weighted_mean(119 * MIN, stel) == pytest.approx(50 * 1 / 15)
    assert w.time_weighted_mean(125 * MIN, stel) is None  # no sample inside [110, 125] min
    # the 8 h TWA of the same pulse, with the detector on since minute 0: 250 ppm·min over 125 min
    assert w.time_weighted_mean(125 * MIN) == pytest.approx(250 / 125)


def test_irregular_sampling_by_hand() -> None:
    w = _window([(0, 10.0), (10 * S, 20.0), (40 * S, 0.0), (45 * S, 100.0)], span_s=60)
    assert w.time_weighted_mean(60 * S) == pytest.approx((10 * 10 + 20 * 30 + 0 * 5 + 100 * 15) / 60)
    # over the last 30 s the 20 set at 10 s is still in force from 30 s to 40 s
    assert w.time_weighted_mean(60 * S, 30) == pytest.approx((20 * 10 + 0 * 5 + 100 * 15) / 30)


def test_samples_exactly_at_now_and_empty_window() -> None:
    w = SeriesWindow(60)
    assert w.time_weighted_mean(0) is None
    assert w.last() is None
    w.add(100 * S, 7.0)
    assert w.time_weighted_mean(100 * S) == 7.0  # only a sample at now: the value in force
    assert w.time_weighted_mean(100 * S, unmeasured_as_zero=True) == 0.0  # it has held for no time yet
    with pytest.raises(ValueError, match="span_s"):
        w.time_weighted_mean(100 * S, 61)


@settings(max_examples=300, deadline=None)
@given(
    data=st.lists(
        st.tuples(st.integers(0, 10_000 * S), st.floats(-1000, 1000, allow_nan=False)),
        min_size=1,
        max_size=60,
    ),
    window_s=st.integers(1, 20_000),
    query_frac=st.floats(0.01, 1.0),
    after=st.integers(0, 5_000 * S),
    zero=st.booleans(),
    capacity=st.integers(2, 8),
)
def test_twa_matches_slow_reference(
    data: list[tuple[int, float]], window_s: int, query_frac: float, after: int, zero: bool, capacity: int
) -> None:
    samples = sorted(data, key=lambda s: s[0])
    w = _window(samples, window_s, capacity)
    now = samples[-1][0] + after
    query_s = max(1, round(window_s * query_frac))
    got = w.time_weighted_mean(now, query_s, unmeasured_as_zero=zero)
    want = reference_twa(samples, now, query_s * S, zero)
    if want is None:
        assert got is None
    else:
        assert got == pytest.approx(want, rel=1e-9, abs=1e-9)


# --- buffer behaviour ------------------------------------------------------------------------------------------


def test_eviction_beyond_span_keeps_memory_bounded() -> None:
    w = SeriesWindow(60, capacity=256)
    for t in range(10_000):
        w.add(t * S, float(t))
    # 9939..9999 lie in the last 60 s; 9939 is exactly at the cutoff so no older sample is needed
    assert len(w) == 61
    assert w.capacity == 256  # compaction, not growth: old samples really left
    assert w.last() == (9_999 * S, 9_999.0)
    # step-hold mean of 9939..9998 each for 1 s over 60 s
    assert w.time_weighted_mean(9_999 * S) == pytest.approx(sum(range(9_939, 9_999)) / 60)


def test_eviction_keeps_the_value_in_force_at_the_span_start() -> None:
    w = SeriesWindow(60)
    for t in (0, 25, 50, 75, 100):  # every 25 s: cutoff at 40 s falls between 25 and 50
        w.add(t * S, float(t))
    assert len(w) == 4  # 0 dropped; 25 stays because it is in force from 40 s to 50 s
    assert w.time_weighted_mean(100 * S) == pytest.approx((25 * 10 + 50 * 25 + 75 * 25) / 60)


def test_capacity_grows_past_the_initial_size() -> None:
    w = SeriesWindow(1e6, capacity=4)
    samples = [(t * S, math.sin(t)) for t in range(1000)]
    for ts, v in samples:
        w.add(ts, v)
    assert len(w) == 1000
    assert w.capacity == 1024  # 4 doubled eight times
    assert w.last() == (999 * S, math.sin(999))
    assert w.time_weighted_mean(1000 * S) == pytest.approx(reference_twa(samples, 1000 * S, 10**6 * S, False))


def test_out_of_order_samples_are_ignored_and_counted() -> None:
    w = SeriesWindow(3600)
    w.add(10 * S, 1.0)
    w.add(20 * S, 2.0)
    w.add(15 * S, 99.0)
    w.add(5 * S, 99.0)
    w.add(20 * S, 3.0)  # the same instant is not older: kept, the earlier one now holds for no time
    assert w.out_of_order == 2
    assert len(w) == 3
    assert w.last() == (20 * S, 3.0)
    assert w.time_weighted_mean(30 * S) == pytest.approx((1.0 * 10 + 3.0 * 10) / 20)


def test_non_finite_values_are_ignored_and_counted() -> None:
    w = SeriesWindow(3600)
    w.add(1 * S, 1.0)
    w.add(2 * S, math.nan)
    w.add(3 * S, math.inf)
    assert (w.non_finite, len(w)) == (2, 1)
    assert w.time_weighted_mean(4 * S) == 1.0


def test_unchanged_for_detects_a_frozen_sensor() -> None:
    w = SeriesWindow(3600)
    assert w.unchanged_for(1) is False
    for t, v in enumerate([1.0, 2.0, 5.0, 5.0, 5.0]):
        w.add(t * S, v)
    assert w.unchanged_for(3) is True
    assert w.unchanged_for(4) is False
    assert w.unchanged_for(6) is False  # fewer samples than asked
    w.add(10 * S, 5.000001)
    assert w.unchanged_for(2) is False
    with pytest.raises(ValueError):
        w.unchanged_for(0)


# --- slope ---------------------------------------------------------------------------------------------------------


def _drift(seed: int, noise_mm: float, days: float = 2.0) -> tuple[SeriesWindow, int]:
    rng = np.random.default_rng(seed)
    step = 10 * MIN
    n = int(days * DAY / step) + 1
    w = SeriesWindow(days * 86_400)
    for i in range(n):
        ts = 1_700_000_000 * S + i * step  # realistic epoch: the slope must not lose precision on large ns
        w.add(ts, 12.0 + 2.5 * (i * step / DAY) + float(rng.normal(0.0, noise_mm)))
    return w, ts


def test_slope_of_a_noiseless_drift_is_exact() -> None:
    w, now = _drift(0, 0.0)
    assert w.slope_per_day(now) == pytest.approx(2.5, rel=1e-9)


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_slope_of_a_noisy_2_5_mm_per_day_drift(seed: int) -> None:
    # 289 samples every 10 min over 2 days, noise sigma 0.5 mm. The least-squares slope's standard error is
    # sigma / sqrt(sum (x - mean x)^2) with x in days; 5 standard errors (~0.25 mm/d, 10 % of the drift) fail
    # by chance with probability below 1e-6, and a slope off by a unit error (per hour, per second) fails by far.
    w, now = _drift(seed, 0.5)
    x = np.arange(289) * (10 / 1440)
    se = 0.5 / math.sqrt(float(np.sum((x - x.mean()) ** 2)))
    assert se == pytest.approx(0.051, abs=0.001)
    slope = w.slope_per_day(now)
    assert slope is not None
    assert abs(slope - 2.5) < 5 * se


@pytest.mark.parametrize("seed", range(20))
def test_a_still_point_read_every_10_min_has_no_rate_until_half_its_window_then_a_small_one(seed: int) -> None:
    # Found by a review: with an hour of data enough, the 24 h slope of a still point (0.2 mm of noise, 10-minute
    # readings) after a start was often beyond a 3 mm/d rate 预警值: a false 报警 after most restarts
    rng = np.random.default_rng(seed)
    w = SeriesWindow(86_400)
    t0 = 1_700_000_000 * S
    for i in range(73):  # 12 h
        now = t0 + i * 10 * MIN
        w.add(now, 5.0 + float(rng.normal(0.0, 0.2)))
        if i < 72:
            assert w.slope_per_day(now) is None, i  # under half the window: no rate
    slope = w.slope_per_day(now)
    assert slope is not None and abs(slope) < 1.0  # 12 h: standard error 0.16 mm/d


def test_slope_uses_only_the_span_and_needs_points_and_an_hour() -> None:
    w = SeriesWindow(2 * 86_400)
    # flat for a day, then 4 mm/d: the last 12 h see only the 4 mm/d part
    for i in range(0, 2 * 144 + 1):
        t = i * 10 * MIN
        w.add(t, 0.0 if t <= DAY else 4.0 * (t - DAY) / DAY)
    now = 2 * DAY
    assert w.slope_per_day(now, 12 * 3600) == pytest.approx(4.0)
    assert w.slope_per_day(now, 3000) is None  # 50 min of samples: under an hour
    assert w.slope_per_day(now, 3600) == pytest.approx(4.0)  # 7 samples spanning exactly 1 h
    assert w.slope_per_day(now, 3600, min_points=8) is None


# --- daily series ----------------------------------------------------------------------------------------------


def _at(y: int, m: int, d: int, hh: int = 12, mm: int = 0, tz: datetime.tzinfo = SHANGHAI) -> int:
    return int(datetime.datetime(y, m, d, hh, mm, tzinfo=tz).timestamp()) * S


def test_a_sample_at_16_30_utc_is_the_next_day_in_shanghai() -> None:
    ds = DailySeries()
    utc = datetime.UTC
    ds.add(_at(2024, 5, 1, 15, 59, utc), 1.0)  # 23:59 in Shanghai, 1 May
    ds.add(_at(2024, 5, 1, 16, 30, utc), 2.0)  # 00:30 in Shanghai, 2 May
    assert ds.last_values() == [(datetime.date(2024, 5, 1), 1.0), (datetime.date(2024, 5, 2), 2.0)]
    # in UTC both are 1 May: one day, the later value
    du = DailySeries(tz="UTC")
    du.add(_at(2024, 5, 1, 15, 59, utc), 1.0)
    du.add(_at(2024, 5, 1, 16, 30, utc), 2.0)
    assert du.last_values() == [(datetime.date(2024, 5, 1), 2.0)]


def test_a_days_rate_is_its_last_value_against_the_day_before_per_day_between() -> None:
    ds = DailySeries()
    ds.add(_at(2024, 5, 1, 9), 10.0)
    ds.add(_at(2024, 5, 1, 18), 11.0)  # last of 1 May
    ds.add(_at(2024, 5, 2, 18), 14.0)
    ds.add(_at(2024, 5, 2, 8), 99.0)  # late, but earlier in its day: does not replace 14.0
    ds.add(_at(2024, 5, 4, 6), 20.0)  # 3 May has no data: 6 mm over 1.5 days
    ds.add(_at(2024, 5, 5, 6, 30), 20.5)  # today: 0.5 mm in 24.5 h
    now = _at(2024, 5, 5, 20)
    assert ds.days_ending(4, now, today=False) == [4.0, None, 3.0, None]  # 4, 3, 2, 1 May (1 May: no day before)
    assert ds.days_ending(2, now, today=True) == [pytest.approx(0.5 / (24.5 / 24)), 4.0]
    ds.add(_at(2024, 5, 5, 23, 50), 20.6)
    ds.add(_at(2024, 5, 6, 0, 20), 21.0)  # 30 min after the day before's last: says nothing
    assert ds.days_ending(2, _at(2024, 5, 6, 0, 30), today=True) == [
        None,
        pytest.approx(0.6 / (1 + 17 / 24 + 50 / 1440)),
    ]


def _run(ds: DailySeries, limit: float, n: int, now: int) -> bool:
    """Each of the n days up to yesterday has |rate| >= limit (as `days_run` judges a gauge's days)."""
    return all(r is not None and abs(r) >= limit for r in ds.days_ending(n, now, today=False))


def _days(values: dict[int, float]) -> DailySeries:
    ds = DailySeries()
    for day, v in values.items():
        ds.add(_at(2024, 5, day, 10), v)
    return ds


def test_three_consecutive_days_at_2_2_against_70_percent_of_3_mm_per_day() -> None:
    limit = 0.7 * 3.0  # 2.1 mm/d
    ds = _days({1: 0.0, 2: 2.2, 3: 4.4, 4: 6.6})
    now = _at(2024, 5, 5, 9)
    assert _run(ds, limit, 3, now) is True
    assert _run(ds, limit, 4, now) is False  # 1 May has no earlier day: no rate
    assert _run(ds, 2.3, 3, now) is False


def test_two_days_at_2_2_are_not_three() -> None:
    limit = 0.7 * 3.0
    ds = _days({2: 2.2, 3: 4.4, 4: 6.6})  # two rates
    assert _run(ds, limit, 3, _at(2024, 5, 5, 9)) is False
    assert _run(ds, limit, 2, _at(2024, 5, 5, 9)) is True
    ds = _days({1: 0.0, 2: 0.5, 3: 2.7, 4: 4.9})  # first rate too small
    assert _run(ds, limit, 3, _at(2024, 5, 5, 9)) is False


def test_a_day_without_data_breaks_the_run() -> None:
    ds = _days({1: 0.0, 2: 3.0, 4: 9.0, 5: 12.0})  # 3 May missing; every rate is 3 mm/d
    now = _at(2024, 5, 6, 9)
    assert _run(ds, 2.1, 3, now) is False
    assert _run(ds, 2.1, 2, now) is True  # 4 and 5 May both have data
    # yesterday missing: the run must end on the last completed day
    assert _run(ds, 2.1, 2, _at(2024, 5, 7, 9)) is False


def test_settlement_downwards_counts_by_magnitude_and_today_does_not_count() -> None:
    ds = _days({1: 0.0, 2: -2.2, 3: -4.4, 4: -6.6})
    assert _run(ds, 2.1, 3, _at(2024, 5, 5, 9)) is True
    # evaluated during 4 May, that day is not complete: only two rates so far
    assert _run(ds, 2.1, 3, _at(2024, 5, 4, 23)) is False


def test_old_days_are_dropped_after_keep_days() -> None:
    ds = DailySeries(keep_days=5)
    start = _at(2024, 5, 1, 10)
    for d in range(10):
        ds.add(start + d * DAY, float(d))
    assert [d.day for d, _ in ds.last_values()] == [6, 7, 8, 9, 10]


def test_a_survey_day_from_noon_holds_the_night_after_it() -> None:
    """`day_start` 12:00: a day runs from noon to noon and is named by the date it starts on, so a survey at 00:20
    (or 11:59:59) is the night before's; at noon itself the new day begins. On wall-clock time: across New York's
    spring-forward night the day still starts at 12:00 local."""
    ds = DailySeries(day_start=datetime.time(12))
    assert ds.local_date(_at(2024, 5, 2, 0, 20)) == datetime.date(2024, 5, 1)
    assert ds.local_date(_at(2024, 5, 2, 12, 0) - S) == datetime.date(2024, 5, 1)
    assert ds.local_date(_at(2024, 5, 2, 12, 0)) == datetime.date(2024, 5, 2)
    ny = ZoneInfo("America/New_York")  # 2024-03-10 02:00 EST became 03:00 EDT
    dn = DailySeries(tz="America/New_York", day_start=datetime.time(12))
    assert dn.local_date(_at(2024, 3, 10, 12, 0, ny) - S) == datetime.date(2024, 3, 9)
    assert dn.local_date(_at(2024, 3, 10, 12, 0, ny)) == datetime.date(2024, 3, 10)


def test_nightly_surveys_either_side_of_midnight_are_one_survey_day_each() -> None:
    """Surveys at 23:40, 00:20 (two dates on), 23:40 (the same date) and 00:20 (two dates on), 3 mm/d: from noon,
    four survey days in a row with a rate each from the second on; on calendar days two of the nights share a date
    (the later survey kept) and the dates between have none."""
    times = [_at(2024, 5, 1, 23, 40), _at(2024, 5, 3, 0, 20), _at(2024, 5, 3, 23, 40), _at(2024, 5, 5, 0, 20)]
    by_noon, by_date = DailySeries(day_start=datetime.time(12)), DailySeries()
    for ds in (by_noon, by_date):
        for ts in times:
            ds.add(ts, 3.0 * (ts - times[0]) / DAY)
    now = times[-1]
    assert by_noon.days_ending(3, now, today=True) == [pytest.approx(3.0)] * 3
    assert by_date.days_ending(3, now, today=True) == [pytest.approx(3.0), None, pytest.approx(3.0)]


def test_a_date_only_survey_counts_for_the_date_written_on_it() -> None:
    """drivers/survey.py stamps a row without a time at 00:00 of its date. With day_start 12:00 that instant was the
    previous survey day, colliding with the night before's survey (23:40 on 03-04): the night of 03-05 had no data
    and the run broke, though the surveyor wrote 03-05 (found by an outside review)."""
    tz = ZoneInfo("Asia/Shanghai")
    at = [
        int(datetime.datetime(2026, 3, 4, 23, 40, tzinfo=tz).timestamp()),
        int(datetime.datetime(2026, 3, 5, tzinfo=tz).timestamp()),
    ]
    ds = DailySeries(day_start=datetime.time(12))
    ds.add(at[0] * 10**9, 1.0)
    ds.add(at[1] * 10**9, 2.0)  # the 03-05 report, date only
    assert sorted(d for d, _ in ds.last_values()) == [datetime.date(2026, 3, 4), datetime.date(2026, 3, 5)]
    assert ds.samples() == [(at[0] * 10**9, 1.0), (at[1] * 10**9, 2.0)]


def test_a_day_s_first_and_last_samples_are_saved() -> None:
    # a calendar date holding two nights (00:20, then 23:40): both saved, so days counted from another hour after a
    # restart find both
    ds = DailySeries()
    base = 1_772_000_000 * 10**9
    for k, v in enumerate((1.0, 2.0, 3.0)):
        ds.add(base + k * 3600 * 10**9, v)
    assert [v for _, v in ds.samples()] == [1.0, 3.0]
