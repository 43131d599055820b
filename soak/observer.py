"""An independent MQTT witness: a persistent QoS 1 session that records what the devices published, the dead
letters and the siren messages; and the injector of malformed payloads."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

MALFORMED_MARK = "soak-malformed"


@dataclass
class Witness:
    """Seen messages, de-duplicated by content: a QoS 1 redelivery to this session is the same message."""

    device_msgs: dict[tuple[str, bytes], int] = field(default_factory=dict)  # (topic, payload) -> first seen ns
    dead_letters: set[str] = field(default_factory=set)  # the original payload text of each dead letter
    dead_letter_copies: int = 0
    siren_keys: Counter[str] = field(default_factory=Counter)  # idempotency key -> messages with that key
    lock: threading.Lock = field(default_factory=threading.Lock)


class Observer:
    """paho in its own thread; reconnects by itself, and the broker (persistence on) keeps its session and queue
    across a broker restart, so nothing published while it reconnects is missed."""

    def __init__(self, port: int, device_topics: list[str], dead_letter_topic: str, siren_topic: str) -> None:
        self.port = port
        self.device_topics = device_topics
        self.dead_letter_topic = dead_letter_topic
        self.siren_topic = siren_topic
        self.seen = Witness()
        self.connected = threading.Event()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id="soak-witness", clean_session=False, reconnect_on_failure=True
        )
        self.client.max_inflight_messages_set(100)
        self.client.max_queued_messages_set(0)
        self.client.reconnect_delay_set(1, 2)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *_: self.connected.clear()
        self.client.on_message = self._on_message

    def start(self) -> None:
        self.client.connect("127.0.0.1", self.port, keepalive=10)
        self.client.loop_start()
        if not self.connected.wait(15):
            raise RuntimeError("the MQTT witness could not connect")

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client: paho.Client, _ud: object, _flags: object, rc: object, _props: object) -> None:
        # subscribing again on every connect is harmless and covers a broker that lost the session after all
        subs = [(t, 1) for t in [*self.device_topics, self.dead_letter_topic, self.siren_topic]]
        client.subscribe(subs)
        self.connected.set()

    def _on_message(self, _c: paho.Client, _ud: object, msg: paho.MQTTMessage) -> None:
        s = self.seen
        with s.lock:
            if msg.topic == self.dead_letter_topic:
                s.dead_letter_copies += 1
                body = json.loads(msg.payload)
                s.dead_letters.add(str(body.get("payload", body.get("payload_b64", ""))))
            elif msg.topic == self.siren_topic:
                s.siren_keys[str(json.loads(msg.payload)["key"])] += 1
            else:
                s.device_msgs.setdefault((msg.topic, bytes(msg.payload)), time.time_ns())

    def quiet_for(self, seconds: float, timeout: float) -> None:
        """Wait until no new message has arrived for `seconds` (the end of a drain), at most `timeout`."""
        deadline = time.monotonic() + timeout
        last = self._size()
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.5)
            now = self._size()
            if now != last:
                last, quiet_since = now, time.monotonic()
            elif time.monotonic() - quiet_since >= seconds:
                return

    def _size(self) -> tuple[int, int, int]:
        s = self.seen
        with s.lock:
            return len(s.device_msgs), s.dead_letter_copies, sum(s.siren_keys.values())


def inject_malformed(port: int, topic: str, first: int, n: int) -> list[str]:
    """Publish `n` payloads that are not JSON (each unique, so dead letters can be matched one to one)."""
    sent: list[str] = []
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"soak-injector-{first}")
    c.connect("127.0.0.1", port, keepalive=10)
    c.loop_start()
    try:
        for i in range(first, first + n):
            text = f'{{"{MALFORMED_MARK}": {i}, "readings": [{{"name": "LEL", '  # cut short: not JSON
            c.publish(topic, text.encode(), qos=1).wait_for_publish(10)
            sent.append(text)
    finally:
        c.disconnect()
        c.loop_stop()
    return sent


def prime_session(port: int, client_id: str, topics: list[str]) -> None:
    """Open the gateway's persistent session (its client id, its filters, QoS 1) before any device publishes, as
    on a site where the gateway has run before: the broker then queues every device message for the gateway from
    the first one, and "published" means the same for the witness and for the gateway."""
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
    done = threading.Event()
    c.on_subscribe = lambda *_: done.set()
    c.connect("127.0.0.1", port, keepalive=10)
    c.loop_start()
    try:
        c.subscribe([(t, 1) for t in topics])
        if not done.wait(10):
            raise RuntimeError("could not open the gateway's MQTT session")
    finally:
        c.disconnect()
        c.loop_stop()
