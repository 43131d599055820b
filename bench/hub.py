"""The regional hub: events/s from many sites through a 3-node NATS JetStream cluster and 1, 2, 3 `sitegw hub`
replicas into PostgreSQL, site commit -> PostgreSQL commit latency, beside a bare COPY and a batched INSERT.

`python -m bench.hub [--sites 1000] [--events 20000] [--replicas 1,2,3] [--paced 1000] [--short]` prints a table
and writes `.run/bench/hub.json`: each replica count flat out, then two replicas at a steady offered rate (the
latency a site sees below saturation). The sites are lightweight publishers (one process, 50 concurrent tasks,
each event an alarm event of the uplink's format, stamped when it is published), not full gateways.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import nats
import nats.errors
import psycopg

from bench import common
from gateway import eventloop
from services.local import stop_process, wait_for
from services.regional import nats_cluster, postgres

TASKS = 50


def event(site: int, seq: int) -> bytes:
    s = f"site{site:04d}"
    data = {
        "alarm_id": seq,
        "rule": "gas.lel",
        "device": f"{s}-G1",
        "quantity": "lel",
        "state": "active_unacked",
        "level": 2,
        "value": 30.0,
        "threshold": 25.0,
        "source": "GB/T 50493-2019",
        "actor": "system",
        "text": None,
    }
    doc = {"id": f"{s}:b:{seq}", "site": s, "seq": seq, "kind": "alarm.raised", "at_ns": time.time_ns(), "data": data}
    return json.dumps(doc).encode()


async def publish(urls: list[str], sites: int, events: int, rate: float | None = None) -> float:
    """Every event once (retried until acknowledged), spread over the sites; the publishing rate. With `rate`,
    offered at that many events/s in all (each task on its own schedule), else as fast as acknowledged."""
    nc = await nats.connect(servers=urls)
    js = nc.jetstream()
    per_task = events // TASKS
    start = time.monotonic()

    async def worker(t: int) -> None:
        for i in range(per_task):
            if rate is not None:  # the i-th event of this task is due at (i * TASKS + t) / rate
                await asyncio.sleep(max(0.0, start + (i * TASKS + t) / rate - time.monotonic()))
            n = t * per_task + i
            site, seq = n % sites, n // sites + 1
            body = event(site, seq)
            while True:
                try:
                    await js.publish(f"sitegw.site{site:04d}.events", body, timeout=5)
                    break
                except nats.errors.Error:
                    await asyncio.sleep(0.1)

    t0 = time.monotonic()
    await asyncio.gather(*(worker(t) for t in range(TASKS)))
    dt = time.monotonic() - t0
    await nc.close()
    return per_task * TASKS / dt


def count(dsn: str) -> int:
    with psycopg.connect(dsn) as c:
        try:
            row = c.execute("SELECT count(*) FROM events").fetchone()
        except psycopg.errors.UndefinedTable:
            return 0
        return int(row[0]) if row else 0


def reset(dsn: str, urls: list[str]) -> None:
    with psycopg.connect(dsn, autocommit=True) as c:  # every table of every migration, whatever they are
        c.execute("DROP SCHEMA public CASCADE")
        c.execute("CREATE SCHEMA public")

    async def drop() -> None:
        nc = await nats.connect(servers=urls)
        try:
            await nc.jetstream().delete_stream("SITES")
        except nats.errors.Error:
            pass
        await nc.close()

    asyncio.run(drop())


def through_hub(
    urls: list[str],
    dsn: str,
    k: int,
    sites: int,
    events: int,
    wd: Path,
    rate: float | None = None,
    loop: str = "auto",
) -> dict[str, Any]:
    reset(dsn, urls)
    env = {**os.environ, "SITEGW_HUB_DSN": dsn}
    argv = [sys.executable, "-m", "gateway.cli", "--log-level", "warning", "hub", "--servers", ",".join(urls)]
    argv += ["--loop", loop]
    hubs = []
    for i in range(k):
        with open(wd / f"hub-{k}-{i}.log", "ab") as fh:
            hubs.append(subprocess.Popen(argv, cwd=common.ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT))
    try:
        wait_for(lambda: _has_stream(urls), 30, 0.2, "the hub's stream")
        t0 = time.monotonic()
        pub_rate = asyncio.run(publish(urls, sites, events, rate))
        total = events // TASKS * TASKS
        wait_for(lambda: count(dsn) >= total, 600, 0.2, f"{total} events in PostgreSQL")
        dt = time.monotonic() - t0
        with psycopg.connect(dsn) as c:
            lat = [
                r[0]
                for r in c.execute(
                    "SELECT ((extract(epoch FROM received_at) * 1e9 - at_ns) / 1e6)::float8 FROM events ORDER BY 1"
                )
            ]
        cpu = sum(common.proc_cpu_s(h.pid) for h in hubs)
    finally:
        for h in hubs:
            stop_process(h, 10)
    return {
        "replicas": k,
        "offered_per_s": rate,
        "events": total,
        "events_per_s": total / dt,
        "published_per_s": pub_rate,
        "p50_ms": common.percentile(lat, 50),
        "p99_ms": common.percentile(lat, 99),
        "hub_cpu_ms_per_1k": 1e6 * cpu / total,
    }


def _has_stream(urls: list[str]) -> bool:
    async def check() -> bool:
        nc = await nats.connect(servers=urls)
        try:
            await nc.jetstream().stream_info("SITES")
            return True
        except nats.errors.Error:
            return False
        finally:
            await nc.close()

    return asyncio.run(check())


def bare(dsn: str, events: int, sites: int) -> dict[str, float]:
    """The same rows into an events-shaped table by COPY, and by batched INSERT (executemany, 200 a batch)."""
    rows = [
        (f"site{n % sites:04d}:b:{n}", f"site{n % sites:04d}", "b", n, "alarm.raised", n, event(n % sites, n).decode())
        for n in range(events)
    ]
    out = {}
    with psycopg.connect(dsn, autocommit=True) as c:
        for how in ("copy", "insert"):
            c.execute("DROP TABLE IF EXISTS bare")
            c.execute(
                "CREATE TABLE bare (id text PRIMARY KEY, site text, epoch text, seq bigint, kind text, "
                "at_ns bigint, data jsonb)"
            )
            t0 = time.monotonic()
            with c.transaction():
                if how == "copy":
                    with c.cursor().copy("COPY bare FROM STDIN") as cp:
                        for r in rows:
                            cp.write_row(r)
                else:
                    cur = c.cursor()
                    for i in range(0, len(rows), 200):
                        cur.executemany("INSERT INTO bare VALUES (%s, %s, %s, %s, %s, %s, %s)", rows[i : i + 200])
            out[f"{how}_rows_per_s"] = events / (time.monotonic() - t0)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.hub", description=__doc__.split("\n\n")[0])
    ap.add_argument("--sites", type=int, default=1000)
    ap.add_argument("--events", type=int, default=20000)
    ap.add_argument("--replicas", default="1,2,3")
    ap.add_argument("--paced", type=float, default=1000.0, help="events/s offered in the latency run (2 replicas)")
    ap.add_argument("--short", action="store_true", help="5 000 events, replicas 1 and 2 (make bench)")
    ap.add_argument("--loop", choices=eventloop.CHOICES, default="auto", help="the replicas' event loop")
    ap.add_argument("--json", type=Path, default=common.RUN_DIR / "hub.json")
    a = ap.parse_args(argv)
    if a.short:
        a.events, a.replicas = min(a.events, 5000), "1,2"
    wd = common.fresh_dir(common.RUN_DIR / "hub")
    cluster = nats_cluster(wd / "nats")
    pg = postgres()
    runs: list[dict[str, Any]] = []
    try:
        cluster.start()
        pg.start()
        for k in [int(x) for x in a.replicas.split(",")]:
            print(f"   {k} replica(s), {a.events} events from {a.sites} sites ...", flush=True)
            runs.append(through_hub(cluster.urls, pg.dsn, k, a.sites, a.events, wd, loop=a.loop))
        # latency at a steady rate below saturation (flat out, p50/p99 are the queue the burst builds)
        print(f"   2 replicas, {a.events} events offered at {a.paced:,.0f}/s ...", flush=True)
        runs.append(through_hub(cluster.urls, pg.dsn, 2, a.sites, a.events, wd, a.paced, loop=a.loop))
        base = bare(pg.dsn, a.events, a.sites)
    finally:
        cluster.stop()
        pg.stop()
        pg.remove()
    head = (
        f"{'replicas':>8} {'offered':>9} {'events/s':>9} {'published/s':>12} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'hub CPU-ms/1k':>14}"
    )
    lines = [head, "-" * len(head)]
    for r in runs:
        offered = "flat out" if r["offered_per_s"] is None else f"{r['offered_per_s']:,.0f}/s"
        lines.append(
            f"{r['replicas']:>8} {offered:>9} {r['events_per_s']:>9,.0f} {r['published_per_s']:>12,.0f} "
            f"{r['p50_ms']:>8,.0f} {r['p99_ms']:>8,.0f} {r['hub_cpu_ms_per_1k']:>14,.1f}"
        )
    lines.append(
        f"bare PostgreSQL, same rows: COPY {base['copy_rows_per_s']:,.0f} rows/s, "
        f"batched INSERT {base['insert_rows_per_s']:,.0f} rows/s"
    )
    report = {
        "machine": common.machine_facts(),
        "sites": a.sites,
        "loop": a.loop,
        "runs": runs,
        "bare": base,
        "table": "\n".join(lines),
    }
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps(report, indent=2))
    print(report["table"])
    print(f"report: {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
