"""The durable spool: whole lines only, acked lines leave, a torn tail is cut, the bound drops counted lines."""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.metrics import LiveFigures, Metrics
from gateway.pipeline import Pipeline
from gateway.spool import Spool
from telemetry.lineproto import series_tags
from telemetry.reading import Reading


def lines(a: int, b: int) -> bytes:
    return b"".join(f"m,device=d v={i} {i}\n".encode() for i in range(a, b))


def read_all(sp: Spool, which: str) -> list[bytes]:
    out: list[bytes] = []
    while (seg := sp.backlog_segment() if which == "backlog" else sp.live_segment()) is not None:
        ch = sp.read(seg, 4)
        if ch is None:
            break
        out.extend(ch.data.splitlines())
        sp.ack(ch)
    return out


def drain(sp: Spool) -> list[bytes]:
    """Everything pending, as the writer takes it: the backlog in order, then live data."""
    return read_all(sp, "backlog") + read_all(sp, "live")


def test_append_read_ack_in_order(tmp_path: Path) -> None:
    sp = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=200)
    sp.open()
    sp.append(lines(0, 50), 50)
    assert len(sp.segments) > 1  # rolled at 200 bytes
    got = drain(sp)
    assert got == lines(0, 50).splitlines()
    assert sp.pending_bytes() == 0 and sp.acked_lines == 50
    sp.close()


def test_survives_reopen_and_torn_tail(tmp_path: Path) -> None:
    sp = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 16)
    sp.open()
    sp.append(lines(0, 10), 10)
    ch = sp.read(sp.live_segment(), 4)
    assert ch is not None
    sp.ack(ch)
    # simulate kill -9 in the middle of a write: a partial line at the end of the file
    with open(sp.live_segment().path, "ab") as fh:
        fh.write(b"m,device=d v=99")
    del sp  # no close(): as after kill -9
    sp2 = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 16)
    sp2.open()
    assert drain(sp2) == lines(4, 10).splitlines()
    sp2.close()


@pytest.mark.parametrize("tail", [b"\0" * (80 << 10), b"m,device=d v=9" + b"\0" * (200 << 10)])
def test_a_torn_tail_longer_than_a_read_step_keeps_every_whole_line_before_it(
    tmp_path: Path, tail: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """A power cut leaves an unsynced write's blocks zero-filled: a tail with no newline in its last 64 KiB (and
    here over three steps of the search). The whole segment was cut, fsynced lines too, and nothing counted it."""
    sp = Spool(tmp_path, max_bytes=64 << 20, segment_bytes=16 << 20)
    sp.open()
    sp.append(lines(0, 5000), 5000)  # fsynced: MQTT messages were acknowledged on this
    sp.close()
    seg = sorted(tmp_path.glob("seg-*.lp"))[-1]
    good = seg.stat().st_size
    with open(seg, "ab") as fh:
        fh.write(tail)
    sp2 = Spool(tmp_path, max_bytes=64 << 20, segment_bytes=16 << 20)
    with caplog.at_level("WARNING", logger="sitegw.spool"):
        sp2.open()
    assert seg.stat().st_size == good and sp2.torn_bytes == len(tail)
    assert f"cut {len(tail)} bytes" in caplog.text
    m = Metrics(live=lambda: _figures(sp2))
    assert f"sitegw_spool_torn_bytes_total {len(tail)}\n" in m.render(0, 0, 0)
    assert drain(sp2) == lines(0, 5000).splitlines()
    sp2.close()


def test_a_segment_with_no_whole_line_is_cut_to_nothing(tmp_path: Path) -> None:
    (tmp_path / "seg-0000000000000001.lp").write_bytes(b"\0" * (100 << 10))
    sp = Spool(tmp_path, max_bytes=64 << 20, segment_bytes=16 << 20)
    sp.open()
    assert sp.disk_bytes() == 0 and sp.torn_bytes == 100 << 10
    sp.close()


def _figures(sp: Spool) -> LiveFigures:
    return LiveFigures(0.0, sp.max_bytes, {}, {}, {}, {}, {}, {}, 0, spool_torn_bytes=sp.torn_bytes)


def test_bound_drops_oldest_and_counts(tmp_path: Path) -> None:
    sp = Spool(tmp_path, max_bytes=64 * 1024, segment_bytes=8 * 1024)
    sp.open()
    total = 0
    for i in range(0, 6000, 100):
        sp.append(lines(i, i + 100), 100)
        total += 100
    assert sp.disk_bytes() <= 64 * 1024
    remaining = drain(sp)
    assert sp.dropped_lines > 0
    assert sp.dropped_lines + len(remaining) == total  # every line is either delivered or counted
    # what remains is the newest data, in order
    assert remaining == lines(total - len(remaining), total).splitlines()
    sp.close()


async def test_pipeline_fsyncs_before_an_ack_and_polled_lines_within_the_interval(tmp_path: Path) -> None:
    sp = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 16, sync_interval_s=0.3)
    sp.open()
    pipe = Pipeline(sp, {"D": series_tags("gas_detector", "s", "D", "")}, Metrics())
    task = asyncio.create_task(pipe.run())
    try:
        ts = 1_795_224_600_000_000_000
        # a poll: nobody waits on it, so it is written at once and its fsync waits (no more input comes)
        await pipe.submit([Reading("D", "lel", 1.0, ts)])
        await pipe.drained()
        assert sp.pending_bytes() > 0 and sp.sync_due_in() is not None
        # ... until the interval is over: then the pipeline syncs it without being asked
        async with asyncio.timeout(10):
            while sp.sync_due_in() is not None:  # noqa: ASYNC110 (polling the spool: there is no event for it)
                await asyncio.sleep(0.05)
        # an MQTT message: its acknowledgement runs only after its lines are fsynced
        synced_at_ack: list[bool] = []
        await pipe.submit([Reading("D", "lel", 2.0, ts + 1)], lambda: synced_at_ack.append(sp.sync_due_in() is None))
        await pipe.drained()
        assert synced_at_ack == [True]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        sp.close()
    again = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 16)
    again.open()
    assert drain(again) == [
        b"gas_detector,device=D,site=s lel=1.0 1795224600000000000",
        b"gas_detector,device=D,site=s lel=2.0 1795224600000000001",
    ]


