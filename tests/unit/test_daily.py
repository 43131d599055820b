"""Daily values of excavation points: the last valid reading per site day, written in batches, kept for months."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from alerting.db import connect
from gateway.daily import DailyValues
from telemetry.reading import Quality, Reading

TZ = ZoneInfo("Asia/Shanghai")


TODAY = datetime.now(TZ).date()  # recent days: older ones than keep_days are dropped at each flush


def ns(d: int, h: int) -> int:
    """Day 8 is two days ago, day 9 yesterday, day 10 today (site time)."""
    day = TODAY - timedelta(days=10 - d)
    return int(datetime(day.year, day.month, day.day, h, tzinfo=TZ).timestamp()) * 1_000_000_000


def test_last_valid_value_per_site_day_survives_a_restart(tmp_path: Path) -> None:
    conn = connect(tmp_path / "state.db")
    dv = DailyValues(conn, "Asia/Shanghai", ["ZQT-3"])
    dv.add([
        Reading("ZQT-3", "horizontal_displacement", 1.0, ns(8, 9)),
        Reading("ZQT-3", "horizontal_displacement", 1.4, ns(8, 17)),
        Reading("ZQT-3", "horizontal_displacement", 9.9, ns(8, 18), Quality.BAD),  # a fault never becomes the day's
        Reading("ZQT-3", "horizontal_displacement", 1.2, ns(8, 12)),  # older than the day's last: ignored
        Reading("ZQT-3", "horizontal_displacement", 2.0, ns(9, 0) + 1),  # 00:00 site time is the next day
        Reading("GAS-01", "lel", 30.0, ns(9, 9)),  # not an excavation point: not kept
    ])  # fmt: skip
    today = TODAY
    assert dv.series("ZQT-3", "horizontal_displacement", 30, today) == [(ns(8, 17), 1.4), (ns(9, 0) + 1, 2.0)]
    assert dv.series("ZQT-3", "horizontal_displacement", 1, today) == []  # only today
    assert dv.quantities("GAS-01") == []
    assert dv.flush() == 2 and dv.flush() == 0  # only what changed is written
    conn.close()
    again = DailyValues(connect(tmp_path / "state.db"), "Asia/Shanghai", ["ZQT-3"])
    assert again.series("ZQT-3", "horizontal_displacement", 30, today) == [(ns(8, 17), 1.4), (ns(9, 0) + 1, 2.0)]


def test_a_days_last_reading_is_kept_across_batches_reads_and_flushes(tmp_path: Path) -> None:
    conn = connect(tmp_path / "state.db")
    dv = DailyValues(conn, "Asia/Shanghai", ["P1"])
    dv.add([Reading("P1", "settlement", 1.0, ns(9, 9))])
    dv.add([Reading("P1", "settlement", 2.0, ns(9, 10))])
    assert dv.series("P1", "settlement", 2, TODAY) == [(ns(9, 10), 2.0)]
    dv.add([Reading("P1", "settlement", 5.0, ns(9, 8))])  # older than the day's last, after a read: not kept
    dv.add([Reading("P1", "settlement", 3.0, ns(9, 11)), Reading("P2", "settlement", 7.0, ns(9, 11))])
    assert dv.flush() == 1  # one row: P1's day (P2 is not watched)
    dv.add([Reading("P1", "settlement", 4.0, ns(9, 10))])  # older than the flushed one: nothing to write
    assert dv.flush() == 0
    assert dv.series("P1", "settlement", 2, TODAY) == [(ns(9, 11), 3.0)]
    assert [tuple(r) for r in conn.execute("SELECT ts_ns, value FROM daily_values")] == [(ns(9, 11), 3.0)]


def test_a_refused_write_is_kept_for_the_next_flush(tmp_path: Path) -> None:
    import sqlite3

    import pytest

    conn = connect(tmp_path / "state.db")
    dv = DailyValues(conn, "Asia/Shanghai", ["P1"])
    dv.add([Reading("P1", "settlement", 3.0, ns(9, 9))])
    other = sqlite3.connect(tmp_path / "state.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    with pytest.raises(sqlite3.OperationalError):
        dv.flush()
    other.execute("ROLLBACK")
    assert dv.flush() == 1
    assert conn.execute("SELECT value FROM daily_values").fetchall()[0][0] == 3.0


def test_site_day_of_each_reading_matches_the_zone_across_midnights_and_dst(tmp_path: Path) -> None:
    """The day bounds kept between readings give the date a zone lookup gives, also on the days DST changes
    (Berlin: at 02:00; Santiago and Havana: at midnight itself, where a day's start does not exist). Every
    transition of these zones is on a whole hour: readings one second either side of every hour of three years."""
    for tz in ("Asia/Shanghai", "Europe/Berlin", "America/Santiago", "America/Havana"):
        zone = ZoneInfo(tz)
        dv = DailyValues(connect(tmp_path / f"{tz.replace('/', '_')}.db"), tz, [])
        first = int(datetime(2022, 1, 1, tzinfo=zone).timestamp()) // 3600
        kept = 0
        for hour in range(first, first + 3 * 366 * 24):
            for ts_ns in (hour * 3600 * 10**9 - 10**6, hour * 3600 * 10**9, hour * 3600 * 10**9 + 10**9):
                assert dv._day(ts_ns) == datetime.fromtimestamp(ts_ns / 1e9, zone).date().isoformat(), (tz, ts_ns)
                kept += dv._span[0] <= ts_ns < dv._span[1]
        # and the bounds were kept: all but the readings around a day that has no midnight came from them
        assert kept > 0.99 * 3 * 3 * 366 * 24, (tz, kept)


def test_each_reading_is_kept_under_its_own_site_day_across_midnights_and_dst(tmp_path: Path) -> None:
    """The listener keeps the last day's bounds between readings: a reading still lands in the day a zone lookup
    gives, on the days without a midnight too (Santiago, Havana), and a late one of the day before after it."""
    for tz in ("Europe/Berlin", "America/Santiago", "America/Havana"):
        zone = ZoneInfo(tz)
        dv = DailyValues(connect(tmp_path / f"{tz.replace('/', '_')}.db"), tz, ["P1"])
        day = datetime(2022, 1, 1).date()
        for _ in range(3 * 366):
            before = day - timedelta(days=1)
            noon = int(datetime(day.year, day.month, day.day, 12, tzinfo=zone).timestamp()) * 10**9
            late = int(datetime(before.year, before.month, before.day, 23, 59, 30, tzinfo=zone).timestamp()) * 10**9
            # the day before, this day, then the day before again: the bounds kept must be those of the reading's day
            r = [Reading("P1", "settlement", 3.0, late - 10**9), Reading("P1", "settlement", 1.0, noon)]
            dv.add([*r, Reading("P1", "settlement", 2.0, late)])
            # the day before keeps its later reading, this day its own
            assert dv.series("P1", "settlement", 2, today=day) == [(late, 2.0), (noon, 1.0)], (tz, day)
            day += timedelta(days=1)
