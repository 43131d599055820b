"""A QoS 1 message on a topic that is not UTF-8, from a real broker that passes it on (nats-server 2.9's MQTT):
dead-lettered and acknowledged once, the connection kept, the messages around it stored."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho

from gateway.app import Gateway
from services.local import Service, wait_for
from services.regional import NatsCluster
from tests.sites import write_site

DEVICES = [
    {
        "id": "FW-A01",
        "profile": "formwork_mqtt_v1",
        "broker": "b",
        "topic": "site/t/formwork/+/data",
        "expected_interval_s": 30.0,
    },
]
BAD_TOPIC = b"site/t/formwork/FW-\xff\xfe/data"  # (Mosquitto refuses such a topic from a publisher)


def _raw_publish(client: paho.Client, topic: bytes, payload: bytes, mid: int) -> None:
    """A QoS 1 PUBLISH written as paho writes one, with a topic paho's own `publish` will not take."""
    body = len(topic).to_bytes(2, "big") + topic + mid.to_bytes(2, "big") + payload
    assert len(body) < 128  # (a one-byte remaining length)
    client.socket().send(bytes([0x32, len(body)]) + body)


async def test_a_topic_not_in_utf8_is_dead_lettered_once_and_the_connection_is_kept(
    tmp_path: Path, influxdb: Service, cluster: NatsCluster
) -> None:
    port = cluster.nodes[0].mqtt_port  # (the regional hub's cluster, MQTT on each node)
    site = write_site(tmp_path / "site.yaml", influx_port=influxdb.port, mqtt_port=port, devices=DEVICES)
    letters: list[dict[str, Any]] = []
    subscribed = threading.Event()
    dlq = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="dlq")
    dlq.on_message = lambda c, u, m: letters.append(json.loads(m.payload))
    dlq.on_subscribe = lambda *a: subscribed.set()
    dev = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="device")
    try:
        dlq.connect("127.0.0.1", port)
        dlq.subscribe("t/deadletter", qos=1)
        dlq.loop_start()
        assert subscribed.wait(10)
        dev.connect("127.0.0.1", port)
        dev.loop_start()
        async with Gateway(site) as gw:
            session = gw.sessions[0]
            await asyncio.wait_for(session.connected.wait(), 10)
            t0 = time.time_ns() // 1_000_000

            def good(i: int) -> bytes:
                return json.dumps({"ts": t0 + i, "data": {"settlement": 1.0 + i, "force": 20.5}}).encode()

            dev.publish("site/t/formwork/FW-A01/data", good(0), qos=1).wait_for_publish(5)
            _raw_publish(dev, BAD_TOPIC, good(1), mid=60001)
            dev.publish("site/t/formwork/FW-A01/data", good(2), qos=1).wait_for_publish(5)
            await asyncio.to_thread(wait_for, lambda: len(letters) >= 1 and gw.metrics.mqtt_messages >= 3, 15,
                                    what="the three messages and a dead letter")  # fmt: skip
            assert gw.pipeline.latest[("FW-A01", "settlement")].value == 3.0  # the message after it came in
            assert await gw.flush(20)
            await asyncio.sleep(3)  # long enough for a reconnect and a redelivery, if the connection had ended
            assert session.connects == 1 and session.reconnects == 0
            assert gw.metrics.mqtt_messages == 3  # the bad one once: acknowledged, not delivered again
            assert len(letters) == 1, letters
            letter = letters[0]
            assert letter["topic"] == "site/t/formwork/FW-\\xff\\xfe/data"
            assert letter["reason"].startswith("the topic is not UTF-8 (its bytes shown as \\xNN); ")
            assert "no device with key" in letter["reason"]  # (the rest: no device has the topic's key)
            assert sum(gw.metrics.dead_letters.values()) == 1
    finally:
        for c in (dev, dlq):
            c.loop_stop()
            c.disconnect()
