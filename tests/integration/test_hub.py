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
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import nats
import nats.errors
import nats.js.errors
import psycopg

from alerting.db import connect
from alerting.hazards import HazardConfig, Hazards
from alerting.roles import Role
from alerting.rules import HazardBasis
from alerting.uplink import UplinkOutbox
from services.local import stop_process, wait_for
from services.regional import NatsCluster, Postgres

ROOT = Path(__file__).resolve().parents[2]
SITES = ("s1", "s2", "s3")
PER_SITE = 240
STATES = ("active_unacked", "active_acked", "normal")


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


async def publish_sites(cluster: NatsCluster, faults: dict[int, Any], extra: list[bytes]) -> None:
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
        for body in extra:  # site s1's hazard events, as its uplink sends them
            await js.publish("sitegw.s1.events", body, timeout=5, headers={"Nats-Msg-Id": json.loads(body)["id"]})
        # and one a site should never send (site s2's event under s1's subject): kept with its reason, nothing else
        await js.publish("sitegw.s1.events", json.dumps(event("s2", PER_SITE + 1)).encode(), timeout=5)
        # and three PostgreSQL would refuse (a NaN Python reads, a NUL in a string, a seq beyond bigint): kept with
        # their reasons, holding up nobody's events (once they stalled the hub for every site, retried for ever)
        nan = json.dumps(event("s3", PER_SITE + 1)).replace('"value": 30.0', '"value": NaN').encode()
        nul = json.dumps({**event("s3", PER_SITE + 2), "kind": "alarm.raised\u0000"}).encode()
        big = json.dumps({**event("s3", PER_SITE + 3), "seq": 2**70, "id": f"s3:e1:{2**70}"}).encode()
        for body in (nan, nul, big):
            await js.publish("sitegw.s3.events", body, timeout=5)
    finally:
        await nc.close()


def site_hazard_events(tmp_path: Path) -> list[bytes]:
    """Site s1's hazard events as a site makes them: a real hazard store with the uplink outbox on a state file,
    a major hazard reported, confirmed and assigned (its same-day report clock running)."""
    conn = connect(tmp_path / "s1-state.db")
    box = UplinkOutbox("s1")
    box.bind(conn)
    hz = Hazards(conn, time.time_ns, HazardConfig(), hooks=[box.on_hazard])
    hid = hz.report(actor="li", role=Role.OFFICER, unit_name="某某项目", description="塔吊力矩限制器失效",
                    source="inspection")  # fmt: skip
    basis = HazardBasis(version="2024", article="8(四)", text_zh="起重机械安全装置不齐全、失效或者被违规拆除、破坏")
    hz.confirm(hid, actor="wang", role=Role.MANAGER, klass="major", basis=basis)
    hz.assign(hid, actor="wang", role=Role.MANAGER, responsible="zhao", measures="更换力矩限制器",
              deadline=date.today() + timedelta(days=10), funds=12000, emergency_plan="停用塔吊")  # fmt: skip
    out = [e.body.encode() for e in box.pending(100)]
    conn.close()
    return out


def stored(pg: Postgres) -> int:
    """Events in the hub's database; 0 until a replica has created its tables."""
    with psycopg.connect(pg.dsn) as conn:
        try:
            row = conn.execute("SELECT count(*) FROM events").fetchone()
        except psycopg.errors.UndefinedTable:
            return 0
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
        hazards = site_hazard_events(tmp_path)
        asyncio.run(publish_sites(cluster, faults, hazards))
        total = len(SITES) * PER_SITE + len(hazards)
        wait_for(lambda: stored(pg) == total, 90, 0.5, f"{total} events in PostgreSQL")
        wait_for(lambda: _rejected(pg) >= 4, 30, 0.5, "the bad events kept")
    finally:
        for h in hubs:
            stop_process(h, 10)  # type: ignore[arg-type]
    with psycopg.connect(pg.dsn) as conn:
        for site in SITES:
            q = "SELECT seq FROM events WHERE site = %s AND epoch = 'e1' ORDER BY seq"
            seqs = [r[0] for r in conn.execute(q, (site,))]
            assert seqs == list(range(1, PER_SITE + 1)), site  # every event of the site, once
            alarms = conn.execute(
                "SELECT alarm_id, state, last_seq FROM site_alarms WHERE site = %s ORDER BY alarm_id", (site,)
            ).fetchall()
            # each alarm in the state of its last event, whichever replica applied which event in which order
            assert alarms == [(k, "normal", 3 * k) for k in range(1, PER_SITE // 3 + 1)], site
        reasons = [r[0] for r in conn.execute("SELECT reason FROM rejected_events ORDER BY id")]
        # the major hazard as the site last reported it: assigned (rectifying), its report clock set
        hz = conn.execute("SELECT status, klass, report_due_ns, record->>'responsible' FROM site_hazards").fetchall()
        assert len(hazards) == 3 and len(hz) == 1
        assert hz[0][0] == "rectifying" and hz[0][1] == "major" and hz[0][2] is not None and hz[0][3] == "zhao"
    assert len(reasons) == 4, reasons  # each once (two replicas share the consumer: in any order)
    for why in ("published under another site's subject", "NaN is not a JSON number", "NUL character", "64-bit"):
        assert sum(why in r for r in reasons) == 1, (why, reasons)
    # the database did go and come back (whether a replica was writing at that instant depends on timing)
    assert (pg.dir / "postgres.log").read_bytes().count(b"ready to accept connections") >= 2
    # the replicas ran on the loop `sitegw hub` takes by default (uvloop, installed with the gateway) through it all
    assert all(b"event loop: uvloop" in log.read_bytes() for log in logs)


def _rejected(pg: Postgres) -> int:
    with psycopg.connect(pg.dsn) as conn:
        try:
            row = conn.execute("SELECT count(*) FROM rejected_events").fetchone()
        except psycopg.errors.UndefinedTable:
            return 0
        return int(row[0]) if row else 0
