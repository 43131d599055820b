"""A second database for the same readings (second_sink:): its own spool, writer, drainer and counters."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from gateway.config.sections import SecondSinkConfig
from gateway.influx import InfluxV1Writer, InfluxV2Writer
from gateway.metrics import Metrics
from gateway.spool import Spool
from gateway.writer import SpoolDrainer

log = logging.getLogger("sitegw.second_sink")


class SecondSink:
    """Everything the first sink has, apart: an outage of the central database fills only this spool's bound and
    never holds back the site's own database, and the reverse."""

    def __init__(self, cfg: SecondSinkConfig, writer: InfluxV1Writer | InfluxV2Writer, fsync: bool) -> None:
        self.cfg = cfg
        sp = cfg.spool
        self.spool = Spool(sp.dir, sp.max_bytes, sp.segment_bytes, fsync=fsync, sync_interval_s=sp.sync_interval_s)
        self.writer = writer
        self.metrics = Metrics()  # its own write counters: the first sink's figures stay the first sink's
        self.drainer = SpoolDrainer(
            self.spool,
            writer,
            self.metrics,
            sp.batch_lines,
            sp.replay_lines_per_s,
            sp.dir / "rejected.lp",
            linger_s=sp.write_linger_s,
            label="second sink",
        )
        # its spool's own disk trouble (full, read-only): counted and shown, never passed on to the first sink
        self.spool_errors = 0
        self.spool_error: str | None = None  # the last one, until a write succeeds again

    async def drained(self, timeout_s: float) -> bool:
        """Wait up to `timeout_s` for its spool to be written out while its database takes writes (graceful
        shutdown: the central database gets the last readings now, not at the next start). True when nothing is
        left; a database that is down is not waited for (its lines stay in the spool on disk)."""
        deadline = time.monotonic() + timeout_s
        while self.drainer.down_since is None and (now := time.monotonic()) < deadline:
            if await self.spool.written_by(min(deadline, now + 0.5)):  # down_since looked at every 0.5 s
                break
        if rest := self.spool.pending_bytes():
            log.warning("second sink: %d bytes left in its spool, written at the next start", rest)
        return not rest


class SpoolTee:
    """What the pipeline and the alarm engine write to: the first spool and the second sink's, the same bytes to
    each. An fsync is due when either's is; both run at once. The first spool's errors go to the caller as
    before (the pipeline reports them); the second's are the second sink's own (counted, logged, in /health):
    they never stop a reading from reaching the first sink."""

    def __init__(self, first: Spool, second: SecondSink) -> None:
        self.first = first
        self.sink = second
        self.second = second.spool

    def _failed(self, what: str, err: OSError) -> None:
        self.sink.spool_errors += 1
        if self.sink.spool_error is None:
            log.error("second sink's spool: %s failed (%s); its readings are lost until it works again", what, err)
        self.sink.spool_error = f"{what}: {err}"

    def write(self, data: bytes, lines: int) -> None:
        self.first.write(data, lines)
        self._second("write", self.second.write, data, lines)

    def append(self, data: bytes, lines: int) -> None:
        self.first.append(data, lines)
        self._second("append", self.second.append, data, lines)

    def _second(self, what: str, op: Callable[[bytes, int], None], data: bytes, lines: int) -> None:
        try:
            op(data, lines)
            self.sink.spool_error = None
        except OSError as err:
            self._failed(what, err)

    def sync_due_in(self) -> float | None:
        dues = [d for d in (self.first.sync_due_in(), self.second.sync_due_in()) if d is not None]
        return min(dues) if dues else None

    async def sync_async(self, busy: bool = False) -> None:
        first, second = await asyncio.gather(
            self.first.sync_async(busy), self.second.sync_async(busy), return_exceptions=True
        )
        if isinstance(second, OSError):
            self._failed("fsync", second)
        elif isinstance(second, BaseException):
            raise second
        if isinstance(first, BaseException):
            raise first


def second_sink_reasons(second: SecondSink | None, full_ratio: float) -> list[dict[str, Any]]:
    """/health's reasons for the second sink: its database not writable, its spool filling (its own bound)."""
    if second is None:
        return []
    out: list[dict[str, Any]] = []
    target = second.writer.target
    since = second.drainer.down_since
    if since is not None:
        down = round(time.monotonic() - since, 1)
        out.append({
            "code": "second_sink_down",
            "detail": {"target": target, "down_for_s": down, "write_failures": second.metrics.write_failures},
            "zh": f"第二数据库无法写入（{target}），数据暂存在其本地缓存中，恢复后补写",
            "en": f"second sink not writable ({target}); its readings wait in its own spool until it is back",
        })  # fmt: skip
    if second.spool_error is not None:
        out.append({
            "code": "second_sink_spool_failing",
            "detail": {"error": second.spool_error, "errors": second.spool_errors},
            "zh": f"第二数据库的本地缓存无法写入（{second.spool_error}），这期间的数据不会写入第二数据库",
            "en": f"the second sink's spool cannot be written ({second.spool_error}); meanwhile its readings are lost",
        })  # fmt: skip
    disk, bound = second.spool.disk_bytes(), second.spool.max_bytes
    if disk > bound * full_ratio:
        pct = round(100.0 * disk / bound, 1)
        out.append({
            "code": "second_sink_spool_filling",
            "detail": {"disk_bytes": disk, "max_bytes": bound, "percent": pct},
            "zh": f"第二数据库的本地缓存已用 {pct}%（上限 {bound} 字节）；满后将丢弃其最早的数据",
            "en": f"the second sink's spool at {pct} % of its bound ({bound} bytes); when full, its oldest data goes",
        })  # fmt: skip
    return out


def second_sink_metrics(second: SecondSink | None) -> str:
    """Its figures for /metrics (Prometheus text), beside the first sink's."""
    if second is None:
        return ""
    m = second.metrics
    rows = (
        ("sitegw_second_sink_lines_written_total", "counter", "Lines the second sink's database accepted.",
         m.lines_written),
        ("sitegw_second_sink_write_failures_total", "counter", "Failed writes to the second sink (retried).",
         m.write_failures),
        ("sitegw_second_sink_spool_pending_bytes", "gauge", "Bytes in the second sink's spool not yet written.",
         second.spool.pending_bytes()),
        ("sitegw_second_sink_spool_dropped_lines_total", "counter", "Lines its spool dropped at its bound.",
         second.spool.dropped_lines),
        ("sitegw_second_sink_up", "gauge", "1 while the second sink's database takes writes.",
         int(second.drainer.down_since is None)),
    )  # fmt: skip
    return "".join(f"# HELP {n} {h}\n# TYPE {n} {t}\n{n} {v}\n" for n, t, h, v in rows)
