"""Durable, byte-bounded spool of line-protocol lines between the pipeline and the database writer."""

from __future__ import annotations

# Layout: `seg-<16 digits>.lp` files, append-only, plus `acked.json` ({segment: acknowledged byte offset}).
# A line leaves the spool only when the writer acknowledges it after the database accepted it. Appends are
# fsynced per batch; a torn tail line left by `kill -9` is cut on open. Over the bound, the oldest segment is
# dropped and every line in it is counted, never silently.
import asyncio
import contextlib
import errno
import logging
import os
import time
from pathlib import Path

from gateway.spool_segments import (
    Chunk,
    Segment,
    acked_json,
    load_segments,
    oldest_pending_age,
    read_acked,
    read_chunk,
    repair_tail,
    segment_path,
    segments_to_drop,
)
from gateway.spool_sync import FsyncTimer, FsyncWorker, count_lines, drained_by, write_state

log = logging.getLogger("sitegw.spool")


# After a kill -9 the lines acknowledged since acked.json was last written are sent again (and overwrite the same
# points): at most this many seconds of them.
STATE_SAVE_S = 1.0
OUTAGE_ROLL = 1 / 16  # of segment_bytes (4 MiB: 256 KiB): the live segment's size that starts a new one (`outage_roll`)


class Spool:
    def __init__(
        self, directory: Path, max_bytes: int, segment_bytes: int, fsync: bool = True, sync_interval_s: float = 0.0
    ) -> None:
        self.dir = Path(directory)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        self.sync_interval_s = sync_interval_s  # how long written lines may wait for their fsync (see Pipeline.run)
        self._unsynced_since: float | None = None  # monotonic time of the oldest write not yet fsynced
        self.segments: list[Segment] = []
        self._fd: int | None = None
        self.dropped_lines = 0
        self.torn_bytes = 0  # cut on open: a torn last line left by kill -9 or a power cut
        # the chunk the writer is sending (`sending` / `sent`): a segment dropped at the bound meanwhile counts only
        # the lines after it, and the chunk is counted dropped only if its write then fails (it was counted twice,
        # written and dropped, when the write succeeded)
        self._in_flight: Chunk | None = None
        self._in_flight_orphaned = False
        self.appended_lines = 0
        self.acked_lines = 0
        self._dropping = False  # inside a drop episode: log once
        self._state_dirty = False  # acknowledged offsets changed since acked.json was written
        self._state_saved_at = 0.0  # monotonic time of the last write of acked.json
        self.state_saves = 0
        self.data_event = asyncio.Event()  # set on append: the writer has work
        self.ack_event = asyncio.Event()  # set on ack: for whoever waits for the spool to drain
        self._state = self.dir / "acked.json"
        self.fsyncs = FsyncTimer()
        self._fsyncer = FsyncWorker(f"sitegw-fsync-{self.dir.name}")
        # segments from this sequence number on hold live data, drained in order at full speed; older ones are the
        # backlog an outage (or a restart) left behind, replayed at a limited rate. A segment that fills up is
        # not an outage: the live data goes on in the next one and stays live.
        self.live_from = 1

    # ---- lifecycle -------------------------------------------------------------------------
    def open(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.segments = load_segments(self.dir, read_acked(self._state))
        if self.segments:
            self.torn_bytes += repair_tail(self.segments[-1])
        else:
            self._new_segment(1)
        last = self.segments[-1]
        self.live_from = last.seq  # appends go on in the last file; everything older is backlog from before
        self._fd = os.open(last.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if self.pending_bytes():
            self.data_event.set()
            log.info(
                "spool: %d bytes in %d segment(s) from before the restart, to be replayed",
                self.pending_bytes(),
                len(self.segments),
            )

    def close(self) -> None:
        if self._fd is not None:
            self.sync()
            os.close(self._fd)
            self._fd = None
        self._fsyncer.close()
        self._save_state()

    def _new_segment(self, seq: int) -> None:
        path = segment_path(self.dir, seq)
        path.touch()
        self.segments.append(Segment(seq, path, 0, 0))

    # ---- writing side ----------------------------------------------------------------------
    def append(self, data: bytes, lines: int) -> None:
        """Append whole lines (each ending in \\n); durable (fsynced) when this returns."""
        if data:
            self.write(data, lines)
            self.sync()

    def write(self, data: bytes, lines: int) -> None:
        """Append whole lines without waiting for the disk: safe from `kill -9` (they are in the kernel) at once,
        from a power cut after the next `sync` / `sync_async`, which must follow within `sync_interval_s`."""
        if not data:
            return
        try:
            self._append(data)
        except OSError as err:
            # a disk full below the spool's bound is the bound: the oldest data goes (counted), never the newest
            if err.errno != errno.ENOSPC or not self._drop_for_room(len(data) + 8192):  # (and a block or two)
                raise
            self._append(data)
        if self.fsync and self._unsynced_since is None:
            self._unsynced_since = time.monotonic()
        active = self.segments[-1]
        now = time.time()
        if not active.marks or now - active.marks[-1][1] >= 1.0:
            active.marks.append((active.size, now))
        active.size += len(data)
        self.appended_lines += lines
        if active.size >= self.segment_bytes:
            try:  # the lines are in: a roll that fails (no inode left for a new file) is tried at the next write
                self.roll()
            except OSError as err:
                log.warning("spool: starting a new segment failed (%s); the current one goes on", err)
        self._enforce_bound()
        self.data_event.set()

    def _append(self, data: bytes) -> None:
        assert self._fd is not None, "spool not open"
        written = os.write(self._fd, data)
        if written != len(data):
            # the disk filled up inside the batch: take the torn part back (the file holds whole lines only, and the
            # readers go by `size`) and fail as a full disk does; the caller has the batch delivered again
            os.ftruncate(self._fd, self.segments[-1].size)
            # (its text says what the system's own ENOSPC says, as operators and /health read it, then where)
            raise OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)}: spool segment {self.segments[-1].path.name}: "
                          f"disk full after {written} of {len(data)} bytes (taken back)")  # fmt: skip

    def _drop_for_room(self, needed: int) -> bool:
        """Drop the oldest segments until `needed` bytes fit (`segments_to_drop`); False when they cannot."""
        n = segments_to_drop(self.dir, self.segments, needed)
        if n is None:
            return False
        for _ in range(n):
            self._drop_oldest(f"the disk is full ({self.disk_bytes()} bytes spooled, below the bound {self.max_bytes})")
        self._save_state()
        return True

    def sync(self) -> None:
        # (a failed fsync kept for the pipeline's waiting acknowledgements is theirs, raised by sync_async; the lines
        # written since then are fsynced here as usual)
        if self._unsynced_since is not None:
            assert self._fd is not None
            self._unsynced_since = None
            try:
                os.fsync(self._fd)
            except OSError as err:
                self.fsyncs.fail(err)
                raise

    async def sync_async(self, busy: bool = False) -> None:
        """`sync` with the fsync in a worker thread: the event loop goes on taking input meanwhile, and what arrives
        during one fsync makes the next batch (group commit paced by the disk, with no timer). On a quick disk and
        with nothing else waiting (`busy` False), the fsync runs inline: the thread hop would cost more than it."""
        failed, self.fsyncs.failed = self.fsyncs.failed, None
        if failed is not None:
            raise failed
        if self._unsynced_since is not None:
            assert self._fd is not None
            self._unsynced_since = None
            if self.fsyncs.inline_now() and not busy:  # no thread hop, nothing to overlap it with
                self.fsyncs.inline_syncs += 1
                t0 = time.perf_counter()
                os.fsync(self._fd)
                self.fsyncs.took(time.perf_counter() - t0)
                return
            # a duplicate descriptor, closed by the thread: a roll may close ours meanwhile, a cancelled wait here
            # leaves nothing behind
            self.fsyncs.thread_syncs += 1
            try:
                self.fsyncs.took(await self._fsyncer.sync(os.dup(self._fd)))
            except OSError as err:
                if self._unsynced_since is not None:  # lines written meanwhile: their waiters hear it next time
                    self.fsyncs.fail(err)
                raise

    def sync_due_in(self) -> float | None:
        """Seconds until written lines must be fsynced (<= 0: now); None when everything written is on disk."""
        if self.fsyncs.failed is not None:
            return 0.0  # the next sync_async raises it to those waiting
        if self._unsynced_since is None:
            return None
        return self._unsynced_since + self.sync_interval_s - time.monotonic()

    def roll(self, backlog: bool = False) -> None:
        """Start a new segment. With `backlog` (the database is unreachable) every older segment becomes backlog,
        replayed at a limited rate once it is back; a roll because a segment is full keeps them live."""
        if backlog:
            self.live_from = self.segments[-1].seq + (self.segments[-1].size > 0)
        if self.segments[-1].size == 0:
            return
        assert self._fd is not None
        self.sync()  # rare (once a segment): the closed file's lines go to disk now, in the loop
        # the new file first: its creation may fail (ENOSPC: no inode left), and closing the old one before left
        # the spool writing to a closed descriptor, or into whatever file reused its number
        seq = self.segments[-1].seq + 1
        fd = os.open(segment_path(self.dir, seq), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.close(self._fd)
        self._fd = fd
        self._new_segment(seq)

    def outage_roll(self) -> None:
        """The database refused a write: what the spool holds is backlog once it is back (replayed at a limited
        rate), what comes next is live. A new segment only once the live one holds OUTAGE_ROLL of `segment_bytes`:
        one per failed attempt (<= 2 s apart) made ~43 000 files a day of outage. So an outage's segments are at
        least that big (at most max_bytes / that many), and what goes first when it is over at most that much more
        than its last interval."""
        if self.segments[-1].size >= self.segment_bytes * OUTAGE_ROLL:
            self.roll(backlog=True)
        else:
            self.live_from = self.segments[-1].seq  # the older ones are backlog; this one stays live

    def _enforce_bound(self) -> None:
        total = self.disk_bytes()
        if total <= self.max_bytes:
            if self._dropping and total < self.max_bytes * 0.9:
                self._dropping = False
                log.info(
                    "spool: back under its bound (%d of %d bytes); drop episode over, %d lines dropped in all",
                    total,
                    self.max_bytes,
                    self.dropped_lines,
                )
            return
        while self.disk_bytes() > self.max_bytes and len(self.segments) > 1:
            self._drop_oldest(f"full ({total} bytes > bound {self.max_bytes})")
        self._save_state()

    def _drop_oldest(self, why: str) -> None:
        seg = self.segments.pop(0)
        start = seg.acked
        if self._in_flight is not None and self._in_flight.seq == seg.seq:
            start, self._in_flight_orphaned = self._in_flight.end, True  # the chunk is counted in `sent`
        self.dropped_lines += count_lines(seg.path, start, seg.size)
        with contextlib.suppress(FileNotFoundError):
            os.truncate(seg.path, 0)  # its blocks freed now, even while another descriptor (an fsync's) holds it
        seg.path.unlink(missing_ok=True)
        if not self._dropping:
            self._dropping = True
            log.error(
                "spool: %s: dropping the oldest data; %d lines dropped so far (metric "
                "sitegw_spool_dropped_lines_total). Is the database reachable?",
                why,
                self.dropped_lines,
            )

    # ---- reading side ----------------------------------------------------------------------
    def pending_bytes(self) -> int:
        return sum(s.size - s.acked for s in self.segments)

    async def written_by(self, deadline: float) -> bool:
        """Wait until the database has every line (True) or time.monotonic() reaches `deadline` (False)."""
        return await drained_by(self.pending_bytes, self.ack_event, deadline)

    def disk_bytes(self) -> int:
        return sum(s.size for s in self.segments)

    def oldest_pending_age_s(self, now: float | None = None) -> float:
        """Seconds since the oldest line not yet acknowledged by the database was appended; 0.0 when drained.
        To about a second (a mark a second); for segments from before a restart, from the file's modification."""
        return oldest_pending_age(self.segments, time.time() if now is None else now)

    def live_segment(self) -> Segment:
        """The oldest live segment with unacknowledged lines (the newest when all are drained): live data in order
        across the segments it filled."""
        for s in self.segments:
            if s.seq >= self.live_from and s.acked < s.size:
                return s
        return self.segments[-1]

    def backlog_segment(self) -> Segment | None:
        """The oldest segment from before the last outage or restart with unacknowledged lines."""
        for s in self.segments:
            if s.seq >= self.live_from:
                break
            if s.acked < s.size:
                return s
        return None

    def read(self, seg: Segment, max_lines: int, max_bytes: int = 8 << 20) -> Chunk | None:
        """Up to `max_lines` whole lines after the acknowledged offset of `seg`."""
        return read_chunk(seg, max_lines, max_bytes)

    def sending(self, chunk: Chunk) -> None:
        """The writer is sending `chunk` to the database; `sent` must follow, whatever the outcome."""
        self._in_flight, self._in_flight_orphaned = chunk, False

    def sent(self, chunk: Chunk, written: bool) -> None:
        """The write of `chunk` ended: if its segment was dropped at the bound meanwhile and the database did not
        take it, its lines are lost now and counted as dropped (if it took them, they are counted written)."""
        if self._in_flight is chunk:
            if self._in_flight_orphaned and not written:
                self.dropped_lines += chunk.lines
            self._in_flight, self._in_flight_orphaned = None, False

    def ack(self, chunk: Chunk, save: bool = True) -> None:
        """The database has these lines: advance the segment's offset; delete it when done (unless live).

        With `save=False` the offsets are only marked changed, for `save_state_async` to write."""
        for i, s in enumerate(self.segments):
            if s.seq == chunk.seq:
                if chunk.start != s.acked:
                    raise RuntimeError(f"spool: out-of-order ack for segment {s.seq}: {chunk.start} != {s.acked}")
                s.acked = chunk.end
                self.acked_lines += chunk.lines
                while len(s.marks) > 1 and s.marks[1][0] <= s.acked:
                    s.marks.popleft()  # the mark still in effect at the acked offset is the one kept
                self.ack_event.set()
                if s.acked >= s.size and i < len(self.segments) - 1:
                    self.segments.pop(i)
                    s.path.unlink(missing_ok=True)
                break
        else:
            return  # the segment was dropped at the bound meanwhile: the lines after the chunk are counted dropped
        live = self.segments[-1]
        if live.acked >= live.size and live.size >= self.segment_bytes // 2:
            # keep the live file from growing without end in steady state
            self.roll()
            old = self.segments.pop(-2)
            old.path.unlink(missing_ok=True)
        if save:
            self._save_state()
        else:
            self._state_dirty = True

    def _save_state(self) -> None:
        self._state_dirty = False
        self.state_saves += 1
        write_state(self._state, acked_json(self.segments), ".tmp")

    @property
    def state_dirty(self) -> bool:
        """Acknowledged offsets changed since acked.json was written."""
        return self._state_dirty

    def state_save_due_in(self) -> float:
        """Seconds until `save_state_async` writes changed offsets without being forced (0: now)."""
        return max(0.0, self._state_saved_at + STATE_SAVE_S - time.monotonic())

    async def save_state_async(self, force: bool = False) -> None:
        """Write the acknowledged offsets, if they changed, from a worker thread: a rename can wait behind other
        files' fsyncs, and the event loop must not (such waits were 30+ ms stalls in the alarm-latency benchmark).
        A stale file, if a synchronous save overtakes this one, only means lines sent again after a restart.

        While data streams, at most once per STATE_SAVE_S (one file write per database write was a tenth of a
        polled site's CPU); `force` when the writer goes idle, so a quiet spool's file is never behind."""
        now = time.monotonic()
        if self._state_dirty and (force or now - self._state_saved_at >= STATE_SAVE_S):
            self._state_dirty = False
            self._state_saved_at = now
            self.state_saves += 1
            await asyncio.to_thread(write_state, self._state, acked_json(self.segments), ".tmp-async")
