"""An uplink event larger than the regional cluster takes (its max_payload, 1 MB by default) is set aside on the site
and the outbox goes on: once NATS's MaxPayloadError was retried for ever and no later event of the site arrived."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from datetime import date, timedelta
from pathlib import Path

import nats
from nats.js.api import StreamConfig

from alerting.db import connect
from alerting.hazards import HazardConfig, Hazards
from alerting.roles import Role
from alerting.uplink import UplinkOutbox
from gateway.config.sections import UplinkConfig
from gateway.metrics import Metrics
from gateway.uplink import Uplink
from services.regional import NatsCluster


async def _stream_kinds(urls: list[str]) -> list[str]:
    nc = await nats.connect(servers=urls)
    try:
        js = nc.jetstream()
        n = (await js.stream_info("SITES")).state.messages
        sub = await js.subscribe("sitegw.*.events", ordered_consumer=True)
        kinds = [json.loads((await sub.next_msg(timeout=5)).data)["kind"] for _ in range(n)]
        await sub.unsubscribe()
        return kinds
    finally:
        await nc.close()


async def _run_until_sent(up: Uplink, box: UplinkOutbox) -> None:
    """Runs the uplink until its outbox is empty (polled 150 times, 0.2 s apart: the outbox is SQLite, nothing to
    wait on), then stops it."""
    task = asyncio.create_task(up.run(), name="uplink")
    try:
        for _ in range(150):
            if not box.backlog()[0]:
                break
            await asyncio.sleep(0.2)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_an_event_over_max_payload_is_set_aside_and_later_events_go_on(
    tmp_path: Path, cluster: NatsCluster
) -> None:
    nc = await nats.connect(servers=cluster.urls)
    await nc.jetstream().add_stream(StreamConfig(name="SITES", subjects=["sitegw.*.events"], num_replicas=1))
    await nc.close()
    conn = connect(tmp_path / "state.db")
    box, metrics = UplinkOutbox("s1"), Metrics()
    up = Uplink(box, conn, UplinkConfig(servers=cluster.urls), "s1", metrics)
    hz = Hazards(conn, time.time_ns, HazardConfig(), hooks=[box.on_hazard])
    h1 = hz.report(actor="li", role=Role.OFFICER, unit_name="u", description="first", source="inspection")
    hz.confirm(h1, actor="wang", role=Role.MANAGER, klass="general", basis=None)
    # 1.2 MB of 整改措施 in one event, over the cluster's 1 MB
    hz.assign(h1, actor="wang", role=Role.MANAGER, responsible="zhao", measures="更换力矩限制器并" * 50_000,
              deadline=date.today() + timedelta(days=3))  # fmt: skip
    hz.report(actor="li", role=Role.OFFICER, unit_name="u", description="a later hazard", source="inspection")
    await _run_until_sent(up, box)
    assert box.backlog()[0] == 0, f"the outbox is stuck: {metrics.uplink_failures} failures, {up._last_error}"
    # the later hazard's report reached the cluster; the oversized assignment is kept on the site with its reason
    assert await _stream_kinds(cluster.urls) == ["hazard.report", "hazard.confirm", "hazard.report"]
    row = conn.execute("SELECT kind, reason, length(body) FROM uplink_set_aside").fetchall()
    assert len(row) == 1 and row[0][0] == "hazard.assign" and "max_payload" in row[0][1], row
    assert metrics.uplink_set_aside == 1 and metrics.uplink_failures == 0
    assert "sitegw_uplink_set_aside 1\n" in metrics.render(0, 0, 0)
    conn.close()


async def test_an_event_that_fits_with_its_headers_is_sent(tmp_path: Path, cluster: NatsCluster) -> None:
    """The server's max_payload counts the headers with the body; a flat 256 bytes of room for them set aside an
    event of max_payload - 100 that the server takes (its Nats-Msg-Id header is ~50 bytes). The exact fit is sent,
    one byte more is set aside."""
    from gateway.uplink import headers_len

    nc = await nats.connect(servers=cluster.urls)
    await nc.jetstream().add_stream(StreamConfig(name="SITES", subjects=["sitegw.*.events"], num_replicas=1))
    limit = nc.max_payload
    await nc.close()
    conn = connect(tmp_path / "state.db")
    box, metrics = UplinkOutbox("s1"), Metrics()
    box.bind(conn)
    for n, extra in ((1, 0), (2, 1)):  # notice 1 fits exactly; notice 2 is one byte over
        box.on_notice(conn, "notice.received", n, {"notice_id": n, "pad": ""})
        ev = box.pending(10)[-1]
        room = limit - headers_len(ev.event_id) - len(ev.body.encode())
        conn.execute("DELETE FROM uplink_outbox WHERE seq = ?", (ev.seq,))
        box.on_notice(conn, "notice.received", n, {"notice_id": n, "pad": "x" * (room + extra)})
    conn.commit()
    up = Uplink(box, conn, UplinkConfig(servers=cluster.urls), "s1", metrics)
    await _run_until_sent(up, box)
    aside = [json.loads(b)["notice_id"] for (b,) in conn.execute("SELECT body FROM uplink_set_aside")]
    assert aside == [2] and await _stream_kinds(cluster.urls) == ["notice.received"]
    conn.close()
