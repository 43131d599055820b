"""Drains the spool into the database: live data first, backlog replayed in order at a limited rate."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from pathlib import Path
from typing import Protocol

from gateway.metrics import Metrics
from gateway.spool import Spool
from gateway.spool_segments import Chunk
from telemetry.clock import to_next_tick

log = logging.getLogger("sitegw.writer")


class Writer(Protocol):
    target: str

    async def write(self, data: bytes) -> None: ...

    async def aclose(self) -> None: ...


class SpoolDrainer:
    """The only consumer of the spool. Deletes nothing the database has not acknowledged."""

    def __init__(
        self,
        spool: Spool,
        writer: Writer,
        metrics: Metrics,
        batch_lines: int,
        replay_lines_per_s: float,
        rejected_file: Path,
        linger_s: float = 1.0,  # spool.write_linger_s
        label: str = "database",  # how the logs name its sink ("second sink" for second_sink:)
    ) -> None:
        self.label = label
        self.spool = spool
        self.writer = writer
        self.metrics = metrics
        self.batch_lines = batch_lines
        self.replay_rate = replay_lines_per_s
        self.rejected_file = rejected_file
        self._tokens = float(batch_lines)
        self._last_refill = time.monotonic()
        self._outage_since: float | None = None
        self._backoff = 0.5
        self.db_up = True
        self.linger_s = linger_s
        self._last_live_write = 0.0
        # the lines dead-lettered from each chunk not yet acknowledged (`_bisect`), by (segment, start): a bisection
        # cut short by an outage is made again on the whole chunk, and a line it had found was appended and counted
        # a second time. Forgotten when the chunk is acknowledged (a first-in-first-out bound of 1 000 lines let
        # a chunk with more bad lines than that count every one again: an outside review)
        self._kept: dict[tuple[int, int], set[bytes]] = {}

    @property
    def down_since(self) -> float | None:
        """time.monotonic() of the first failed write of the current outage; None while writes succeed."""
        return self._outage_since

    async def run(self) -> None:
        from gateway.influx import WriteError

        while True:
            if self._busy():
                # Data is streaming in: let it gather for up to `linger_s` so one request (and one ack-state
                # save) carries many pipeline batches. A reading on a quiet site is written at once. A wait of
                # under a twentieth of the linger is not made: polls written once a second (pipeline.py) came a
                # few ms before the linger's end, and a wake-up of its own cost more than those ms gather.
                wait = self._last_live_write + self.linger_s - time.monotonic()
                if wait > self.linger_s / 20:
                    await asyncio.sleep(wait)
            chunk = self.spool.read(self.spool.live_segment(), self.batch_lines)
            backlog = self.spool.backlog_segment()
            if chunk is None and backlog is None:
                self.spool.data_event.clear()
                if self.spool.state_dirty:
                    # idle with offsets not yet on disk: they are saved when their second is up, at the next whole
                    # second of the loop's clock (with the polls' wake-up, not one of its own), unless lines come
                    # first (then the next write saves them, on time)
                    due = self.spool.state_save_due_in()
                    due += to_next_tick(asyncio.get_running_loop().time() + due, 1.0)
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(due):
                            await self.spool.data_event.wait()
                    if not self.spool.data_event.is_set():
                        await self.spool.save_state_async(force=True)
                    continue
                await self.spool.data_event.wait()
                continue
            try:
                sent = False
                if chunk is not None:
                    self._last_live_write = time.monotonic()
                    await self._send(chunk)
                    sent = True
                if backlog is not None:
                    budget = self._take_tokens()
                    if budget > 0:
                        bchunk = self.spool.read(backlog, budget)
                        if bchunk is not None:
                            await self._send(bchunk, replay=True)
                            self._tokens -= bchunk.lines
                            sent = True
                    if not sent:
                        # only backlog, and the replay budget is spent: wait for tokens or for live data
                        wait = max(0.01, (1 - self._tokens) / self.replay_rate)
                        self.spool.data_event.clear()
                        with contextlib.suppress(TimeoutError):  # not wait_for: it can lose a cancel (gh-86296)
                            async with asyncio.timeout(wait):
                                await self.spool.data_event.wait()
            except WriteError as err:
                await self._outage(err)

    def _busy(self) -> bool:
        """The last live write was less than `linger_s` ago, less than a full batch is pending and no backlog
        waits. A replay never lingers: with live lines streaming, it went at one backlog segment per linger (one
        per second, whatever `replay_lines_per_s` said; found by the second sink's outage test)."""
        if not self.linger_s or not self.db_up or time.monotonic() - self._last_live_write >= self.linger_s:
            return False
        if self.spool.backlog_segment() is not None:
            return False
        return 0 < self.spool.appended_lines - self.spool.acked_lines < self.batch_lines

    def _take_tokens(self) -> int:
        now = time.monotonic()
        self._tokens = min(float(self.batch_lines), self._tokens + (now - self._last_refill) * self.replay_rate)
        self._last_refill = now
        return int(min(self._tokens, self.batch_lines))

    async def _send(self, chunk: Chunk, replay: bool = False) -> None:
        from gateway.influx import WriteError

        t0 = time.perf_counter()
        written = False
        self.spool.sending(chunk)  # its segment may be dropped at the bound during the write: see Spool.sent
        try:
            try:
                self.spool.fsyncs.db_writes += 1
                try:
                    await self.writer.write(chunk.data)
                finally:
                    self.spool.fsyncs.db_writes -= 1
            except WriteError as err:
                if err.retryable:
                    raise
                kept = self._kept.setdefault((chunk.seq, chunk.start), set())
                if len(self._kept) > 64:  # chunks never acknowledged (dropped at the spool's bound): not kept for good
                    del self._kept[next(iter(self._kept))]
                await self._bisect(chunk.data, err, kept)
            written = True
        finally:
            self.spool.sent(chunk, written)
        self.metrics.observe_write(time.perf_counter() - t0, chunk.lines, replay)
        self.spool.ack(chunk, save=False)
        self._kept.pop((chunk.seq, chunk.start), None)
        await self.spool.save_state_async()
        if self._outage_since is not None:
            down = time.monotonic() - self._outage_since
            self._outage_since = None
            self._backoff = 0.5
            self.db_up = True
            # No roll here: the failed attempts made the backlog (see _outage), so the live segment holds what came
            # since the last such roll, and it goes first; the older segments are the backlog, replayed in order.
            log.info(
                "%s %s reachable again after %.1f s; replaying %d bytes of backlog at <= %g lines/s",
                self.label,
                self.writer.target,
                down,
                self.spool.pending_bytes(),
                self.replay_rate,
            )

    async def _bisect(self, data: bytes, err: Exception, kept: set[bytes]) -> None:
        """A batch the database refused as invalid: find the bad lines, dead-letter them, write the rest."""
        from gateway.influx import WriteError

        lines = data.splitlines(keepends=True)
        if len(lines) == 1:
            if lines[0] in kept:
                log.debug("%s rejected a line again (kept already): %s", self.label, err)
                return
            kept.add(lines[0])
            self.metrics.rejected_lines += 1
            self._keep_rejected(lines[0], err)
            log.error("%s rejected a line (kept in %s): %s", self.label, self.rejected_file, err)
            return
        mid = len(lines) // 2
        for half in (b"".join(lines[:mid]), b"".join(lines[mid:])):
            try:
                await self.writer.write(half)
            except WriteError as e:
                if e.retryable:
                    raise
                await self._bisect(half, e, kept)

    def _keep_rejected(self, line: bytes, err: Exception) -> None:
        # rare (a bug or a type conflict), so a blocking append is fine; the line is kept for a human
        with open(self.rejected_file, "ab") as fh:
            fh.write(f"# {time.strftime('%Y-%m-%dT%H:%M:%S%z')} {err}\n".encode() + line)

    async def _outage(self, err: Exception) -> None:
        self.metrics.write_failures += 1
        if self._outage_since is None:
            self._outage_since = time.monotonic()
            self.db_up = False
            log.warning("%s write failed, readings stay in its spool until it is back: %s", self.label, err)
        else:
            log.debug("%s still unreachable: %s", self.label, err)
        # Separate what came until now from what comes next: when the database is back, the readings of the last
        # attempt's interval are live data, sent at once, not the tail of the backlog. Rolling only once the database
        # was seen again put the readings of that last interval behind the whole replay (live data 7.6 s behind
        # after a 10-minute outage in the outage benchmark). Not a new segment at every attempt (Spool.outage_roll).
        self.spool.outage_roll()
        delay = self._backoff * (0.8 + 0.4 * random.random())
        # capped at 2 s: one small request every 2 s costs nothing, and after an outage the wall screens must show
        # live data again within seconds (the outage benchmark measured 17.5 s behind with a 15 s cap)
        self._backoff = min(self._backoff * 2, 2.0)
        await asyncio.sleep(delay)
