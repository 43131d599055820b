"""Replay after an outage: the backlog goes in at a limited rate while live readings overtake it; nothing is lost.
Implausible values are flagged (quality), never clamped or dropped."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.influx import InfluxV1Writer
from gateway.metrics import Metrics
from gateway.pipeline import Pipeline
from gateway.spool import Spool
from gateway.writer import SpoolDrainer
from services.local import Service, rows, wait_for
from telemetry.lineproto import series_tags
from telemetry.reading import Quality, Reading


@contextlib.asynccontextmanager
async def draining(drainer: SpoolDrainer) -> AsyncIterator[None]:
    """The drainer runs inside; on the way out it stops, and its writer and spool are closed."""
    task = asyncio.create_task(drainer.run(), name="drainer")
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await drainer.writer.aclose()
        drainer.spool.close()


def to_influx(
    tmp_path: Path,
    influxdb: Service,
    db: str,
    segment_bytes: int = 1 << 20,
    replay_per_s: float = 20000,
    linger_s: float = 1.0,
) -> tuple[Spool, Metrics, SpoolDrainer]:
    """A spool (64 MiB) and its drainer to database `db` of the test's InfluxDB, 5 000 lines a request."""
    spool = Spool(tmp_path / "spool", max_bytes=64 << 20, segment_bytes=segment_bytes)
    spool.open()
    metrics = Metrics()
    writer = InfluxV1Writer(f"http://127.0.0.1:{influxdb.port}", db)
    drainer = SpoolDrainer(spool, writer, metrics, 5000, replay_per_s, tmp_path / "rejected.lp", linger_s=linger_s)
    return spool, metrics, drainer


async def test_live_readings_overtake_the_backlog(tmp_path: Path, influxdb: Service) -> None:
    db = "replay_order"
    spool = Spool(tmp_path / "spool", max_bytes=64 << 20, segment_bytes=1 << 20)
    spool.open()
    backlog = 20_000
    for start in range(0, backlog, 1000):  # what piled up during an outage
        spool.append(
            b"".join(
                f"bk,device=D v={i} {1_700_000_000_000_000_000 + i}\n".encode() for i in range(start, start + 1000)
            ),
            1000,
        )
    spool.roll(backlog=True)  # as the drainer does at every failed write during an outage
    writer = InfluxV1Writer(f"http://127.0.0.1:{influxdb.port}", db)
    metrics = Metrics()
    drainer = SpoolDrainer(
        spool, writer, metrics, batch_lines=500, replay_lines_per_s=4000, rejected_file=tmp_path / "rejected.lp"
    )
    async with draining(drainer):
        await asyncio.to_thread(wait_for, lambda: metrics.lines_replayed > 0, 20, what="replay started")
        spool.append(b"live,device=D v=42 1800000000000000000\n", 1)  # a live reading arrives mid-replay

        def live_visible() -> bool:
            return bool(rows(influxdb.port, db, "SELECT v FROM live"))

        await asyncio.to_thread(wait_for, live_visible, 20, 0.02, "live reading in InfluxDB")
        replayed_when_live_arrived = rows(influxdb.port, db, "SELECT count(v) FROM bk")[0]["count"]
        assert replayed_when_live_arrived < backlog  # live did not wait for the whole backlog
        await asyncio.to_thread(wait_for, lambda: spool.pending_bytes() == 0, 60, what="backlog drained")
    assert rows(influxdb.port, db, "SELECT count(v) FROM bk")[0]["count"] == backlog
    assert metrics.lines_replayed == backlog and spool.dropped_lines == 0


async def test_implausible_values_are_flagged_not_dropped(tmp_path: Path, influxdb: Service) -> None:
    spool = Spool(tmp_path / "spool", max_bytes=1 << 20, segment_bytes=1 << 16)
    spool.open()
    metrics = Metrics()
    pipe = Pipeline(spool, {"TC-1": series_tags("tower_crane", "s", "TC-1", "")}, metrics)
    ts = 1_795_224_600_000_000_000
    pipe.process(
        [
            Reading("TC-1", "wind_speed", 180.0, ts),  # beyond any anemometer: implausible
            Reading("TC-1", "load", 2.0, ts),
            Reading("TC-1", "radius", -3.0, ts),
        ]
    )  # a negative radius: implausible
    assert metrics.readings_implausible == 2
    assert pipe.latest[("TC-1", "wind_speed")].quality is Quality.UNCERTAIN
    chunk = spool.read(spool.live_segment(), 10)
    assert chunk is not None
    writer = InfluxV1Writer(f"http://127.0.0.1:{influxdb.port}", "implausible")
    try:
        await writer.write(chunk.data)
    finally:
        await writer.aclose()
        spool.close()
    got = rows(influxdb.port, "implausible", "SELECT * FROM tower_crane")[0]
    assert (got["wind_speed"], got["wind_speed_q"], got["load"], got.get("load_q"), got["radius"], got["radius_q"]) == (
        180,
        int(Quality.UNCERTAIN),
        2,
        None,
        -3,
        int(Quality.UNCERTAIN),
    )


