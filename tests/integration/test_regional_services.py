"""The regional hub's ground (issue 16), checked on the real services before anything is built on it: a 3-node
NATS JetStream cluster keeps a replicated stream through the loss of a node, hands every message once to a durable
pull consumer shared by two hub replicas, and takes site events over MQTT too; PostgreSQL keeps what it committed
through a kill -9."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
import paho.mqtt.client as paho
import psycopg
import pytest
from nats.js.api import ConsumerConfig, StreamConfig
from paho.mqtt.enums import CallbackAPIVersion

from services.regional import NatsCluster, NatsUser, Postgres, nats_cluster


@pytest.fixture
async def js_stream(cluster: NatsCluster) -> AsyncIterator[nats.NATS]:
    nc = await nats.connect(servers=cluster.urls, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    js = nc.jetstream()
    # R3 file storage: an event acknowledged to a site is on two nodes at least
    await js.add_stream(StreamConfig(name="SITES", subjects=["site.*.events"], num_replicas=3))
    try:
        yield nc
    finally:
        await nc.close()


async def _publish(nc: nats.NATS, subject: str, event_id: str, deadline_s: float = 30.0) -> None:
    """As a site's uplink must: retry until the cluster acknowledges (a lost node's stream leader is re-elected
    within seconds). The event id is the message id, so a retry after a lost acknowledgement is stored once."""
    js = nc.jetstream()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + deadline_s
    while True:
        try:
            await js.publish(
                subject, json.dumps({"id": event_id}).encode(), timeout=2, headers={"Nats-Msg-Id": event_id}
            )
            return
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError, nats.js.errors.NoStreamResponseError):
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.2)


async def _drain(nc: nats.NATS, durable: str, want: int, within_s: float = 30.0) -> list[bytes]:
    """Fetch from the durable pull consumer until `want` messages came (each acked) or `within_s` passed."""
    js = nc.jetstream()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while True:  # as the hub does: the consumer's creation waits for a meta leader after a node is lost
        try:
            sub = await js.pull_subscribe("site.*.events", durable=durable, config=ConsumerConfig(ack_wait=5))
            break
        except nats.errors.Error:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.2)
    got: list[bytes] = []
    while len(got) < want and loop.time() < deadline:
        try:
            for m in await sub.fetch(50, timeout=1):
                got.append(m.data)
                await m.ack()
        except nats.errors.TimeoutError:
            continue
    return got


async def test_a_replicated_stream_keeps_every_event_through_a_killed_node(
    cluster: NatsCluster, js_stream: nats.NATS
) -> None:
    js = js_stream.jetstream()
    for i in range(100):
        await _publish(js_stream, "site.s1.events", f"s1-{i}")
    cluster.kill_node(cluster.nodes[0])  # kill -9 mid-stream
    for i in range(100, 200):  # acknowledged again once a leader is re-elected: two of three replicas are a quorum
        await _publish(js_stream, "site.s1.events", f"s1-{i}")
    got = await _drain(js_stream, "hub", 200)
    assert [json.loads(b)["id"] for b in got] == [f"s1-{i}" for i in range(200)]  # all, once, in order
    cluster.start_node(cluster.nodes[0])  # back: it catches up and the cluster agrees on a leader again
    info = await js.stream_info("SITES")
    assert info.state.messages == 200


async def test_two_hub_replicas_share_one_durable_consumer_and_see_each_event_once(js_stream: nats.NATS) -> None:
    js = js_stream.jetstream()
    for i in range(300):
        await js.publish(f"site.s{i % 3}.events", json.dumps({"id": i}).encode())
    a, b = await asyncio.gather(_drain(js_stream, "hub", 150, 8.0), _drain(js_stream, "hub", 150, 8.0))
    ids = [json.loads(x)["id"] for x in a + b]
    assert sorted(ids) == list(range(300))  # every event reached exactly one replica
    assert a and b  # and both replicas took part


async def test_a_site_may_publish_its_events_over_mqtt(cluster: NatsCluster, js_stream: nats.NATS) -> None:
    """MQTT QoS 1 on any node lands in the stream (topic site/s9/events is subject site.s9.events)."""
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id="site-s9")
    c.connect("127.0.0.1", cluster.nodes[2].mqtt_port)
    c.loop_start()
    try:
        infos = [c.publish("site/s9/events", json.dumps({"id": f"s9-{i}"}), qos=1) for i in range(20)]
        for info in infos:
            info.wait_for_publish(10)
    finally:
        c.loop_stop()
        c.disconnect()
    got = await _drain(js_stream, "hub", 20)
    assert [json.loads(b)["id"] for b in got] == [f"s9-{i}" for i in range(20)]


def test_postgres_keeps_what_it_committed_through_a_kill(pg: Postgres) -> None:
    with psycopg.connect(pg.dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE ev (id text PRIMARY KEY, n int)")
        with conn.transaction():
            for i in range(50):
                conn.execute("INSERT INTO ev VALUES (%s, %s) ON CONFLICT (id) DO NOTHING", (f"e{i}", i))
    pg.kill()
    pg.start()  # crash recovery from the WAL
    with psycopg.connect(pg.dsn) as conn:
        assert conn.execute("SELECT count(*), sum(n) FROM ev").fetchone() == (50, sum(range(50)))


async def test_a_site_login_publishes_only_its_own_events(tmp_path: Path) -> None:
    """Per-site credentials: site s1's login is acknowledged on its own subject, refused on site s2's (nothing of it
    reaches the stream), and a wrong password does not connect at all."""
    users = [NatsUser("hub", "hub-pw-1"), NatsUser("s1", "s1-pw-1", site="s1"), NatsUser("s2", "s2-pw-1", site="s2")]
    c = nats_cluster(tmp_path / "nats", users=users)
    c.start()
    try:
        hub = await nats.connect(servers=c.urls, user="hub", password="hub-pw-1")
        await hub.jetstream().add_stream(StreamConfig(name="SITES", subjects=["sitegw.*.events"], num_replicas=3))
        s1 = await nats.connect(
            servers=c.urls, user="s1", password="s1-pw-1", error_cb=_quiet, inbox_prefix=b"_INBOX_s1"
        )
        js = s1.jetstream()
        ack = await js.publish("sitegw.s1.events", b'{"id": "s1-own"}', timeout=5)
        assert ack.stream == "SITES"
        # replies reach a site on its own inbox prefix only: it cannot listen to another site's (its notices)
        seen: list[bytes] = []

        async def spy(m: Any) -> None:
            seen.append(m.data)

        await s1.subscribe("_INBOX_s2.>", cb=spy)
        await s1.subscribe("_INBOX.>", cb=spy)
        await s1.flush()
        await hub.publish("_INBOX_s2.abc", b"a notice for s2")
        await hub.publish("_INBOX.abc", b"someone's reply")
        await hub.flush()
        await asyncio.sleep(0.5)
        assert seen == []
        with pytest.raises(nats.errors.TimeoutError):  # the server drops it: no acknowledgement ever comes
            await js.publish("sitegw.s2.events", b'{"id": "s1-as-s2"}', timeout=2)
        info = await hub.jetstream().stream_info("SITES")
        assert info.state.messages == 1
        with pytest.raises(nats.errors.Error, match="Authorization Violation"):
            await nats.connect(
                servers=[c.urls[0]],
                user="s1",
                password="wrong",
                allow_reconnect=False,
                connect_timeout=2,
                error_cb=_quiet,
            )
        await s1.close()
        await hub.close()
    finally:
        c.stop()


async def _quiet(err: Exception) -> None:
    """The permission violation and the refused login arrive here too; the test asserts on the outcomes."""