class _Acks:
    """An MQTT batch's acknowledger as the pipeline sees it: callable, and how many messages it acknowledges."""

    def __init__(self, sp: Spool, log: list[tuple[int, bool]], messages: int) -> None:
        self.sp, self.log, self.messages = sp, log, messages

    def __call__(self) -> None:
        self.log.append((self.messages, self.sp.sync_due_in() is None))


async def test_acknowledgements_linger_to_share_one_fsync_but_never_fill_the_in_flight_window(tmp_path: Path) -> None:
    # messages arriving a few ms apart: one fsync for all of them, each acknowledged only after it; as many as
    # ack_linger_messages waiting: the fsync is at once, whatever is left of the linger
    sp = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 16, sync_interval_s=5.0)
    sp.open()
    tags = {"D": series_tags("gas_detector", "s", "D", "")}
    pipe = Pipeline(sp, tags, Metrics(), ack_linger_s=0.5, ack_linger_messages=10)
    task = asyncio.create_task(pipe.run())
    ts = 1_795_224_600_000_000_000
    acked: list[tuple[int, bool]] = []
    try:
        for i in range(4):  # 4 batches of 2 messages, 10 ms apart: inside the linger, under the bound
            await pipe.submit([Reading("D", "lel", float(i), ts + i)], _Acks(sp, acked, 2))
            await asyncio.sleep(0.01)
        assert acked == [] and sp.fsyncs.inline_syncs + sp.fsyncs.thread_syncs == 0
        await pipe.drained()  # the linger ends: one fsync, then every acknowledgement
        assert acked == [(2, True)] * 4
        assert sp.fsyncs.inline_syncs + sp.fsyncs.thread_syncs == 1
        acked.clear()
        await pipe.submit([Reading("D", "lel", 9.0, ts + 9)], _Acks(sp, acked, 4))
        await pipe.submit([Reading("D", "lel", 10.0, ts + 10)], _Acks(sp, acked, 6))  # 10 waiting: at once
        async with asyncio.timeout(0.4):  # well inside the 0.5 s linger
            await pipe.drained()
        assert acked == [(4, True), (6, True)]
        assert sp.fsyncs.inline_syncs + sp.fsyncs.thread_syncs == 2
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        sp.close()


