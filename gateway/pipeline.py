"""The pipeline: bounded intake -> quality marking -> latest values, listeners (alarms) and the durable spool."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from gateway.acks import acknowledge, held, redeliver
from gateway.latest import Latest
from gateway.marking import Marker
from gateway.metrics import Metrics
from gateway.timecheck import ClockCheck
from telemetry.lineproto import SeriesTags, encode_readings
from telemetry.reading import Reading

log = logging.getLogger("sitegw.pipeline")

Listener = Callable[[list[Reading]], None]


class SpoolIn(Protocol):
    """Where batches go: the spool (gateway/spool.py), or both sinks' (gateway/second_sink.py SpoolTee)."""

    def write(self, data: bytes, lines: int) -> None: ...
    def append(self, data: bytes, lines: int) -> None: ...
    def sync_due_in(self) -> float | None: ...
    async def sync_async(self, busy: bool = False) -> None: ...


_TICK: tuple[list[Reading], None] = ([], None)  # in the queue: an fsync may be due (Pipeline._next)
# a broker may grant less than the window announced on MQTT 5 (EMQX: its max_inflight, 32), then sends nothing
# more until acknowledged: with QUIET_AFTER messages waiting, QUIET_S without one ends the linger
QUIET_AFTER, QUIET_S = 16, 0.01


