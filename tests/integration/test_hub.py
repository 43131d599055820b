"""The regional hub's ingest (issue 16) on real services: three sites publish to a 3-node JetStream cluster, two
hub replicas (`sitegw hub`) share one durable consumer into PostgreSQL. Faults for real: a replica `kill -9`ed
mid-stream, PostgreSQL killed and restarted, a NATS node killed. At the end an exact account: every event once,
each site's in order, every alarm in the state of its site's last event, and a bad event kept with its reason."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import nats.errors
import nats.js.errors
import psycopg
import pytest

from services.local import stop_process, wait_for
from services.regional import NatsCluster, Postgres, nats_cluster, postgres

ROOT = Path(__file__).resolve().parents[2]
SITES = ("s1", "s2", "s3")
PER_SITE = 240
STATES = ("active_unacked", "active_acked", "normal")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    c = nats_cluster(tmp_path / "nats")
    try:
        c.start()
        yield c
    finally:
        c.stop()


@pytest.fixture
def pg() -> Iterator[Postgres]:
    p = postgres()
    try:
        p.start()
        yield p
    finally:
        p.stop()
        p.remove()


def replica(cluster: NatsCluster, pg: Postgres, log: Path) -> subprocess.Popen[bytes]:
    """`sitegw hub` as an operator starts it (the DSN from the environment)."""
    argv = [sys.executable, "-m", "gateway.cli", "hub", "--servers", ",".join(cluster.urls), "--ack-wait-s", "2"]
    with open(log, "ab") as fh:
        env = {**os.environ, "SITEGW_HUB_DSN": pg.dsn}
        return subprocess.Popen(argv, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, env=env)


def event(site: str, seq: int) -> dict[str, Any]:
    """The n-th event of a site as its uplink sends it: alarm k's events cycle raised -> acked -> cleared."""
    alarm = 1 + (seq - 1) // 3
    kind = ("raised", "acked", "cleared")[(seq - 1) % 3]
    data = {"alarm_id": alarm, "rule": "gas.lel", "device": f"{site}-G1", "quantity": "lel",
            "state": STATES[(seq - 1) % 3], "level": 2, "value": 30.0, "threshold": 25.0, "source": "GB/T 50493-2019",
            "actor": "system", "text": None}  # fmt: skip
    return {"id": f"{site}:e1:{seq}", "site": site, "seq": seq, "kind": f"alarm.{kind}", "at_ns": seq, "data": data}


async def publish_sites(cluster: NatsCluster, faults: dict[int, Any]) -> None:
    """Every site's events in order, each retried until acknowledged (as the uplink does); `faults[n]` runs once
    the n-th round (one event of each site) is acknowledged."""
    nc = await nats.connect(servers=cluster.urls, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    js = nc.jetstream()
    try:
        for seq in range(1, PER_SITE + 1):
            for site in SITES:
                ev = event(site, seq)
                while True:
                    try:
                        await js.publish(f"sitegw.{site}.events", json.dumps(ev).encode(), timeout=2,
                                         headers={"Nats-Msg-Id": ev["id"]})  # fmt: skip
                        break
                    except (nats.errors.Error, OSError):
                        await asyncio.sleep(0.2)
            if seq in faults:
                await asyncio.to_thread(faults[seq])
        # and one a site should never send (site s2's event under s1's subject): kept with its reason, nothing else
        await js.publish("sitegw.s1.events", json.dumps(event("s2", PER_SITE + 1)).encode(), timeout=5)
    finally:
        await nc.close()


def stored(pg: Postgres) -> int:
    with psycopg.connect(pg.dsn) as conn:
        row = conn.execute("SELECT count(*) FROM events").fetchone()
        return int(row[0]) if row else 0


def test_three_sites_two_replicas_and_every_fault_leave_an_exact_account(
    tmp_path: Path, cluster: NatsCluster, pg: Postgres
) -> None:
    logs = [tmp_path / "hub-a.log", tmp_path / "hub-b.log"]
    hubs = [replica(cluster, pg, logs[0]), replica(cluster, pg, logs[1])]

    def kill_replica_a() -> None:
        hubs[0].kill()  # mid-batch, no goodbye: what it fetched and did not acknowledge comes again
        hubs[0].wait()

    def kill_postgres() -> None:
        pg.kill()
        pg.start()  # crash recovery; the replicas reconnect

    def kill_nats_node() -> None:
        cluster.kill_node(cluster.nodes[1])

    def replica_a_back() -> None:
        hubs[0] = replica(cluster, pg, logs[0])

    try:
        faults = {40: kill_replica_a, 90: kill_postgres, 140: kill_nats_node, 170: replica_a_back}
        asyncio.run(publish_sites(cluster, faults))
        total = len(SITES) * PER_SITE
        wait_for(lambda: stored(pg) == total, 90, 0.5, f"{total} events in PostgreSQL")
        wait_for(lambda: _rejected(pg), 30, 0.5, "the bad event kept")
    finally:
        for h in hubs:
            stop_process(h, 10)  # type: ignore[arg-type]
    with psycopg.connect(pg.dsn) as conn:
        for site in SITES:
            seqs = [r[0] for r in conn.execute("SELECT seq FROM events WHERE site = %s ORDER BY seq", (site,))]
            assert seqs == list(range(1, PER_SITE + 1)), site  # every event of the site, once
            alarms = conn.execute(
                "SELECT alarm_id, state, last_seq FROM site_alarms WHERE site = %s ORDER BY alarm_id", (site,)
            ).fetchall()
            # each alarm in the state of its last event, whichever replica applied which event in which order
            assert alarms == [(k, "normal", 3 * k) for k in range(1, PER_SITE // 3 + 1)], site
        reasons = [r[0] for r in conn.execute("SELECT reason FROM rejected_events")]
    assert len(reasons) == 1 and "published under another site's subject" in reasons[0]
    hub_log = b"".join(lg.read_bytes() for lg in logs)
    assert b"PostgreSQL" in hub_log  # the replicas saw the database go and come back


def _rejected(pg: Postgres) -> bool:
    with psycopg.connect(pg.dsn) as conn:
        row = conn.execute("SELECT count(*) FROM rejected_events").fetchone()
        return bool(row and row[0])