async def test_streaming_lines_are_gathered_into_few_writes(tmp_path: Path, influxdb: Service) -> None:
    db = "gathered"
    # a linger far longer than the appends take, so how the writes are grouped does not depend on the machine's speed
    spool, metrics, drainer = to_influx(tmp_path, influxdb, db, linger_s=2.0)
    async with draining(drainer):
        spool.append(b"lone,device=D v=1 1700000000000000000\n", 1)  # a quiet site: nothing to gather
        await asyncio.to_thread(wait_for, lambda: metrics.lines_written == 1, 10, what="the lone line written")
        for i in range(100):  # then data streams in: one pipeline batch every few ms
            spool.append(f"st,device=D v={i} {1_700_000_000_000_000_000 + i}\n".encode(), 1)
            await asyncio.sleep(0.002)
        await asyncio.to_thread(wait_for, lambda: spool.pending_bytes() == 0, 20, what="the stream written")
    assert metrics.lines_written == 101
    assert metrics.write_batches <= 3  # the lone line, then the stream gathered (not one request per line)
    assert len(rows(influxdb.port, db, "SELECT v FROM st")) == 100


async def test_a_line_just_before_the_linger_ends_is_written_at_once(tmp_path: Path, influxdb: Service) -> None:
    """Polls are written once a second (gateway/pipeline.py), a few ms before the drainer's linger of a second ends:
    a wait under a twentieth of the linger is not made, as its wake-up cost more than what those ms gather."""
    db = "linger_end"
    spool, metrics, drainer = to_influx(tmp_path, influxdb, db, linger_s=4.0)
    async with draining(drainer):
        t0 = time.monotonic()
        spool.append(b"le,device=D v=1 1700000000000000000\n", 1)
        await asyncio.to_thread(wait_for, lambda: metrics.lines_written == 1, 10, what="the first line written")
        await asyncio.sleep(t0 + 3.85 - time.monotonic())  # 0.15 s of the linger left: less than its twentieth
        spool.append(b"le,device=D v=2 1700000000000000001\n", 1)
        await asyncio.to_thread(wait_for, lambda: metrics.lines_written == 2, 10, 0.005, "the second line written")
        written = time.monotonic()
    assert written < t0 + 3.97, written - t0  # not at the linger's end (t0 + 4 s or later)
    assert len(rows(influxdb.port, db, "SELECT v FROM le")) == 2


async def test_a_backlog_of_many_segments_is_replayed_while_live_lines_stream(
    tmp_path: Path, influxdb: Service
) -> None:
    """An outage leaves one segment per failed attempt. With live lines arriving more often than the linger, the
    replay must not wait for the linger: it went at one segment per live write (per second by default), so after
    a ten-minute outage the central database took minutes to catch up and a gateway stopped meanwhile left the
    rest behind."""
    db = "many_segments"
    # a linger far longer than a live line's interval: a replay paced by it would take 40 x 2 s
    spool, metrics, drainer = to_influx(tmp_path, influxdb, db, linger_s=2.0)
    segments, per = 40, 5
    for k in range(segments):  # what 40 failed attempts left behind
        spool.append(b"".join(f"bk,device=D v={k * per + i} {1_700_000_000_000_000_000 + k * per + i}\n".encode()
                              for i in range(per)), per)  # fmt: skip
        spool.roll(backlog=True)
    live = 0
    async with draining(drainer):
        while metrics.lines_replayed < segments * per and live < 150:  # live lines every 0.2 s, for up to 30 s
            spool.append(f"lv,device=D v={live} {1_800_000_000_000_000_000 + live}\n".encode(), 1)
            live += 1
            await asyncio.sleep(0.2)
        replayed = metrics.lines_replayed
        await asyncio.to_thread(wait_for, lambda: spool.pending_bytes() == 0, 20, what="everything written")
    assert replayed == segments * per, f"{replayed} of {segments * per} replayed while {live} live lines streamed"
    assert len(rows(influxdb.port, db, "SELECT v FROM bk")) == segments * per
    assert len(rows(influxdb.port, db, "SELECT v FROM lv")) == live


