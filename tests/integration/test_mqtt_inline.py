"""A wake of the MQTT reader handed to the pipeline in the reader's own callback (drivers/mqtt/session.py
`handle_now`), on a real Mosquitto with a real spool: what the session's task did before, without waking it; and
where it cannot (a dead letter to publish), the task as before, the order kept."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest

from drivers.mqtt.client import BrokerParams
from drivers.mqtt.payloads import PayloadDecoder
from drivers.mqtt.session import MqttDeviceRoute, MqttSession
from drivers.profile import MqttProfile, builtin_profiles
from gateway.heard import SeenSubmit
from gateway.liveness import Liveness
from gateway.metrics import Metrics
from gateway.pipeline import Pipeline
from gateway.spool import Spool
from gateway.supervisor import run_stream
from services.local import Service
from telemetry.lineproto import series_tags
from tests.integration.test_mqtt_ack import device

TOPIC = "inline/site/formwork/FW-1/data"


class Site:
    """Session + pipeline + spool as the gateway wires them (gateway/app.py), the session's calls counted."""

    def __init__(
        self, port: int, spool_dir: Path, client_id: str, linger_s: float = 0.005, linger_n: int = 1, **params: Any
    ) -> None:
        self.spool = Spool(spool_dir, max_bytes=1 << 20, segment_bytes=1 << 18, sync_interval_s=1.0)
        self.spool.open()
        metrics = Metrics()
        tags = {"FW-1": series_tags("formwork", "s", "FW-1", "")}
        self.pipe = Pipeline(self.spool, tags, metrics, ack_linger_s=linger_s, ack_linger_messages=linger_n)
        counted: list[int] = []
        live = Liveness(metrics, {"FW-1": 600.0})
        sub = SeenSubmit(live, self.pipe.submit, counted.append, self.pipe.ready_now, self.pipe.take_now)
        prof = builtin_profiles()["formwork_mqtt_v1"]
        assert isinstance(prof, MqttProfile)
        broker = BrokerParams(
            id="b",
            host="127.0.0.1",
            port=port,
            client_id=client_id,
            username=None,
            password=None,
            protocol_v5=False,
            keepalive_s=30,
            dead_letter_topic="inline/dl",
        )
        broker = replace(broker, **params)  # (BrokerParams fields: protocol_v5, receive_maximum)
        route = MqttDeviceRoute("FW-1", "FW-1", "inline/site/formwork/+/data", PayloadDecoder(prof))
        self.letters: list[str] = []
        self.s = MqttSession(broker, [route], sub, lambda kind, msg, dev: self.letters.append(msg), now=sub)
        self.calls = {"tried": 0, "now": 0, "task": 0}
        self.handed = 0  # messages the session took from its reader
        now, task = self.s.handle_now, self.s.handle_batch

        def handle_now(msgs: list[Any]) -> bool:
            self.calls["tried"] += 1
            took = now(msgs)
            self.calls["now"] += took
            self.handed += len(msgs) if took else 0
            return took

        async def handle_batch(msgs: list[Any], redeliverable: bool = False) -> None:
            self.calls["task"] += 1
            self.handed += len(msgs)
            await task(msgs, redeliverable)

        self.s.handle_now = handle_now  # type: ignore[method-assign]
        self.s.handle_batch = handle_batch  # type: ignore[method-assign]

    def start(self) -> list[asyncio.Task[None]]:
        """The session and the pipeline running, as the gateway's supervisor runs them."""
        return [
            asyncio.create_task(run_stream(self.s), name="session"),
            asyncio.create_task(self.pipe.run(), name="pipeline"),
        ]

    async def stop(self, tasks: list[asyncio.Task[None]]) -> None:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.spool.close()

    def has(self, n: int) -> Callable[[], bool]:
        return lambda: len(self.stored()) == n

    def all_acked(self) -> bool:
        """Every message the session took is acknowledged. The pipeline's own lists are empty while it waits on the
        fsync those acknowledgements follow (`Pipeline.run`), so they alone do not say it: a test stopping then
        would cancel the fsync and leave the last batch to be delivered again."""
        inbox = self.s.inbox
        return inbox is not None and inbox.out == 0 and not self.pipe._acks and not self.pipe._held

    def stored(self) -> list[bytes]:
        """The settlement lines in the spool (FW-1's `up` line aside)."""
        lines = b"".join(seg.path.read_bytes() for seg in self.spool.segments).splitlines()
        return [line for line in lines if b"settlement=" in line]


