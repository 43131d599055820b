"""The stores behind the console, without a browser: the history's rings (points, budget, shared arrays, 9-byte
points over weeks) and the live stream's bounded subscriber queues."""

from __future__ import annotations

import itertools
import math
import random
from typing import Any

import pytest

from gateway.history import History
from telemetry.reading import Quality, Reading

NS = 1_000_000_000


def test_history_ring_is_bounded_in_points_and_time_and_keeps_the_newest() -> None:
    h = History(window_s=60.0, max_points=10)  # buckets of 6 s
    t0 = 1_750_000_000 * NS
    for i in range(2000):  # 500 s of a crane polled 4 times a second
        h.add([Reading("TC-01", "load", float(i), t0 + i * NS // 4)])
    s = h.series("TC-01", "load", minutes=60)
    pts = s["points"]
    assert 1 < len(pts) <= 10
    assert pts[-1][1] == 1999.0  # the newest value is never lost to bucketing
    assert pts[-1][0] - pts[0][0] <= 60 * NS
    assert all(a[0] < b[0] for a, b in itertools.pairwise(pts))
    assert s["rate_per_day"] == pytest.approx(4 * 86400, rel=0.01)  # 4 units per second
    # a late reading does not go back into the past of the ring
    h.add([Reading("TC-01", "load", -1.0, t0)])
    assert h.series("TC-01", "load", 60)["points"] == pts
    # NaN is shown as null, and bad points do not count towards the rate
    h.add([Reading("GAS-01", "lel", math.nan, t0, Quality.BAD)])
    assert h.series("GAS-01", "lel", 60) == {
        "device": "GAS-01",
        "quantity": "lel",
        "points": [[t0, None, 2]],
        "rate_per_day": None,
    }


def test_the_open_bucket_shows_its_newest_reading_whenever_it_is_read() -> None:
    h = History(window_s=60.0, max_points=10)  # buckets of 6 s
    t0 = 1_750_000_002 * NS  # a bucket starts here

    def shown() -> list[list[Any]]:
        return h.series("P1", "settlement", 60)["points"]

    h.add([Reading("P1", "settlement", 1.0, t0)])
    assert shown() == [[t0, 1.0, 0]]
    h.add([Reading("P1", "settlement", 2.0, t0 + NS)])  # read, then a newer reading of the same bucket
    assert shown() == [[t0 + NS, 2.0, 0]]
    h.add([Reading("P1", "settlement", 9.0, t0 + NS // 2)])  # older than the bucket's newest: not shown
    h.add([Reading("P1", "settlement", 2.5, t0 + 2 * NS, Quality.UNCERTAIN)])
    h.add([Reading("P1", "settlement", 3.0, t0 + 7 * NS)])  # the next bucket: the first one keeps its newest
    assert shown() == [[t0 + 2 * NS, 2.5, 1], [t0 + 7 * NS, 3.0, 0]]


def test_history_holds_its_point_budget_whatever_the_number_of_devices() -> None:
    h = History(window_s=7200.0, max_points=1440, budget_points=2_000, series=200)  # 10 points a series
    t0 = 1_750_000_000 * NS
    for i in range(0, 7200, 5):  # 2 h of 200 series, one reading every 5 s
        h.add([Reading(f"GAS-{k:04d}", "lel", float(i), t0 + i * NS) for k in range(200)])
    assert h.points() <= 2_000
    s = h.series("GAS-0199", "lel", minutes=120)
    assert 2 <= len(s["points"]) <= 10
    assert s["points"][-1][1] == 7195.0  # coarser, but the newest value is there
    assert s["rate_per_day"] == pytest.approx(86400, rel=0.01)
    small = History(window_s=7200.0, max_points=1440, budget_points=2_000, series=1)  # a small site keeps full detail
    for i in range(0, 7200, 5):
        small.add([Reading("TC-01", "load", float(i), t0 + i * NS)])
    assert len(small.series("TC-01", "load", minutes=120)["points"]) == 1440


def test_history_rings_share_their_arrays_and_never_mix_their_points() -> None:
    # every ring is a slice of three shared arrays: series added later (growing the arrays) and rings wrapping
    # around keep their own points, each series its own values
    h = History(window_s=60.0, max_points=8, budget_points=10_000, series=3)
    t0 = 1_750_000_000 * NS
    for i in range(100):  # a new series joins every 30 s; each wraps its 8 points many times
        h.add([Reading(f"D{k}", "q", k * 1000.0 + i, t0 + i * NS) for k in range(1 + i // 30)])
    assert len(h._rings.ts) == 4 * 8 and len(h._rings.base) == 4  # four rings of 8 points, no array of their own
    for k in range(4):
        pts = h.series(f"D{k}", "q", minutes=1)["points"]
        assert pts[-1][1] == k * 1000.0 + 99 and all(int(v) // 1000 == k for _, v, _ in pts), k
        assert all(a[0] < b[0] for a, b in itertools.pairwise(pts))


def test_history_keeps_9_bytes_a_point_for_weeks_of_uptime_and_shows_7_digits() -> None:
    # times are uint32 ms after a ring's t0 and values float32: 60 days of a reading a minute never overflow (the
    # ring moves t0 up), every time shown is the reading's to the ms, every value to 7 significant digits
    h = History(window_s=7200.0, max_points=200, budget_points=1_000, series=2)
    t0 = 1_750_000_000 * NS + 123_456_789  # not on a whole second: times are kept to the ms
    minute = 60 * NS
    days = 60
    for i in range(days * 1440):
        h.add([Reading("TC-01", "load", 20.9 + (i % 7), t0 + i * minute)])
    assert h._rings.ts.itemsize == 4 and h._rings.v.itemsize == 4 and h._rings.q.itemsize == 1
    pts = h.series("TC-01", "load", minutes=120)["points"]
    last = days * 1440 - 1
    assert len(pts) == 121  # two hours a minute apart, both ends in
    assert [ts for ts, _, _ in pts] == [(t0 + k * minute) // 1_000_000 * 1_000_000 for k in range(last - 120, last + 1)]
    assert [v for _, v, _ in pts] == [round(20.9 + (k % 7), 1) for k in range(last - 120, last + 1)]
    # quiet for 60 days, then a reading: only it is shown; a value beyond float32 shows as null, like NaN
    h.add([Reading("TC-01", "load", 123.456789, t0 + (last + 60 * 1440) * minute)])
    assert h.series("TC-01", "load", minutes=120)["points"] == [
        [(t0 + (last + 60 * 1440) * minute) // 1_000_000 * 1_000_000, 123.4568, 0]
    ]
    h.add([Reading("TC-01", "load", 1e39, t0 + (last + 60 * 1440 + 1) * minute, Quality.UNCERTAIN)])
    assert h.series("TC-01", "load", minutes=120)["points"][-1][1:] == [None, 1]
    with pytest.raises(ValueError, match="window_s"):
        History(window_s=8 * 86400.0)


def _reference(seq: list[tuple[int, float]], cap: int, bucket_ms: int, window_ms: int) -> list[list[Any]]:
    """What a ring must show, kept the plain way: a list of (ms, value), the newest of each bucket."""
    pts: list[tuple[int, float]] = []
    for ms, v in seq:
        if pts and ms < pts[-1][0]:
            continue  # late
        if pts and ms - pts[-1][0] > window_ms:
            pts = []
        elif pts and ms // bucket_ms == pts[-1][0] // bucket_ms:
            pts[-1] = (ms, v)
            continue
        pts.append((ms, v))
        pts = [p for p in pts[-cap:] if p[0] >= ms - window_ms]
    return [[ms * 1_000_000, v, 0] for ms, v in pts]


@pytest.mark.parametrize("seed", range(8))
def test_history_rings_show_what_a_plain_list_would_through_bursts_gaps_and_late_readings(seed: int) -> None:
    # the rings are columns with a fast path for a reading in the newest point's bucket: five interleaved series
    # of bursts, late readings and quiet spells longer than the window must show what the plain model shows
    rnd = random.Random(seed)
    h = History(window_s=60.0, max_points=12, budget_points=60, series=5)  # 12 points of 5 s a series
    t0 = 1_750_000_000_000
    seqs: dict[str, list[tuple[int, float]]] = {f"D{k}": [] for k in range(5)}
    clock = dict.fromkeys(seqs, t0)
    for step in range(3000):
        dev = rnd.choice(list(seqs))
        jump = rnd.choice([0, 1, 7, 250, 1000, 4999, 5000, 20_000, 61_000, -3000, -40])
        if jump >= 0:
            clock[dev] += jump
        ms = clock[dev] + min(jump, 0)  # a negative jump is one late reading; the clock stays
        v = float(step)
        seqs[dev].append((ms, v))
        h.add([Reading(dev, "q", v, ms * 1_000_000)])
    for dev, seq in seqs.items():
        want = _reference(seq, 12, 5000, 60_000)
        assert want and h.series(dev, "q", minutes=10)["points"] == want, dev


async def test_slow_client_queue_is_bounded_and_told_to_resync() -> None:
    h = History()
    slow = h.hub.subscribe()
    fast = h.hub.subscribe()
    t0 = 1_750_000_000 * NS
    got: list[str] = []
    for i in range(1000):
        h.add([Reading("GAS-01", "lel", float(i), t0 + i * NS)])
        frame = await fast.next(1.0)
        assert frame is not None
        got.append(frame)
        assert len(slow.queue) <= h.hub.queue_events
    assert all(f.startswith("event: reading\n") for f in got)
    assert got[-1].endswith('["GAS-01","lel",999.0,' + str(t0 + 999 * NS) + ',"good"]]\n\n')
    # the slow client missed events: its queue was emptied with a resync marker first, then newer events follow
    first = await slow.next(1.0)
    assert first is not None and first.startswith("event: resync\n")
    assert slow.dropped > 0 and len(slow.queue) < h.hub.queue_events
    h.hub.unsubscribe(slow)
    h.hub.unsubscribe(fast)
    assert await fast.next(0.05) is None  # nothing more: the stream would send a heartbeat
    h.add([Reading("GAS-01", "lel", 1.0, t0 + 2000 * NS)])
    assert not fast.queue