async def test_a_segment_that_fills_is_not_an_outage(tmp_path: Path, influxdb: Service) -> None:
    """Every batch fills a small segment, so each roll leaves lines not yet written behind it: they stay live
    (written in order, at full speed), none is counted as replayed, and all of them arrive."""
    db = "segment_roll"
    spool, metrics, drainer = to_influx(tmp_path, influxdb, db, segment_bytes=4096, replay_per_s=100.0)
    total = 3000
    async with draining(drainer):
        for start in range(0, total, 150):  # ~7 KB a batch: each one rolls the segment it lands in
            spool.append(
                b"".join(
                    f"roll,device=D v={i} {1_700_000_000_000_000_000 + i}\n".encode() for i in range(start, start + 150)
                ),
                150,
            )
            await asyncio.sleep(0)
        await asyncio.to_thread(wait_for, lambda: spool.pending_bytes() == 0, 30, what="spool drained")
    assert len(list((tmp_path / "spool").glob("seg-*.lp"))) <= 2
    assert rows(influxdb.port, db, "SELECT count(v) FROM roll")[0]["count"] == total
    assert (metrics.lines_replayed, metrics.write_failures, spool.dropped_lines) == (0, 0, 0)


async def test_acked_offsets_are_saved_once_a_second_while_streaming_and_soon_after_it_stops(
    tmp_path: Path, influxdb: Service
) -> None:
    """One acked.json per database write cost a polled site a tenth of its CPU: while lines stream the file is
    written at most once per STATE_SAVE_S, and within that time after the writer has nothing left it holds the
    final offsets."""
    import json

    from gateway.spool import STATE_SAVE_S

    db = "state_saves"
    spool, metrics, drainer = to_influx(tmp_path, influxdb, db, linger_s=0.01)
    loop = asyncio.get_running_loop()
    async with draining(drainer):
        t0 = loop.time()
        i = 0
        while loop.time() - t0 < 1.5:  # a stream of small batches for 1.5 s
            spool.append(f"ss,device=D v={i} {1_700_000_000_000_000_000 + i}\n".encode(), 1)
            i += 1
            await asyncio.sleep(0.005)
        streamed_s = loop.time() - t0
        saves_while_streaming = spool.state_saves
        await asyncio.to_thread(wait_for, lambda: spool.pending_bytes() == 0, 20, what="the stream written")
        saved = tmp_path / "spool" / "acked.json"
        final = {str(s.seq): s.acked for s in spool.segments if s.acked}
        await asyncio.to_thread(wait_for, lambda: json.loads(saved.read_text()) == final, 5, 0.01, "acked.json current")
    assert metrics.write_batches >= 10  # many database writes ...
    assert saves_while_streaming <= streamed_s / STATE_SAVE_S + 2  # ... few saves of their offsets
    assert metrics.lines_written == i


def test_a_write_the_full_disk_cut_short_is_taken_back_whole(tmp_path: Path) -> None:
    """A batch bigger than what is left on the disk: the kernel writes part of it and says so (a short write), the
    next call would say ENOSPC. The spool takes the part back and fails as a full disk does, so its file never
    holds a torn line (which the database would refuse, or merge with the next); once there is room, it goes on."""
    from tests.integration.test_state_store_faults import fill, small_tmpfs

    with small_tmpfs(tmp_path / "spool", "64k") as d:
        sp = Spool(d, max_bytes=1 << 20, segment_bytes=1 << 20, sync_interval_s=1.0)
        sp.open()
        first = b"m,d=D v=1 1\n"
        sp.write(first, 1)  # the segment's first page, with room left in it
        fill(d / "filler")
        big = b"".join(b"m,d=D v=%d %d\n" % (i, i) for i in range(2, 2000))  # far more than that room
        with pytest.raises(OSError, match="disk full after") as err:
            sp.write(big, 1998)
        assert err.value.errno == errno.ENOSPC
        seg = sp.segments[-1]
        assert seg.path.read_bytes() == first and seg.size == len(first) and sp.appended_lines == 1
        (d / "filler").unlink()
        sp.write(big, 1998)
        assert seg.path.read_bytes() == first + big
        sp.close()


def test_a_disk_full_below_the_bound_drops_the_oldest_never_the_newest(tmp_path: Path) -> None:
    """The spool's disk fills long before its bound (a small card, other files): every write was refused with
    ENOSPC, the newest polled readings were lost uncounted and the oldest kept. A full disk is the bound now: the
    oldest segments go, counted, and the newest lines are written; /health says so (test_selfmon.py). A disk full
    of other files, where dropping the spool would not make room, still refuses the write and drops nothing
    (test_a_write_the_full_disk_cut_short_is_taken_back_whole)."""
    from tests.integration.test_state_store_faults import small_tmpfs

    with small_tmpfs(tmp_path / "spool", "256k") as d:
        sp = Spool(d, max_bytes=16 << 20, segment_bytes=16 << 10, sync_interval_s=1.0)
        sp.open()
        n = 0
        for _ in range(1500):  # about 450 KiB of lines into 256 KiB, nothing leaving (the database is down)
            batch = b"".join(b"m,device=D v=%d %d\n" % (n + i, n + i) for i in range(10))
            sp.write(batch, 10)
            n += 10
            sp.sync()
        kept = [int(x.split(b" ")[-1]) for s in sp.segments for x in s.path.read_bytes().splitlines()]
        assert sp.dropped_lines > 0 and len(kept) + sp.dropped_lines == n  # every line kept or counted
        assert kept == list(range(n - len(kept), n))  # the newest, in order: what went is the oldest
        assert sp.appended_lines == n
        sp.close()