class _FullOnce(Spool):
    """The spool's disk full for one write (ENOSPC), as a full tmpfs answers, then free again."""

    full = True

    def write(self, data: bytes, lines: int) -> None:
        if self.full:
            self.full = False
            raise OSError(errno.ENOSPC, "No space left on device")
        super().write(data, lines)


async def test_a_batch_whose_write_failed_is_never_acknowledged_by_the_restarted_pipeline(tmp_path: Path) -> None:
    # the write raises, the pipeline task ends and its supervisor starts run() again on the same pipeline: the
    # message whose lines never reached the spool must stay unacknowledged (the broker sends it again), while the
    # next one is acknowledged after its own write and fsync
    sp = _FullOnce(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 16, sync_interval_s=1.0)
    sp.open()
    pipe = Pipeline(sp, {"D": series_tags("gas_detector", "s", "D", "")}, Metrics(), ack_linger_s=0.01)
    ts = 1_795_224_600_000_000_000
    acked: list[tuple[int, bool]] = []
    try:
        await pipe.submit([Reading("D", "lel", 1.0, ts)], _Acks(sp, acked, 1))
        with pytest.raises(OSError, match="No space"):
            await pipe.run()
        task = asyncio.create_task(pipe.run())  # as gateway.tasks restarts it
        await asyncio.sleep(0.1)
        assert acked == []
        await pipe.submit([Reading("D", "lel", 2.0, ts + 1)], _Acks(sp, acked, 1))
        async with asyncio.timeout(5):
            await pipe.drained()
        assert acked == [(1, True)]
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    finally:
        sp.close()


def test_a_full_segment_stays_live_and_only_an_outage_leaves_backlog(tmp_path: Path) -> None:
    sp = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=200)
    sp.open()
    for i in range(0, 30, 3):
        sp.append(lines(i, i + 3), 3)
    assert len(sp.segments) > 2  # it rolled as segments filled
    assert sp.backlog_segment() is None  # and none of it is backlog: the database never failed
    assert read_all(sp, "live") == lines(0, 30).splitlines()  # live, in order, across the segments
    sp.append(lines(30, 33), 3)
    sp.roll(backlog=True)  # the database failed: what it did not take is backlog
    sp.append(lines(33, 35), 2)
    assert read_all(sp, "live") == lines(33, 35).splitlines()  # what came after the failure goes first
    assert read_all(sp, "backlog") == lines(30, 33).splitlines()
    sp.append(lines(35, 36), 1)
    sp.close()
    again = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=200)
    again.open()  # after a restart the older files are backlog; the last one, appended to again, is live
    again.append(lines(36, 37), 1)
    assert read_all(again, "live") == lines(35, 37).splitlines() and again.backlog_segment() is None
    again.close()


def test_fsync_runs_inline_only_while_the_disk_is_quick() -> None:
    from gateway.spool_sync import FAST_FSYNC_S, SLOW_FSYNC_S, FsyncTimer

    t = FsyncTimer()
    assert not t.inline  # the first fsync goes to a worker thread: nothing is known of the disk yet
    for _ in range(3):
        t.took(FAST_FSYNC_S / 5)
    assert t.inline  # quick ones: inline, no thread hop
    t.took(SLOW_FSYNC_S * 3)
    assert not t.inline  # one slow one sends it back to the thread at once
    t.took(FAST_FSYNC_S / 5)
    assert not t.inline  # and it stays there until the average is quick again
    for _ in range(20):
        t.took(FAST_FSYNC_S / 5)
    assert t.inline
    for _ in range(20):
        t.took(FAST_FSYNC_S * 1.5)  # steadily a little slower than the hop is worth, never "slow"
    assert not t.inline