class Pipeline:
    """Drivers submit batches; one task processes everything queued as one batch (one spool write + fsync)."""

    def __init__(
        self,
        spool: SpoolIn,
        series: Mapping[str, SeriesTags],
        metrics: Metrics,
        queue_batches: int = 10000,
        max_batch_readings: int = 20000,
        clock_limits: Mapping[str, tuple[float, float]] | None = None,
        now_ns: Callable[[], int] = time.time_ns,
        derive: Callable[[list[Reading]], list[Reading]] | None = None,
        listeners: Sequence[Listener] = (),
        later: Sequence[Listener] = (),
        ack_linger_s: float = 0.0,
        ack_linger_messages: int = 1,
        poll_linger_s: float = 0.0,
    ) -> None:
        self.now_ns = now_ns  # the gateway's clock (injected in tests), against which device clocks are checked
        self.spool = spool
        # device clocks are checked when limits are given (the gateway gives them; tools replaying history do not)
        self.clock = ClockCheck(clock_limits, metrics) if clock_limits is not None else None
        self.series = series
        self.metrics = metrics
        self._q: asyncio.Queue[tuple[list[Reading], Callable[[], object] | None]] = asyncio.Queue(maxsize=queue_batches)
        self.max_batch = max_batch_readings
        self.latest = Latest()
        self._marker = Marker(self.latest, metrics)  # ranges, timestamp collisions, latest values (`mark`)
        self.listeners: list[Listener] = list(listeners)  # each sees every batch after quality marking, in order
        # listeners that may see a batch when it goes to the spool (the console's history), after `listeners`
        self.later: list[Listener] = list(later)
        self.derive = derive  # derived readings (crane load as % of its chart) join the batch before it is stored
        self._idle = asyncio.Event()
        self._idle.set()
        # Acknowledgements waiting for their fsync (see run): up to `ack_linger_s` after the first of them, so that
        # messages arriving a few ms apart share one fsync, and never for more than `ack_linger_messages` messages
        # (MQTT 5: `hold`, see _linger): a broker sends no more than its in-flight window unacknowledged
        self.ack_linger_s = ack_linger_s
        self.ack_linger_messages = ack_linger_messages
        self._acks: list[Callable[[], object]] = []
        self._acks_messages, self._acks_hold, self._acks_since, self._acks_last = 0, 0, 0.0, 0.0
        # batches of redeliverable messages (`held`), evaluated, not yet written: they go to the spool together just
        # before the fsync their acknowledgements wait for (`_write_held`); others with callbacks soon (`_store`)
        self._held: list[tuple[list[Reading], list[Reading], list[Callable[[], object]]]] = []
        # Batches nobody waits on (Modbus polls), shown at once, are written with the held ones by the fsync's timer
        # within `poll_linger_s` (`_polls_due`, monotonic): one write a second, not one per poll (`drained`: now)
        self.poll_linger_s = poll_linger_s
        self._polls: list[list[Reading]] = []
        self._polls_due = 0.0
        self._write_now = False  # `drained` asked for `_polls` to be written now
        self._clock_changed = False  # the last `mark` added clock_skew / clock_ahead_s readings
        self._soon = False  # `_write_soon` is on its way
        self._timer: asyncio.Handle | None = None  # puts _TICK in the queue when an fsync falls due (_next)
        self._timer_at = 0.0  # its loop time, kept here: uvloop gives a plain Handle, with no when(), for a 0 ms delay
        self._waiting = False  # the run task waits on the empty queue: a submission is processed at once (_take)
        self._open = True  # no submission processed inline in this loop turn yet
        self._failed: Exception | None = None  # what _take met, for the run task to raise

    async def submit(self, readings: list[Reading], on_spooled: Callable[[], object] | None = None) -> None:
        """Hand over a batch; waits (back-pressure to the driver) only when the intake is full. When the pipeline's
        task waits on an empty intake, the batch is evaluated here, in the caller's turn (`_take`). `on_spooled`
        runs once the batch is durable in the spool: the MQTT driver acknowledges the message to the broker only
        then, so a `kill -9` before that point makes the broker deliver it again."""
        if readings or on_spooled:
            if self.ready_now():
                # the other submissions of this loop turn (200 Modbus devices answering together) queue up and
                # make one batch for the task: group commit is kept where there is something to group
                self._open = False
                asyncio.get_running_loop().call_soon(self._reopen)
                self.take_now(readings, on_spooled)
                return
            self._idle.clear()
            await self._q.put((readings, on_spooled))

    def ready_now(self) -> bool:
        """The run task waits on an empty intake (and no task has handed over a batch in this loop turn yet): a
        batch handed over now is processed at once, in the caller's turn (`take_now`)."""
        return self._waiting and self._open and self._failed is None and self._q.empty()

    def take_now(self, readings: list[Reading], on_spooled: Callable[[], object] | None = None) -> None:
        """`submit` without its coroutine, for a caller that is not one: the MQTT reader's callback
        (drivers/mqtt/session.py `handle_now`), whose batch is all its socket held, so it leaves the loop turn open
        (no callback more to reopen it); only right after `ready_now` said yes, in the same turn."""
        if readings or on_spooled:
            self._idle.clear()
            self._take(readings, on_spooled)

    def _take(self, readings: list[Reading], cb: Callable[[], object] | None) -> None:
        """A submission the run task would have taken at once (it waits on an empty queue), processed in the
        submitter's turn instead: a task switch and a loop turn less per batch at site rates. The fsync and the
        acknowledgements stay the run task's (woken when due); so does an error, raised where the supervisor sees it."""
        if self._handed(self._store, readings, [cb] if cb else [], held(cb)):  # (`_store` keeps no caller's list)
            self._schedule()

    def _handed(self, work: Callable[..., None], *args: object) -> bool:
        """`work(*args)` outside the run task; what it raises is handed to the task, which raises it where its
        supervisor sees it (gateway/tasks.py restarts it). False when it raised."""
        try:
            work(*args)
        except Exception as err:  # not swallowed: raised by the run task
            self._failed = err
            self._wake()
            return False
        return True

    def _schedule(self) -> None:  # (outside the run task) its wake-up for the fsync armed or due now; or idle
        due = self._sync_due_in()
        if due is not None and due <= 0:
            self._wake()
        elif due is not None:
            self._arm(due)
        if self._q.empty() and not self._acks and not self._held and not self._polls:
            self._idle.set()  # in the spool (as the run task would have said)

    def _reopen(self) -> None:
        self._open = True

    async def drained(self) -> None:
        """Wait until everything submitted so far is in the spool."""
        if self._polls and not self._idle.is_set():
            self._write_now = True  # by the run task, which meets what the write meets
            self._wake()
        await self._idle.wait()

    async def run(self) -> None:
        while True:
            item = await self._next()
            if item is not None:
                readings, cb = item
                # Group commit: everything queued meanwhile is one batch, one write and at most one fsync.
                batch = list(readings)
                callbacks = [cb] if cb else []
                hold = held(cb)
                while len(batch) < self.max_batch and not self._q.empty():
                    readings, cb = self._q.get_nowait()  # (a _TICK adds nothing)
                    batch.extend(readings)
                    if cb:
                        callbacks.append(cb)
                    hold = hold and (held(cb) or not readings)
                self._store(batch, callbacks, hold)
            # Written lines are safe from kill -9 (in the kernel). The fsync, for power cuts, is due soon when someone
            # waits on it (an MQTT message is acknowledged only after it: within ack_linger_s, so one fsync serves
            # the messages of a few ms), else within the spool's sync_interval_s (a Modbus site polling 100 times a
            # second would fsync 100 times a second: half its CPU). In a worker thread when more input is queued.
            due = self._sync_due_in()
            if due is not None and due <= 0:
                self._write_held()  # (what it meets ends the task: the held messages are never acknowledged)
                acks, self._acks, self._acks_messages = self._acks, [], 0
                # with more input already queued, the fsync goes to the thread so the next batch is taken in
                # meanwhile (bigger batches, fewer fsyncs at high rates); with none, inline is cheaper
                try:
                    await self.spool.sync_async(busy=not self._q.empty())
                except BaseException as err:  # not durable (or a bug): never acknowledged, delivered again
                    if not isinstance(err, asyncio.CancelledError):  # (stopping: the connections end with it)
                        redeliver(acks)
                    raise
                acknowledge(acks)
            if self._q.empty() and not self._acks and not self._held and not self._polls:
                self._idle.set()

    def _store(self, batch: list[Reading], callbacks: list[Callable[[], object]], hold: bool = False) -> None:
        """Alarms and the latest values see the batch now; its callbacks wait for the fsync. A `hold` batch (its
        messages delivered again unless acknowledged) is encoded and written with the others held at that fsync:
        one write and one warm pass of the encoder for the messages sharing it. So is a batch with no callbacks
        (`poll_linger_s`), its console updated now. Any other batch with callbacks is written, after what is held,
        in a callback right after this one (`_write_soon`): the tasks its evaluation woke go first, a siren's
        message (the held write was 1.5-3 ms in front of it at 1 000 msg/s). Anything else is written at once."""
        try:
            marked, shown = self.mark(batch)
        except BaseException:
            # a bug met by its evaluation: its messages come again on a new connection (the task is restarted), not
            # left unacknowledged on this one holding places in the broker's in-flight window until it sends nothing
            redeliver(callbacks)
            raise
        if callbacks:
            self._linger(callbacks)
            self._held.append((marked, shown, callbacks))
            if (not hold or self._clock_changed) and not self._soon:  # (a clock's change is not delivered again)
                self._soon = True
                asyncio.get_running_loop().call_soon(self._write_soon)
            return
        if self.poll_linger_s > 0 and not self._clock_changed:
            for listener in self.later:
                listener(shown)
            if not self._polls:  # due within the linger, on its grid (at most 1 s): with the polls' own wake-up
                self._polls_due = (due := time.monotonic() + self.poll_linger_s) - due % min(1.0, self.poll_linger_s)
            self._polls.append(marked)
            return
        try:
            self._write_held()
        finally:  # a poll behind held batches is written whatever they meet: nothing delivers it again
            try:
                self._spool(marked, shown)
            except OSError:
                self.metrics.readings_unspooled += len(marked)  # (lost: said, not silent)
                raise

    def _write_soon(self) -> None:  # (`_store`) what the write meets is raised by the run task (`_handed`)
        self._soon = False
        if self._handed(self._write_held) and self._waiting:  # (a task in its fsync looks at what is due itself)
            self._schedule()

    def _write_held(self) -> None:
        """The held batches and waiting polls (their console has them) to the spool, in one write; only then do the
        acknowledgements wait for the fsync with the others, so whatever this meets (a bug raised to the supervisor,
        a refused write) leaves none to be acknowledged: their messages are delivered again (`redeliver`)."""
        if not self._held and not self._polls:
            return
        held_, self._held = self._held, []
        polls, self._polls, self._write_now = self._polls, [], False
        callbacks = [cb for _, _, cbs in held_ for cb in cbs]
        marked = [r for m in polls for r in m] + [r for m, _, _ in held_ for r in m]
        try:
            self._spool(marked, [r for _, v, _ in held_ for r in v])
        except BaseException as err:  # a refused write or a bug (in a `later` listener, the encoder): delivered again
            redeliver(callbacks)
            if isinstance(err, OSError):
                # polled readings the spool refused (a disk full of other files, where its own oldest segments make
                # no room): nothing delivers them again; counted. Keeping them to write later held up the task's
                # input, its fsync and acknowledgements while the disk refused them (an outside review)
                self.metrics.readings_unspooled += sum(map(len, polls))
            raise
        self._acks.extend(callbacks)

    def _linger(self, callbacks: list[Callable[[], object]]) -> None:
        """Count what waits for the fsync, written or held: the linger starts with the first since the last one."""
        self._acks_last = time.monotonic()
        if callbacks and not self._acks and not self._held:
            self._acks_since, self._acks_messages, self._acks_hold = self._acks_last, 0, 1 << 30
        for cb in callbacks:  # an MQTT batch says how many messages it has, and on MQTT 5 how many may wait (hold)
            self._acks_messages += getattr(cb, "messages", 1)
            self._acks_hold = min(self._acks_hold, getattr(cb, "hold", 0) or self.ack_linger_messages)

    def _sync_due_in(self) -> float | None:
        """Seconds until the fsync is due (<= 0: now); None when nothing written or waiting needs one."""
        due = self.spool.sync_due_in()
        if self._polls:
            if self._write_now:
                return 0.0
            wait = self._polls_due - time.monotonic()
            due = wait if due is None else min(due, wait)
        if self._acks or self._held:
            if self._acks_messages >= self._acks_hold or (due is None and not self._held):
                return 0.0  # enough waiting; or everything is on disk already (no fsync) and they go at once
            linger = self._acks_since + self.ack_linger_s
            if self._acks_messages >= QUIET_AFTER:  # (only with an MQTT 5 `hold` above it)
                linger = min(linger, self._acks_last + QUIET_S)
            due = linger - time.monotonic() if due is None else min(due, linger - time.monotonic())
        return due

    async def _next(self) -> tuple[list[Reading], Callable[[], object] | None] | None:
        """The next submission, or None when written lines may be due for their fsync (`run` checks) before one
        arrives. The deadline is a timer that puts _TICK in the queue, armed once per deadline: a timeout around
        each wait (asyncio.timeout) cost a timer, a context and three lookups of the running loop per batch."""
        self._raise_failed()  # (a task restarted after one that never resumed to raise it)
        due = self._sync_due_in()
        if due is None:
            if self._timer is not None:
                self._timer.cancel()  # nothing to sync: its tick would only wake an idle loop
                self._timer = None
            if self._q.empty():
                self._idle.set()  # nothing queued, held or waiting (as after a batch that met a bug)
        elif due <= 0:
            return None
        elif not self._q.empty():
            item = self._q.get_nowait()
            return None if item is _TICK else item
        else:
            self._arm(due)
        self._waiting = True
        try:
            item = await self._q.get()
        except asyncio.CancelledError:
            if self._failed is not None:  # stopped before it could raise what _take met: said here, not lost
                log.error("pipeline stopped with an error from a batch not yet reported", exc_info=self._failed)
                self._failed = None
            raise
        finally:
            self._waiting = False
        self._raise_failed()
        return None if item is _TICK else item

    def _raise_failed(self) -> None:
        if self._failed is not None:
            err, self._failed = self._failed, None
            raise err

    def _arm(self, due: float) -> None:
        loop = asyncio.get_running_loop()
        when = loop.time() + due
        # one deadline, worked out again at each batch from two clock reads, differs by a few µs each time: within
        # a ms the timer armed is kept (a cancelled timer stays in the loop's heap until it is cleaned)
        if self._timer is None or self._timer_at > when + 0.001:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = loop.call_at(when, self._tick)
            self._timer_at = when

    def _tick(self) -> None:
        self._timer = None
        self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(asyncio.QueueFull):  # a full queue wakes the task anyway
            self._q.put_nowait(_TICK)

    def process(self, batch: list[Reading]) -> None:  # synchronously, spool included and fsynced (tests, tools)
        self._spool(*self.mark(batch), put=self.spool.append)

    def mark(self, batch: list[Reading]) -> tuple[list[Reading], list[Reading]]:
        """Derive, mark quality, update latest values, run `listeners`: the batch as stored, and as shown (with
        device clocks corrected)."""
        if self.derive is not None:
            extra = self.derive(batch)
            if extra:
                self.metrics.readings_by_driver["derived"] += len(extra)
                batch = batch + extra
        live: list[Reading] = batch
        skew: list[Reading] = []
        self._clock_changed = False
        if self.clock is not None:
            batch, live, skew = self.clock.apply(batch, self.now_ns())
        marked, shown = self._marker.mark(batch, live)
        if skew:
            self._clock_changed = True
            marked.extend(skew)
            if shown is not marked:
                shown.extend(skew)
            for r in skew:
                self.latest.put(r)
        for listener in self.listeners:
            listener(shown)
        return marked, shown

    def _spool(
        self, marked: list[Reading], shown: list[Reading], put: Callable[[bytes, int], None] | None = None
    ) -> None:
        """`later` listeners see `shown`; `marked` encoded and written to the spool, counted once written (a refused
        write's polls are counted lost by the caller: `readings_unspooled`)."""
        for listener in self.later:
            listener(shown)
        data, lines, n = encode_readings(marked, self.series)
        (put or self.spool.write)(data, lines)
        self.metrics.readings_in += n
        self.metrics.lines_spooled += lines