async def test_polls_a_disk_full_of_other_files_refused_are_counted_and_the_next_ones_written(tmp_path: Path) -> None:
    """A disk full of other files (the spool's own oldest segments make no room): a poll's write is refused with
    ENOSPC and the pipeline's task ends (/health says so; gateway.tasks starts it again). Nothing delivers a poll
    again: its readings were lost uncounted, and counted as spooled. They are counted as lost now
    (sitegw_readings_unspooled_total), and the next poll is written once the disk has room."""
    from tests.integration.test_state_store_faults import fill, small_tmpfs

    failures: list[str] = []
    with small_tmpfs(tmp_path / "spool", "64k") as d:
        sp = Spool(d, max_bytes=32 * 1024, segment_bytes=8192, sync_interval_s=0.2)
        sp.open()
        filler = d / "filler"
        fill(filler)
        metrics = Metrics()
        pipe = Pipeline(sp, {"PIT-1": series_tags("excavation", "s", "PIT-1", "")}, metrics)

        async def supervised() -> None:
            while True:
                try:
                    await pipe.run()
                except OSError as err:
                    failures.append(str(err))
                    await asyncio.sleep(0.05)

        task = asyncio.create_task(supervised())
        ts = 1_795_224_600_000_000_000
        try:
            await pipe.submit([Reading("PIT-1", "strut_force", 100.0, ts), Reading("PIT-1", "up", 1.0, ts)])
            for _ in range(200):
                if failures:
                    break
                await asyncio.sleep(0.01)
            filler.unlink()  # the disk has room again (a log cleaned up)
            await pipe.submit([Reading("PIT-1", "strut_force", 101.0, ts + 10**9)])
            await asyncio.wait_for(pipe.drained(), 10)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        stored = [ln for seg in sp.segments for ln in seg.path.read_bytes().splitlines()]
        sp.close()
    assert len(failures) == 1 and "No space left" in failures[0]
    assert len(stored) == 1 and b"strut_force=101" in stored[0]
    assert metrics.readings_unspooled == 2  # the refused poll's, lost and said
    assert metrics.readings_in == 1 and metrics.lines_spooled == 1  # counted once written


def test_a_roll_the_disk_refuses_leaves_the_lines_written_once_and_the_spool_writing(tmp_path: Path) -> None:
    """A write that fills its segment rolls after appending. With the disk's inodes used up by other files (a disk
    full of small files: ENOSPC on creating one) the roll raised after the lines were in the file and after the
    segment's descriptor was closed: the caller took the write as refused (a poll lost, an MQTT message delivered
    again and written twice), and every later write went to the closed descriptor, or into whatever file reused
    its number (found by an outside review). The lines stay, the roll is tried at the next write."""
    import os
    import subprocess

    d = tmp_path / "spool"
    d.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,nr_inodes=5", "tmpfs", str(d)]).returncode:
        pytest.skip("cannot mount a tmpfs (needs root)")
    try:
        sp = Spool(d, max_bytes=1 << 20, segment_bytes=1000)
        sp.open()
        sp.close()  # (acked.json)
        sp.open()
        i = 0
        with contextlib.suppress(OSError):  # other files take the inodes left
            while True:
                (d / f"other{i}").touch()
                i += 1
        sp.write(b"x" * 999 + b"\n", 1)  # fills the segment: the roll finds no inode
        assert b"".join(seg.path.read_bytes() for seg in sp.segments) == b"x" * 999 + b"\n"
        (d / "other0").unlink()  # an inode free again
        other = os.open(d / "other1", os.O_WRONLY)  # (takes the lowest free descriptor number)
        try:
            sp.write(b"y\n", 1)
        finally:
            os.close(other)
        assert os.path.getsize(d / "other1") == 0, "the spool wrote into another file"
        assert b"".join(seg.path.read_bytes() for seg in sp.segments) == b"x" * 999 + b"\ny\n"
        for f in d.glob("other*"):
            f.unlink()
        sp.close()
    finally:
        subprocess.run(["umount", "-l", str(d)], check=False)
