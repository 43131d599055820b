"""The sites' stream as the hub creates it (hub/consumer.py ensure_stream) on a real JetStream cluster: events are
kept `nats.max_age_days` (7 by default), the oldest dropped first; once it had no limit and filled the store until
every site's publish was refused. A stream made without a limit is left as it is, with a warning."""

from __future__ import annotations

import asyncio
import logging

import nats
import pytest
from nats.js.api import DiscardPolicy, StreamConfig

from hub.consumer import HubConfig, ensure_stream
from services.regional import NatsCluster


async def test_the_hub_creates_the_stream_with_retention(cluster: NatsCluster) -> None:
    nc = await nats.connect(servers=cluster.urls)
    try:
        js = nc.jetstream()
        await ensure_stream(js, HubConfig(cluster.urls, "", replicas=1))
        c = (await js.stream_info("SITES")).config
        assert (c.max_age, c.discard) == (7 * 86400, DiscardPolicy.OLD)
        # and the limit works: a stream of a 1 s retention empties by itself
        short = HubConfig(cluster.urls, "", stream="SHORT", subjects=["short.*.events"], replicas=1, max_age_s=1.0)
        await ensure_stream(js, short)
        for i in range(3):
            await js.publish("short.A.events", b"{}", headers={"Nats-Msg-Id": str(i)})
        for _ in range(150):  # polled, 0.2 s apart
            if not (await js.stream_info("SHORT")).state.messages:
                break
            await asyncio.sleep(0.2)
        else:
            pytest.fail("the 1 s stream kept its messages")
    finally:
        await nc.close()


async def test_an_existing_stream_without_limits_is_warned_of(
    cluster: NatsCluster, caplog: pytest.LogCaptureFixture
) -> None:
    nc = await nats.connect(servers=cluster.urls)
    try:
        js = nc.jetstream()
        await js.add_stream(StreamConfig(name="SITES", subjects=["sitegw.*.events"], num_replicas=1))
        with caplog.at_level(logging.WARNING, logger="sitegw.hub"):
            await ensure_stream(js, HubConfig(cluster.urls, "", replicas=1))
        assert "stream SITES has no retention limit" in caplog.text and "--max-age 168h" in caplog.text
        assert not (await js.stream_info("SITES")).config.max_age  # left as it is: the operator's to change
    finally:
        await nc.close()
