"""The uplink to a regional hub (issue 16): a site's alarm events reach a 3-node NATS JetStream cluster in order,
each once; with the cluster gone they wait in the outbox (through a `kill -9` of the gateway too) and /health says
so; when it is back they all arrive, oldest first, and the hub's stream holds exactly what the site's log holds."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import nats
from nats.js.api import StreamConfig

from services import local
from services.local import Service, wait_for
from services.regional import NatsCluster, NatsUser, nats_cluster
from tests.gas import Detector
from tests.sites import http_up, reasons, start_gateway, write_site

HUB_PW = "hub-secret-1"
SITE_PW = "site-t-secret-1"


async def _stream(urls: list[str]) -> list[dict[str, Any]]:
    """Every event in the hub's stream, in stream order (an ephemeral ordered consumer reads it all)."""
    nc = await nats.connect(servers=urls, user="hub", password=HUB_PW)
    try:
        js = nc.jetstream()
        info = await js.stream_info("HUB")
        out: list[dict[str, Any]] = []
        if info.state.messages:
            sub = await js.subscribe("sitegw.*.events", ordered_consumer=True)
            while len(out) < info.state.messages:
                msg = await sub.next_msg(timeout=5)
                out.append(json.loads(msg.data))
            await sub.unsubscribe()
        return out
    finally:
        await nc.close()


async def _add_stream(urls: list[str]) -> None:
    nc = await nats.connect(servers=urls, user="hub", password=HUB_PW)
    try:
        await nc.jetstream().add_stream(StreamConfig(name="HUB", subjects=["sitegw.*.events"], num_replicas=3))
    finally:
        await nc.close()


def test_alarm_events_reach_the_hub_in_order_once_through_an_outage_and_a_kill(
    tmp_path: Path, mosquitto: Service, influxdb: Service
) -> None:
    # per-site credentials: the site's login may publish only its own subject
    users = [NatsUser("hub", HUB_PW), NatsUser("site-t", SITE_PW, site="t")]
    cluster: NatsCluster = nats_cluster(tmp_path / "nats", users=users)
    cluster.start()
    http = local.free_port()
    base = f"http://127.0.0.1:{http}"
    site = tmp_path / "site.yaml"
    cfg = write_site(
        site,
        influx_port=influxdb.port,
        mqtt_port=mosquitto.port,
        http_port=http,
        devices=[{"id": "GAS-U1", "profile": "gas_4in1_mqtt_v1", "broker": "b", "topic": "site/u/gas/+"}],
        uplink={
            "servers": cluster.urls,
            "user": "site-t",
            "password_env": "T_UPLINK_PW",
            "behind_after_s": 1.0,
            "timeout_s": 2.0,
        },
    )
    env = {"T_UPLINK_PW": SITE_PW}
    log = tmp_path / "gateway.log"
    det = Detector(mosquitto.port, lel=30.0, sn="GAS-U1", prefix="site/u/gas")  # 报警 >= 25 %LEL
    gw = start_gateway(site, log, env)
    try:
        asyncio.run(_add_stream(cluster.urls))
        wait_for(lambda: http_up(base), 30, 0.2, "the gateway's HTTP")
        det.start()
        wait_for(lambda: any(e["kind"] == "alarm.raised" for e in asyncio.run(_stream(cluster.urls))), 30, 0.3, "raise")

        cluster.stop()  # the hub's cluster is gone (all three nodes)
        det.lel = 5.0  # back to normal: the alarm clears while the hub cannot hear it
        wait_for(lambda: "uplink_behind" in (reasons(base) or {}), 30, 0.3, "/health: uplink_behind")
        gw.send_signal(signal.SIGKILL)  # and the gateway dies with events in its outbox
        gw.wait(10)
        det.lel = 30.0  # raised again while the gateway is down: it sees it after the restart
        gw = start_gateway(site, log, env)
        wait_for(lambda: http_up(base), 30, 0.2, "the gateway's HTTP after kill -9")
        wait_for(lambda: "uplink_behind" in (reasons(base) or {}), 30, 0.3, "/health: still behind after the restart")

        cluster.start()  # back: the outbox drains by itself
        wait_for(lambda: (r := reasons(base)) is not None and "uplink_behind" not in r, 60, 0.3,
                 "/health: uplink caught up")  # fmt: skip
        det.close()
        time.sleep(1.0)
        gw.send_signal(signal.SIGTERM)
        gw.wait(20)
        events = asyncio.run(_stream(cluster.urls))
    finally:
        det.close()
        if gw.poll() is None:
            gw.kill()
            gw.wait()
        cluster.stop()
    # the site's own log of alarm events, in order: the hub must hold exactly these
    state = sqlite3.connect(cfg.alarms.state_file)
    logged = [(k, a) for k, a in state.execute("SELECT kind, alarm_id FROM alarm_log ORDER BY id")]
    left = state.execute("SELECT count(*) FROM uplink_outbox").fetchone()[0]
    state.close()
    assert left == 0  # everything acknowledged left the outbox
    got = [(e["kind"].removeprefix("alarm."), e["data"]["alarm_id"]) for e in events if e["kind"].startswith("alarm.")]
    assert got == logged  # every event once, in the site's order, through the outage and the kill -9
    assert [k for k, _ in logged].count("raised") >= 2  # the raise, and the raise again after the clear
    ids = [e["id"] for e in events]
    assert len(set(ids)) == len(ids)
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs) and all(e["site"] == "t" for e in events)
