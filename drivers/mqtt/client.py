"""Where aiomqtt and paho are spoken (with the socket reader, reader.py): brokers, the subscriber, a held publisher."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import ssl
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import aiomqtt
from paho.mqtt.client import PUBACK, PUBCOMP
from paho.mqtt.matcher import MQTTMatcher

from drivers.mqtt.reader import UNACKED_311, Inbox

# what the session and the gateway use of the library, named here so no other module imports it
log = logging.getLogger("sitegw.mqtt")

Client = aiomqtt.Client
MqttError = aiomqtt.MqttError
MqttCodeError = aiomqtt.MqttCodeError


class TopicMatcher:
    """MQTT topic filters -> values (paho's matcher: `+`, `#`, `$` topics), each topic's matches remembered.

    paho's `iter_match` builds a recursive closure per lookup: a reference cycle, garbage that only the cyclic
    collector frees. paho looks up every message this way (its filtered callbacks, even with none) and so did the
    session: two cycles a message, whose collections stalled the event loop for milliseconds (the alarm latency's
    tail). A site has few topics; a flood of distinct ones only empties the memory now and then."""

    MAX_TOPICS = 4096
    MAX_REMEMBERED_CHARS = 512  # topics may be 64 KiB long: longer ones are looked up each time, never kept

    def __init__(self) -> None:
        self._filters = MQTTMatcher()  # type: ignore[no-untyped-call]
        self._keys: set[str] = set()  # none (paho's filtered callbacks, as we use it): nothing to remember
        self._seen: dict[str, tuple[Any, ...]] = {}

    def __setitem__(self, topic_filter: str, value: Any) -> None:
        self._filters[topic_filter] = value
        self._keys.add(topic_filter)
        self._seen.clear()

    def __delitem__(self, topic_filter: str) -> None:  # paho's message_callback_remove
        del self._filters[topic_filter]  # type: ignore[no-untyped-call]
        self._keys.discard(topic_filter)
        self._seen.clear()

    def __getitem__(self, topic_filter: str) -> Any:
        return self._filters[topic_filter]

    def iter_match(self, topic: str) -> tuple[Any, ...]:
        """The values of every filter that matches `topic`."""
        if not self._keys:
            return ()
        got = self._seen.get(topic)
        if got is None:
            got = tuple(self._filters.iter_match(topic))  # type: ignore[no-untyped-call]
            if len(topic) > self.MAX_REMEMBERED_CHARS:
                return got
            if len(self._seen) >= self.MAX_TOPICS:
                self._seen.clear()
            self._seen[topic] = got
        return got


def _no_cycles(client: aiomqtt.Client) -> aiomqtt.Client:
    # paho's own lookup of filtered callbacks, made for every message received (see TopicMatcher)
    client._client._on_message_filtered = TopicMatcher()  # type: ignore[assignment]
    return client


# CONNACK codes of refused credentials (MQTT 3.1.1: 4 bad user name or password, 5 not authorised; MQTT 5: 134, 135):
# they fail the same way next time, so they are retried slowly (a session) or not at all (a notification)
AUTH_CODES = frozenset({4, 5, 134, 135})


@dataclass(frozen=True, slots=True)
class BrokerParams:
    """A broker as the gateway resolved it from its config: the password read from the environment."""

    id: str
    host: str
    port: int
    client_id: str
    username: str | None
    password: str | None
    protocol_v5: bool
    keepalive_s: int
    dead_letter_topic: str
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_verify: bool = True
    use_tls: bool = False
    receive_maximum: int = 0  # MQTT 5: the in-flight window announced in CONNECT (0: the broker's own)
    read_window_s: float = 0.0  # above `read_window_above` msg/s, messages are handed over in windows (reader.py)
    read_window_above: int = 1500

    @classmethod
    def at(cls, host: str, port: int = 1883, **kw: Any) -> BrokerParams:
        """A broker by address with the defaults of a site file (tests and tools)."""
        base: dict[str, Any] = {
            "id": "b", "client_id": "sitegw", "username": None, "password": None, "protocol_v5": False,
            "keepalive_s": 30, "dead_letter_topic": "sitegw/deadletter",
        }  # fmt: skip
        return cls(host=host, port=port, **{**base, **kw})


def refused_credentials(err: BaseException) -> bool:
    return isinstance(err, aiomqtt.MqttCodeError) and getattr(err.rc, "value", err.rc) in AUTH_CODES


def _tls(p: BrokerParams) -> dict[str, Any]:
    if not p.use_tls:
        return {"tls_params": None, "tls_insecure": None}
    params = aiomqtt.TLSParameters(
        ca_certs=p.tls_ca,
        certfile=p.tls_cert,
        keyfile=p.tls_key,
        cert_reqs=ssl.CERT_REQUIRED if p.tls_verify else ssl.CERT_NONE,
    )
    return {"tls_params": params, "tls_insecure": not p.tls_verify}


def subscriber(p: BrokerParams) -> tuple[aiomqtt.Client, Inbox]:
    """The devices' session: the stable client id, a persistent session, QoS 1 messages acknowledged by hand; and
    the inbox its messages arrive in (drivers/mqtt/reader.py)."""
    kwargs: dict[str, Any] = {}
    if p.protocol_v5:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 7 * 24 * 3600  # keep our subscriptions and queued QoS 1 messages
        if p.receive_maximum:
            # more than a broker's default window (Mosquitto: 20) unacknowledged, so that more messages share one
            # fsync (session.py BatchAck.hold)
            props.ReceiveMaximum = p.receive_maximum
        kwargs.update(protocol=aiomqtt.ProtocolVersion.V5, clean_start=False, properties=props)
    else:
        kwargs.update(protocol=aiomqtt.ProtocolVersion.V311, clean_session=False)
    client = aiomqtt.Client(
        p.host,
        p.port,
        identifier=p.client_id,
        username=p.username,
        password=p.password,
        keepalive=p.keepalive_s,
        max_queued_incoming_messages=0,
        **_tls(p),
        **kwargs,
    )
    # Acknowledge a QoS 1 message only once its readings are in the spool (or it is dead-lettered): a crash
    # before that leaves it unacknowledged, and the broker delivers it again to our persistent session.
    # aiomqtt 2.x has no option for it, so set it on the paho client it wraps (aiomqtt is pinned < 3).
    client._client.manual_ack_set(True)
    return _no_cycles(client), Inbox(client, p.read_window_s, p.read_window_above, p.receive_maximum or UNACKED_311)


Ack = Callable[[], object]  # acknowledges one message


def redeliverer(client: aiomqtt.Client) -> Callable[[], None]:
    """`redeliver()` ends the connection, so that the broker delivers again what it holds unacknowledged on it: for
    messages whose readings could not be made durable (the spool's write or fsync failed). Left unacknowledged on a
    live connection they would be sent again only at the next reconnect, and meanwhile each would hold a place in
    the broker's in-flight window (20 on Mosquitto) until, full, it sent nothing more. The session reconnects with
    its usual backoff (gateway/supervisor.py run_stream); a connection already gone is left as it is."""

    def redeliver() -> None:
        if not client._disconnected.done():
            client._disconnected.set_exception(
                aiomqtt.MqttError("readings not durable in the spool: reconnecting so the broker delivers them again")
            )
            # aiomqtt's exit leaves a connection it finds ended as it is: the socket is closed here (its reader and
            # writer unregistered), or it stayed open, an fd each time, until the broker took the session over
            client._client._sock_close()

    return redeliver


def batch_acker(client: aiomqtt.Client) -> tuple[Callable[[int, int], object], Callable[[list[Ack]], None]]:
    """(ack, ack_all) for the messages of `client`: ack(mid, qos) acknowledges one message (a callable per message,
    for `ack_all`), ack_all(acks) a batch of them with one write to the socket.

    Left to itself, paho asks aiomqtt for a socket writer at the first PUBACK of a batch; aiomqtt hands that over
    thread-safely (a byte through the loop's self-pipe, a wake-up), then adds the writer (an epoll change), the next
    loop turn writes and the writer goes again (another epoll change): 6-8 % of the gateway's CPU at 500 msg/s,
    where the broker's in-flight window keeps batches small. Here paho's "writer registered" flag is held while the
    batch's PUBACKs are queued, and then they are written at once from the event loop; a writer is registered only
    for what the socket does not take. paho and aiomqtt are pinned (< 3); tests/integration/test_mqtt_ack.py checks
    the flag still works this way."""
    paho = client._client

    def lost(err: Exception) -> None:
        # as aiomqtt's own writer does: the connection ends (the session reconnects, the broker delivers what was
        # not acknowledged again); the error never reaches the pipeline task that called us
        log.warning("broker connection failed while acknowledging a batch: %s", err)
        if not client._disconnected.done():
            client._disconnected.set_exception(err)

    # the QoS 1 messages acknowledged inside ack_all: their PUBACKs are packed here, not one by one by paho (a
    # packet dict, a log call and a queue check each: a tenth of the commit's work at site rates)
    collecting: list[int] | None = None

    def ack(mid: int, qos: int) -> object:
        if collecting is not None and qos == 1 and paho._manual_ack:
            collecting.append(mid)
            return None
        return paho.ack(mid, qos)

    def ack_all(acks: list[Ack]) -> None:
        nonlocal collecting
        held = paho._registered_write
        paho._registered_write = True
        queued = len(paho._out_packet)
        mids = collecting = []
        try:
            for one in acks:
                one()
        except Exception as err:  # paho re-raises its callbacks' errors: see lost()
            lost(err)
        finally:
            collecting = None
            paho._registered_write = held
        if mids:
            data = struct.pack(f">{len(mids)}I", *[_PUBACK_OF | mid for mid in mids])  # 0x40 0x02 mid (§3.4)
            paho._out_packet.append(_ack_packet(data))
        _join_acks(paho._out_packet, queued)
        if held:
            # a writer is registered, or its registration is on its way through call_soon_threadsafe: it writes
            # these too. Writing here would unregister it before it is added, and then nothing would remove it (a
            # writable socket's writer runs every loop turn: a core at 100 %)
            return
        try:
            paho.loop_write()  # registers a writer only when the socket would block
        except Exception as err:  # the same
            lost(err)

    return ack, ack_all


_ACKS = frozenset({PUBACK, PUBCOMP})
_PUBACK_OF = (PUBACK << 24) | (2 << 16)  # a PUBACK's fixed header (remaining length 2), above its 16-bit mid


def _ack_packet(data: bytes) -> Any:  # (paho's _OutPacket, a private TypedDict)
    """Acknowledgements as one packet in paho's outgoing queue."""
    return {"command": PUBACK, "mid": 0, "qos": 1, "pos": 0, "to_process": len(data), "packet": data, "info": None}


def _join_acks(out: deque[Any], start: int) -> None:
    """paho writes each packet it has queued with a send() of its own: the acknowledgements queued from `start` on
    become one packet, so a batch's PUBACKs leave in one system call and one TCP segment. Only untouched PUBACK and
    PUBCOMP packets are joined; paho does nothing on writing those but write them."""
    n = len(out) - start
    if n < 2:
        return
    tail = [out.pop() for _ in range(n)]
    tail.reverse()
    if any(p["pos"] or p["command"] not in _ACKS for p in tail):
        out.extend(tail)
        return
    out.append(_ack_packet(b"".join(p["packet"] for p in tail)))


class HeldPublisher:
    """One broker connection for publishing, opened at the first message and kept: a siren must sound within
    milliseconds of the alarm, and a connection per message cost several round trips (CONNECT, CONNACK, DISCONNECT)
    on a gateway busy with its input (`bench/alarm_latency.py`). A held connection can be half-open and fail only at
    the PUBACK timeout, so a publish that fails on a held connection is tried once more on a fresh one. Each
    connection's client id gets a random suffix, so a new connection never makes the broker drop one still closing.

    Failures are the standard library's: PermissionError for refused credentials (they fail the same way next
    time), ConnectionError for the rest (refused, reset, timeout); an unreadable TLS file raises as it is. Their
    messages never carry the password."""

    def __init__(self, p: BrokerParams, client_id: str | None = None, timeout_s: float = 10.0) -> None:
        self.p = replace(p, client_id=client_id or f"{p.client_id}-notify")
        self.timeout_s = timeout_s
        self._client: aiomqtt.Client | None = None
        self._lock = asyncio.Lock()  # one connection attempt at a time; publishes share the connection
        self.connects = 0
        self._refused: dict[int, Any] = {}  # MQTT 5: packet id -> the PUBACK's failure reason code

    @property
    def address(self) -> str:
        return f"{self.p.host}:{self.p.port}"

    def _scrub(self, text: str) -> str:
        return text.replace(self.p.password, "***") if self.p.password else text

    def _error(self, err: aiomqtt.MqttError) -> OSError:
        detail = self._scrub(f"broker {self.address}: {err}")
        return PermissionError(detail) if refused_credentials(err) else ConnectionError(detail)

    async def _connection(self) -> aiomqtt.Client:
        async with self._lock:
            if self._client is None:
                client = aiomqtt.Client(
                    self.p.host,
                    self.p.port,
                    identifier=f"{self.p.client_id}-{secrets.token_hex(4)}",
                    username=self.p.username,
                    password=self.p.password,
                    timeout=self.timeout_s,
                    **({"protocol": aiomqtt.ProtocolVersion.V5} if self.p.protocol_v5 else {"clean_session": True}),
                    **_tls(self.p),
                )
                client._client.on_publish = lambda *puback: self._puback(client._on_publish, *puback)
                try:
                    await client.__aenter__()  # connects; raises MqttError when refused or unreachable
                except aiomqtt.MqttError as err:
                    raise self._error(err) from None
                self._client, self._refused = client, {}
                self.connects += 1
            return self._client

    def _puback(self, on_publish: Callable[..., None], paho: Any, data: Any, mid: int, reason: Any, props: Any) -> None:
        """MQTT 5 refuses a PUBLISH in its PUBACK (reason code >= 0x80; 0x87 not authorized: the broker's ACL), which
        aiomqtt drops. MQTT 3.1.1 cannot say it: the broker acknowledges the message and drops it."""
        if getattr(reason, "is_failure", False):
            self._refused[mid] = reason
        on_publish(paho, data, mid, reason, props)

    async def _drop(self, client: aiomqtt.Client) -> None:
        if self._client is client:
            self._client = None
        with contextlib.suppress(Exception):  # the connection is gone or going; nothing to report from closing it
            await client.__aexit__(None, None, None)
        gone = client._disconnected
        if gone.done() and not gone.cancelled():
            gone.exception()  # why it ended was met (and reported) by the publish: not "never retrieved" at exit

    async def connect(self) -> None:
        await self._connection()

    async def publish(self, topic: str, payload: str | bytes, qos: int = 1, retain: bool = False) -> None:
        """Returns after the PUBACK for QoS 1 (PUBCOMP for 2); raises PermissionError or ConnectionError."""
        while True:
            held = self._client is not None
            client = await self._connection()
            try:
                no = self._refused.pop(await publish_now(client, topic, payload, qos, retain), None)
                if no is None:
                    return
                why = f"broker {self.address}: {topic} refused: {no} (MQTT 5 reason code 0x{no.value:02x})"
                raise PermissionError(why) if no.value == 0x87 else ConnectionError(why)  # 0x87: never allowed
            except aiomqtt.MqttError as err:
                await self._drop(client)
                if not held:
                    raise self._error(err) from None
                # the held connection had died: once more on a fresh one

    async def aclose(self) -> None:
        if self._client is not None:
            await self._drop(self._client)


async def publish_now(client: aiomqtt.Client, topic: str, payload: str | bytes, qos: int, retain: bool) -> int:
    """aiomqtt's `publish`, with the packet written in the caller's turn. aiomqtt has paho ask for a writer through
    `call_soon_threadsafe(add_writer)`: the packet then went out two loop turns later, behind whatever else was ready
    (at 1 000 msg/s, a few other messages' evaluation): about a third of a millisecond of every siren's latency.
    Returns its packet id after the PUBACK for QoS 1 (PUBCOMP for 2); MqttError as aiomqtt's own publish raises it."""
    paho = client._client
    held = paho._registered_write
    paho._registered_write = True  # paho queues the packet without asking for a writer (as in batch_acker)
    try:
        info = paho.publish(topic, payload, qos, retain)
    finally:
        paho._registered_write = held
    if info.rc != 0:
        gone = client._disconnected
        raise aiomqtt.MqttCodeError(info.rc, "Could not publish message") from (
            gone.exception() if gone.done() and not gone.cancelled() else None
        )
    if not held:  # (a writer registered, or on its way, writes it: see batch_acker)
        try:
            rc = paho.loop_write()  # registers a writer only when the socket would block
        except Exception as err:  # a broken connection: ended as aiomqtt's writer ends it
            if not client._disconnected.done():
                client._disconnected.set_exception(err)
            raise aiomqtt.MqttError(f"publish failed: {err}") from err
        if rc > 0:  # paho met a broken connection and closed it: no PUBACK will come, so no waiting for one
            raise aiomqtt.MqttCodeError(rc, "Could not publish message")
    if not info.is_published():
        confirmation = asyncio.Event()
        with client._pending_call(info.mid, confirmation, client._pending_publishes):
            await client._wait_for(confirmation.wait(), timeout=None)
    return int(info.mid)
