"""A message on a topic that is not UTF-8, from a real broker that passes it on (nats-server 2.9's MQTT), at QoS 1
and at QoS 0 (a NATS publish): dead-lettered, the first acknowledged once, the connection kept, the messages around
them stored."""

from __future__ import annotations

import asyncio
import json
import socket
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


def _nats_publish(port: int, subject: bytes, payload: bytes) -> None:
    """A NATS core publish (MQTT subscribers get it at QoS 0, its subject's dots as slashes), in NATS's own text
    protocol: no client library would send a subject that is not UTF-8."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.recv(4096)  # INFO
        s.sendall(
            b'CONNECT {"verbose":false}\r\nPUB ' + subject + b" %d\r\n" % len(payload) + payload + b"\r\nPING\r\n"
        )
        assert s.recv(4096).endswith(b"PONG\r\n")


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
            await asyncio.to_thread(
                _nats_publish, cluster.nodes[0].client_port, b"site.t.formwork.GW-\xc3.data", good(3)
            )
            dev.publish("site/t/formwork/FW-A01/data", good(4), qos=1).wait_for_publish(5)
            await asyncio.to_thread(wait_for, lambda: len(letters) >= 2 and gw.metrics.mqtt_messages >= 5, 15,
                                    what="the five messages and two dead letters")  # fmt: skip
            assert gw.pipeline.latest[("FW-A01", "settlement")].value == 5.0  # the messages after them came in
            assert await gw.flush(20)
            await asyncio.sleep(3)  # long enough for a reconnect and a redelivery, if the connection had ended
            assert session.connects == 1 and session.reconnects == 0
            assert gw.metrics.mqtt_messages == 5  # the QoS 1 one once: acknowledged, not delivered again
            assert len(letters) == 2, letters
            assert [x["topic"] for x in letters] == [
                "site/t/formwork/FW-\\xff\\xfe/data",
                "site/t/formwork/GW-\\xc3/data",
            ]
            for letter in letters:
                assert letter["reason"].startswith("the topic is not UTF-8 (its bytes shown as \\xNN); ")
                assert "no device with key" in letter["reason"]  # (the rest: no device has the topic's key)
            assert sum(gw.metrics.dead_letters.values()) == 2
    finally:
        for c in (dev, dlq):
            c.loop_stop()
            c.disconnect()