def settlement(dev: paho.Client, value: float, ts_ms: int) -> None:
    dev.publish(TOPIC, json.dumps({"ts": ts_ms, "data": {"settlement": value}}), qos=1).wait_for_publish(5)


async def until(cond: Callable[[], bool], what: str, wait_s: float = 10) -> None:
    for _ in range(int(wait_s / 0.01)):
        if cond():
            return
        await asyncio.sleep(0.01)
    pytest.fail(f"not within {wait_s} s: {what}")


async def test_each_wake_is_taken_in_the_readers_callback_and_a_dead_letter_in_the_task(
    mosquitto: Service, tmp_path: Path
) -> None:
    site = Site(mosquitto.port, tmp_path / "spool", "sitegw-inline-1")
    tasks = site.start()
    try:
        await asyncio.wait_for(site.s.connected.wait(), 10)
        with device(mosquitto.port) as dev:
            for i in range(20):  # one at a time, as a site sends them: each its own wake
                settlement(dev, i, 1795224600_000 + i)
                await until(site.has(i + 1), f"message {i} spooled")
            dev.publish(TOPIC, b"{not json", qos=1).wait_for_publish(5)
            settlement(dev, 20, 1795224600_000 + 20)
            await until(lambda: len(site.stored()) == 21, "the message after the dead letter spooled")
        await asyncio.wait_for(site.pipe.drained(), 10)
    finally:
        await site.stop(tasks)
    assert site.calls["now"] >= 20  # the 20 (and maybe the one after the letter) without the session's task
    assert site.calls["task"] >= 1  # the dead letter's wake: its publishing is a coroutine
    assert len(site.letters) == 1 and "inline/site/formwork/FW-1/data" in site.letters[0]
    values = [float(line.split(b"settlement=")[1].split(b" ")[0]) for line in site.stored()]
    assert values == list(range(21))  # all of them, in the order sent


async def test_a_bug_in_the_callback_ends_the_session_as_one_in_its_task_would(
    mosquitto: Service, tmp_path: Path
) -> None:
    """A fault that is not the connection's (here the decoder's) must reach the supervisor as that fault, not as a
    lost connection to reconnect quietly; the message it met is not acknowledged, so the broker delivers it again."""
    site = Site(mosquitto.port, tmp_path / "spool", "sitegw-inline-2")
    route_decoder = site.s._by_filter["inline/site/formwork/+/data"][0]
    parse = route_decoder.parse
    boom = [True]

    def faulty(payload: Any) -> Any:
        if boom[0]:
            boom[0] = False
            raise RuntimeError("decoder bug")
        return parse(payload)

    route_decoder.parse = faulty  # type: ignore[method-assign]
    pipeline = asyncio.create_task(site.pipe.run(), name="pipeline")
    session = asyncio.create_task(run_stream(site.s), name="session")
    try:
        await asyncio.wait_for(site.s.connected.wait(), 10)
        with device(mosquitto.port) as dev:
            settlement(dev, 1.5, 1795224600_000)
            with pytest.raises(RuntimeError, match="decoder bug"):
                await asyncio.wait_for(session, 10)
            assert site.stored() == []
            assert site.calls == {"tried": 1, "now": 0, "task": 0}  # it met the bug in the reader's callback
            # restarted as gateway/tasks.py would: the broker delivers the message again, and it is stored
            session = asyncio.create_task(run_stream(site.s), name="session-again")
            await until(lambda: len(site.stored()) == 1, "the message delivered again")
    finally:
        for t in (session, pipeline):
            t.cancel()
        await asyncio.gather(session, pipeline, return_exceptions=True)
        site.spool.close()
    assert b"settlement=1.5" in site.stored()[0]
