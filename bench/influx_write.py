"""InfluxDB writing: points/s from a filled spool through SpoolDrainer + InfluxV1Writer, beside raw aiohttp POSTs (the
HTTP library the writer uses) of the same line-protocol batches to InfluxDB 1.6.7's /write."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp

from bench import common
from bench.common import Options, Result
from gateway.influx import InfluxV1Writer
from gateway.metrics import Metrics
from gateway.spool import Spool
from gateway.writer import SpoolDrainer
from services import local
from telemetry.lineproto import encode_readings, series_tags
from telemetry.reading import Quality, Reading

NAME = "influx_write"
DEVICES = 200
FIELDS: tuple[str, ...] = ("load", "rated_load", "load_moment_ratio", "radius", "hook_height", "slew_angle")
FIELDS += ("wind_speed", "tilt_x", "tilt_y", "hoisting_up")
BATCH_LINES = 5000  # the default spool.batch_lines: the drainer's batches and the raw POSTs are the same size


def dataset(timestamps: int) -> tuple[list[bytes], int, int]:
    """Line protocol as the pipeline encodes it, in BATCH_LINES batches: (batches, lines, points)."""
    series = {f"C{i:04d}": series_tags("tower_crane", "bench", f"C{i:04d}", "北区") for i in range(DEVICES)}
    t0 = 1_795_224_600_000_000_000
    batches: list[bytes] = []
    lines = points = 0
    pending: list[Reading] = []
    for k in range(timestamps):
        for i in range(DEVICES):
            ts = t0 + k * 1_000_000_000 + i
            pending.extend(
                Reading(f"C{i:04d}", q, 1.0 + j + (k % 97) * 0.01, ts, Quality.GOOD) for j, q in enumerate(FIELDS)
            )
        if len(pending) >= BATCH_LINES * len(FIELDS) or k == timestamps - 1:
            data, n_lines, n = encode_readings(pending, series)
            batches.append(data)
            lines += n_lines
            points += n
            pending = []
    return batches, lines, points


async def raw_posts(port: int, db: str, batches: list[bytes]) -> float:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as c:
        async with c.post(f"http://127.0.0.1:{port}/query", params={"q": f'CREATE DATABASE "{db}"'}) as r:
            r.raise_for_status()
        t0 = time.perf_counter()
        for b in batches:
            async with c.post(f"http://127.0.0.1:{port}/write", params={"db": db, "precision": "ns"}, data=b) as r:
                if r.status != 204:
                    raise RuntimeError(f"raw write: HTTP {r.status}: {(await r.text())[:200]}")
        return time.perf_counter() - t0


async def through_spool(port: int, db: str, batches: list[bytes], spool_dir: Path) -> float:
    # one big live segment: the whole set is "live" data, so the replay rate limit (backlog only) does not apply
    spool = Spool(spool_dir, max_bytes=4 << 30, segment_bytes=2 << 30, fsync=True)
    spool.open()
    for b in batches:
        spool.append(b, b.count(b"\n"))
    writer = InfluxV1Writer(f"http://127.0.0.1:{port}", db, timeout_s=30)
    await writer._ensure_db()  # as the raw side: CREATE DATABASE outside the timed part
    drainer = SpoolDrainer(spool, writer, Metrics(), BATCH_LINES, 20000, spool_dir / "rejected.lp")
    t0 = time.perf_counter()
    task = asyncio.create_task(drainer.run())
    try:
        while spool.pending_bytes():
            spool.ack_event.clear()
            await asyncio.wait_for(spool.ack_event.wait(), 60)
        return time.perf_counter() - t0
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await writer.aclose()
        spool.close()


def run(opts: Options) -> Result:
    timestamps = 1000 if opts.long else 250
    rounds = 2  # alternate raw / spool so a burst of load on the machine hits both sides alike
    wd = common.fresh_dir(opts.workdir / NAME)
    batches, lines, points = dataset(timestamps)
    db = local.influxdb(wd / "influxdb")
    raw_s: list[float] = []
    gw_s: list[float] = []
    with common.running(db):
        asyncio.run(raw_posts(db.port, "warmup", batches[:2]))  # the first writes after a start are slower
        for k in range(rounds):
            raw_s.append(asyncio.run(raw_posts(db.port, f"raw_{k}", batches)))
            gw_s.append(asyncio.run(through_spool(db.port, f"gw_{k}", batches, wd / f"spool_{k}")))
        counts = [
            local.rows(db.port, f"gw_{k}", "SELECT count(load) FROM tower_crane")[0]["count"] for k in range(rounds)
        ]
    raw_rate = points * rounds / sum(raw_s)
    gw_rate = points * rounds / sum(gw_s)
    r = common.ratio(gw_rate, raw_rate)
    notes = []
    if any(c != lines for c in counts):
        notes.append(f"lines in InfluxDB after the spool runs: {counts}, expected {lines} each")
    return Result(
        name=NAME,
        figure=gw_rate,
        baseline=raw_rate,
        unit="points/s",
        ratio=r,
        target=">= 0.70 of raw aiohttp POSTs",
        met=None if r is None else r >= 0.7,
        details={
            "lines": lines,
            "points": points,
            "batch_lines": BATCH_LINES,
            "rounds": rounds,
            "raw_seconds": raw_s,
            "spool_seconds": gw_s,
            "raw_lines_per_s": lines * rounds / sum(raw_s),
            "spool_lines_per_s": lines * rounds / sum(gw_s),
        },
        notes=notes,
    )
