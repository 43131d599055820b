"""The uplink over TLS (issue 16): the regional cluster takes TLS connections only. A site whose `uplink.ca_file`
is not the CA that signed the cluster's certificate does not connect (its events wait, /health says so, the log
says why); with the right CA the same outbox drains: every event of the site's log is in the stream, in order."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import ssl
from pathlib import Path
from typing import Any

import nats
from nats.js.api import StreamConfig

from services import local
from services.local import Service, wait_for
from services.regional import NatsUser, nats_cluster
from tests.gas import Detector
from tests.integration.test_mqtt_security import make_certs
from tests.sites import http_up, reasons, start_gateway, write_site

HUB_PW = "hub-tls-secret-1"
SITE_PW = "site-t-tls-secret-1"


async def _hub(urls: list[str], ca: Path, add: bool = False) -> list[dict[str, Any]]:
    """As the hub: create the stream (add) or read every event in it, over TLS."""
    ctx = ssl.create_default_context(cafile=str(ca))
    nc = await nats.connect(servers=urls, user="hub", password=HUB_PW, tls=ctx)
    try:
        js = nc.jetstream()
        if add:
            await js.add_stream(StreamConfig(name="HUB", subjects=["sitegw.*.events"], num_replicas=3))
            return []
        info = await js.stream_info("HUB")
        out: list[dict[str, Any]] = []
        if info.state.messages:
            sub = await js.subscribe("sitegw.*.events", ordered_consumer=True)
            while len(out) < info.state.messages:
                out.append(json.loads((await sub.next_msg(timeout=5)).data))
            await sub.unsubscribe()
        return out
    finally:
        await nc.close()


def test_the_uplink_speaks_tls_and_refuses_a_cluster_it_cannot_verify(
    tmp_path: Path, mosquitto: Service, influxdb: Service
) -> None:
    good, other = tmp_path / "pki", tmp_path / "other-pki"
    for d in (good, other):
        d.mkdir()
        make_certs(d)  # a CA and a certificate for 127.0.0.1 signed by it
    users = [NatsUser("hub", HUB_PW), NatsUser("site-t", SITE_PW, site="t")]
    cluster = nats_cluster(tmp_path / "nats", users=users, tls=(good / "server.crt", good / "server.key"))
    cluster.start()
    urls = [u.replace("nats://", "tls://") for u in cluster.urls]
    http = local.free_port()
    base = f"http://127.0.0.1:{http}"
    site = tmp_path / "site.yaml"

    def configure(ca: Path) -> Any:
        return write_site(
            site,
            influx_port=influxdb.port,
            mqtt_port=mosquitto.port,
            http_port=http,
            devices=[{"id": "GAS-T1", "profile": "gas_4in1_mqtt_v1", "broker": "b", "topic": "site/tls/gas/+"}],
            uplink={
                "servers": urls,
                "user": "site-t",
                "password_env": "T_UPLINK_PW",
                "ca_file": str(ca),
                "behind_after_s": 1.0,
                "timeout_s": 2.0,
            },
        )

    env = {"T_UPLINK_PW": SITE_PW}
    log = tmp_path / "gateway.log"
    det = Detector(mosquitto.port, lel=30.0, sn="GAS-T1", prefix="site/tls/gas")  # 报警 >= 25 %LEL
    configure(other / "ca.crt")  # a CA that did not sign the cluster's certificate
    gw = start_gateway(site, log, env)
    try:
        asyncio.run(_hub(urls, good / "ca.crt", add=True))
        wait_for(lambda: http_up(base), 30, 0.2, "the gateway's HTTP")
        det.start()
        wait_for(lambda: "uplink_behind" in (reasons(base) or {}), 30, 0.3, "/health: uplink_behind (CA refused)")
        assert asyncio.run(_hub(urls, good / "ca.crt")) == []  # nothing got through
        assert "CERTIFICATE_VERIFY_FAILED" in log.read_text(encoding="utf-8")
        gw.send_signal(signal.SIGTERM)
        gw.wait(20)
        cfg = configure(good / "ca.crt")  # the right CA: the same outbox goes out
        gw = start_gateway(site, log, env)
        wait_for(lambda: http_up(base), 30, 0.2, "the gateway's HTTP after the restart")
        wait_for(lambda: (r := reasons(base)) is not None and "uplink_behind" not in r, 60, 0.3,
                 "/health: uplink caught up over TLS")  # fmt: skip
        det.close()
        gw.send_signal(signal.SIGTERM)
        gw.wait(20)
        events = asyncio.run(_hub(urls, good / "ca.crt"))
    finally:
        det.close()
        if gw.poll() is None:
            gw.kill()
            gw.wait()
        cluster.stop()
    state = sqlite3.connect(cfg.alarms.state_file)
    logged = [(k, a) for k, a in state.execute("SELECT kind, alarm_id FROM alarm_log ORDER BY id")]
    state.close()
    got = [(e["kind"].removeprefix("alarm."), e["data"]["alarm_id"]) for e in events if e["kind"].startswith("alarm.")]
    assert logged and got == logged  # the raise made while the CA was refused, and all since, once, in order