async def test_a_spool_on_a_quick_disk_stops_paying_the_thread_hop(tmp_path: Path) -> None:
    sp = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 16)
    sp.open()
    for i in range(30):
        sp.write(lines(i, i + 1), 1)
        await sp.sync_async()
    assert sp.fsyncs.thread_syncs + sp.fsyncs.inline_syncs == 30
    assert sp.fsyncs.thread_syncs >= 1  # the first, at least
    if sp.fsyncs.avg_s is not None and sp.fsyncs.avg_s < 0.0005 / 2:
        assert sp.fsyncs.inline_syncs > 0  # this disk is quick: it moved inline
    sp.close()
    again = Spool(tmp_path, 1 << 20, 1 << 16)
    again.open()
    assert read_all(again, "live") == lines(0, 30).splitlines()  # both ways, every line is there
    again.close()


async def test_with_input_queued_the_fsync_stays_in_the_thread(tmp_path: Path) -> None:
    """Inline only when nothing else waits: with input queued, the thread lets the next batch be taken meanwhile."""
    sp = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 16)
    sp.open()
    sp.fsyncs.inline = True  # as on a quick disk
    sp.fsyncs.avg_s = 0.0001
    sp.write(lines(0, 1), 1)
    await sp.sync_async(busy=True)
    assert (sp.fsyncs.thread_syncs, sp.fsyncs.inline_syncs) == (1, 0)
    sp.fsyncs.inline = True  # whatever that fsync took on this machine's disk
    sp.write(lines(1, 2), 1)
    await sp.sync_async(busy=False)
    assert (sp.fsyncs.thread_syncs, sp.fsyncs.inline_syncs) == (1, 1)
    assert sp.sync_due_in() is None  # synced either way
    sp.close()


async def test_while_a_database_write_is_in_flight_the_fsync_goes_to_the_thread(tmp_path: Path) -> None:
    """The database fsyncs its own log while it takes a write, often on the spool's disk: an inline fsync of ours
    then took 3-7 ms in the event loop, once a second. A database (an HTTP server answering as InfluxDB 1.x does)
    holds the drainer's write for 0.5 s; meanwhile the fsync goes to the thread, and inline again after."""
    from gateway.influx import InfluxV1Writer
    from gateway.writer import SpoolDrainer
    from tests.receivers import Reply, http_receiver

    async def until(cond: Callable[[], bool]) -> None:
        for _ in range(500):
            if cond():
                return
            await asyncio.sleep(0.01)
        raise AssertionError("timed out")

    with http_receiver() as db:
        db.script("/write", [Reply(status=204, delay_s=0.5), *[Reply(status=204)] * 5])
        sp = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 16)
        sp.open()
        writer = InfluxV1Writer(db.url, "sitegw")
        drainer = SpoolDrainer(sp, writer, Metrics(), 100, 1000.0, tmp_path / "rejected.lp")
        task = asyncio.create_task(drainer.run())
        try:
            sp.fsyncs.inline, sp.fsyncs.avg_s = True, 0.0001  # as on a quick disk
            sp.write(lines(0, 1), 1)
            await sp.sync_async()
            assert (sp.fsyncs.thread_syncs, sp.fsyncs.inline_syncs) == (0, 1)  # nothing in flight yet
            await until(lambda: sp.fsyncs.db_writes == 1)  # the drainer's write of that line is held
            sp.fsyncs.inline = True  # whatever that fsync took on this machine's disk
            sp.write(lines(1, 2), 1)
            await sp.sync_async()
            assert (sp.fsyncs.thread_syncs, sp.fsyncs.inline_syncs) == (1, 1)
            await until(lambda: sp.fsyncs.db_writes == 0 and sp.acked_lines == 2)
            sp.fsyncs.inline = True
            sp.write(lines(2, 3), 1)
            await sp.sync_async()  # before the drainer runs again: nothing in flight
            assert (sp.fsyncs.thread_syncs, sp.fsyncs.inline_syncs) == (1, 2)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await writer.aclose()
            sp.close()


async def test_a_bisection_cut_short_by_an_outage_dead_letters_its_bad_line_once(tmp_path: Path) -> None:
    """A database (an HTTP server answering as InfluxDB 1.x does) refuses one line of four as invalid (400), then
    fails (503) while the rest of the bisection is written. The chunk is sent again whole and bisected again: the
    bad line was appended to rejected.lp and counted in sitegw_rejected_lines_total a second time."""
    from gateway.influx import InfluxV1Writer
    from gateway.writer import SpoolDrainer
    from tests.receivers import Reply, http_receiver

    bad = Reply(status=400, json={"error": 'partial write: field type conflict: input field "v" is type string'})
    with http_receiver() as db:
        # 4 lines: refused; lines 0-1: refused; line 0: refused (kept); line 1: written; lines 2-3: the outage.
        # Again: 4 lines refused, 0-1 refused, 0 refused (known), 1, then 2-3 written
        ok, down = Reply(status=204), Reply(status=503)
        db.script("/write", [bad, bad, bad, ok, down, bad, bad, bad, ok, ok])
        sp = Spool(tmp_path / "spool", max_bytes=1 << 20, segment_bytes=1 << 16)
        sp.open()
        writer = InfluxV1Writer(db.url, "sitegw")
        metrics = Metrics()
        drainer = SpoolDrainer(sp, writer, metrics, 100, 1000.0, tmp_path / "rejected.lp", linger_s=0)
        sp.write(lines(0, 4), 4)
        await sp.sync_async()
        task = asyncio.create_task(drainer.run())
        try:
            for _ in range(500):
                if sp.acked_lines == 4:
                    break
                await asyncio.sleep(0.01)
            assert sp.acked_lines == 4
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await writer.aclose()
            sp.close()
        writes = [r for r in db.requests if r.path == "/write"]
    assert len(writes) == 10  # the whole bisection was made twice: the test shows the second one
    assert metrics.write_failures == 1
    assert metrics.rejected_lines == 1
    kept = (tmp_path / "rejected.lp").read_bytes().splitlines(keepends=True)
    assert len(kept) == 2 and kept[1] == lines(0, 1)  # its comment line, then the line


async def test_a_redone_bisection_counts_each_bad_line_once_however_many(tmp_path: Path) -> None:
    """Many bad lines in a chunk (a field's type conflict refuses every line of a series; a chunk holds up to 5 000
    lines), an outage after the bisection found them all. With a first-in-first-out memory of 1 000 lines, a chunk
    with more than that had each evicted just before the redone bisection met it: all appended and counted again
    (an outside review). The drainer keeps each unacknowledged chunk's dead-lettered lines now."""
    from gateway.influx import InfluxV1Writer
    from gateway.writer import SpoolDrainer
    from tests.receivers import Reply, Request, http_receiver

    n_bad = 25
    data = b"".join(f'm,device=d bad="x" {i}\n'.encode() for i in range(n_bad))
    data += b"".join(f"m,device=d v={i} {i}\n".encode() for i in range(n_bad, n_bad + 3))
    metrics = Metrics()
    tripped: list[int] = []

    def answer(req: Request) -> Reply:
        if req.path != "/write":
            return Reply(json={"results": []})
        if metrics.rejected_lines == n_bad and not tripped:  # the outage, once every bad line is found
            tripped.append(1)
            return Reply(status=503)
        if b"bad=" in req.body:
            return Reply(status=400, json={"error": 'partial write: field type conflict: input field "bad"'})
        return Reply(status=204)

    with http_receiver() as db:
        db.answer = answer  # type: ignore[method-assign]
        sp = Spool(tmp_path / "spool", max_bytes=1 << 24, segment_bytes=1 << 22)
        sp.open()
        writer = InfluxV1Writer(db.url, "sitegw")
        drainer = SpoolDrainer(sp, writer, metrics, 5000, 1000.0, tmp_path / "rejected.lp", linger_s=0)
        sp.write(data, n_bad + 3)
        await sp.sync_async()
        task = asyncio.create_task(drainer.run())
        try:
            for _ in range(3000):
                if sp.acked_lines == n_bad + 3:
                    break
                await asyncio.sleep(0.01)
            assert sp.acked_lines == n_bad + 3 and tripped
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await writer.aclose()
            sp.close()
    assert metrics.rejected_lines == n_bad
    assert (tmp_path / "rejected.lp").read_bytes().count(b'bad="x"') == n_bad
    assert not drainer._kept  # forgotten once the chunk was acknowledged
