"""One MQTT session per broker: stable client id, persistent session, QoS 1, dead letters for what does not decode."""

from __future__ import annotations

# It re-subscribes after every reconnect and routes each message to the payload decoders of the devices on it.
import asyncio
import base64
import functools
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from drivers.errors import ProtocolError
from drivers.mqtt.batch_ack import BatchAck, OnSpooled, ack_each, connection_gone, counting
from drivers.mqtt.client import (
    BrokerParams,
    Client,
    MqttCodeError,
    MqttError,
    TopicMatcher,
    batch_acker,
    redeliverer,
    refused_credentials,
    subscriber,
)
from drivers.mqtt.payloads import PayloadDecoder
from drivers.mqtt.publish import Received
from drivers.mqtt.reader import Inbox
from telemetry.reading import Reading

log = logging.getLogger("sitegw.mqtt")


@dataclass(frozen=True, slots=True)
class MqttDeviceRoute:
    device_id: str
    key: str  # the id the device uses for itself in its topic or payload
    topic: str  # subscription filter
    decoder: PayloadDecoder


Submit = Callable[[list[Reading], OnSpooled | None], Awaitable[None]]
OnDeadLetter = Callable[[str, str, str | None], None]  # (reason class, message, device or None) for metrics
OnMessage = Callable[[int], None]  # messages received
OnHeard = Callable[[str], None]  # a device's heartbeat (a message with nothing to store: PayloadMap.heartbeat)


class SubmitNow(Protocol):
    """A hand-over that needs no coroutine when the pipeline can take a batch at once (gateway/heard.py
    SeenSubmit): `now` only right after `ready` said yes, in the same loop turn."""

    def ready(self) -> bool: ...
    def now(self, readings: list[Reading], on_spooled: OnSpooled | None) -> None: ...


MAX_BATCH_MESSAGES = 1000


class MqttSession:
    def __init__(
        self,
        params: BrokerParams,
        routes: list[MqttDeviceRoute],
        submit: Submit,
        on_dead_letter: OnDeadLetter,
        on_message: OnMessage | None = None,
        now: SubmitNow | None = None,
        on_heard: OnHeard | None = None,
    ) -> None:
        self.p = params
        self.on_heard = on_heard
        self.submit = submit
        self._now = now  # the at-once hand-over, used from the reader's callback (handle_now)
        self.on_dead_letter = on_dead_letter
        self.on_message = on_message
        self.filters = sorted({r.topic for r in routes})
        # filter -> (decoder, {key: device id}); one decoder per filter (one profile per topic filter)
        self._by_filter: dict[str, tuple[PayloadDecoder, dict[str, str]]] = {}
        for r in routes:
            dec, keys = self._by_filter.setdefault(r.topic, (r.decoder, {}))
            if dec.profile.id != r.decoder.profile.id:
                raise ValueError(f"broker {params.id}: topic filter {r.topic!r} is used by two profiles")
            keys[r.key] = r.device_id
        self._matcher = TopicMatcher()
        for f, (dec, keys) in self._by_filter.items():
            self._matcher[f] = (f, dec, keys)
        self.connected = asyncio.Event()
        self.client: Client | None = None
        self.inbox: Inbox | None = None  # the connection's received messages (drivers/mqtt/reader.py)
        self.connects = 0
        self.reconnects = 0  # successful connects after the first, i.e. after a lost connection
        self._windows_before = 0  # read windows of the connections before this one (reader.py Inbox.windows)
        self._pauses_before = 0  # and reading's pauses (Inbox.pauses)
        self._warned: set[tuple[str, str]] = set()
        # filter -> its only device, so a message that does not parse at all is still charged to its device
        self._sole = {f: next(iter(keys.values())) for f, (_d, keys) in self._by_filter.items() if len(keys) == 1}
        self._last_receive_ns = 0
        # clear while a batch is being decoded and handed over: messages counted as received may still be on their
        # way to the pipeline (a dead letter is published in between), which Gateway.flush must wait for
        self.settled = asyncio.Event()
        self.settled.set()
        # acknowledges a batch's messages once they are spooled (one socket write for the batch while connected)
        self._ack_all: Callable[[list[OnSpooled]], None] = ack_each
        self._redeliver: Callable[[], None] = connection_gone
        self._ack: Callable[[int, int], object] | None = None  # the connection's acknowledger of one message
        self._hold = params.receive_maximum // 2
        self.retained = 0  # retained messages acknowledged and not decoded (`_retained`)
        self.heartbeats = 0  # messages that were a device's heartbeat (`_heard`)

    # ---- the streaming driver: one connection at a time; reconnecting with backoff is the supervisor's
    # (gateway/supervisor.py, run_stream)

    errors: tuple[type[BaseException], ...] = (MqttError,)  # what ends a connection (anything else is a bug)

    async def stream(self, on_connected: Callable[[], None]) -> None:
        """One connection to the broker: subscribe, then hand messages to the pipeline until the connection ends
        (an MqttError says why). `on_connected` is called once the subscriptions are in place."""
        try:
            client, inbox = subscriber(self.p)
            async with client:
                self.client, self.inbox = client, inbox
                for f in self.filters:
                    await client.subscribe(f, qos=1)
                self.connects += 1
                if self.connects > 1:
                    self.reconnects += 1
                self.connected.set()
                on_connected()
                ack, ack_all = batch_acker(client)
                self._ack_all = counting(ack_all, inbox.acked)
                self._ack = ack
                self._redeliver = redeliverer(client)
                # everything received so far as one batch: one hand-over to the pipeline, not one per message
                inbox.watch()
                if self._now is not None:
                    inbox.on_batch = self.handle_now
                while True:
                    batch = await inbox.next_batch(MAX_BATCH_MESSAGES)
                    await self.handle_batch(_with_acks(batch, ack), _all_qos1(batch))
        finally:
            self._windows_before, self._pauses_before = self.read_windows, self.read_pauses
            self.client, self.inbox, self._ack = None, None, None
            self._ack_all = ack_each  # the connection's acker goes with it (batches in flight keep their own)
            self._redeliver = connection_gone
            self.connected.clear()

    @property
    def read_windows(self) -> int:
        """Read windows since start (above brokers[].read_window_above messages a second)."""
        return self._windows_before + (self.inbox.window.windows if self.inbox is not None else 0)

    @property
    def read_pauses(self) -> int:
        """Times since start the socket was not read: the broker sent more than the window (reader.py `_pause`)."""
        return self._pauses_before + (self.inbox.pauses if self.inbox is not None else 0)

    def retry_after(self, err: BaseException) -> float | None:
        """Refused credentials fail the same way next time: wait 30 s; anything else takes the usual backoff."""
        return 30.0 if refused_credentials(err) else None

    def describe(self, err: BaseException) -> str:
        where = f"broker {self.p.id} ({self.p.host}:{self.p.port})"
        if isinstance(err, MqttCodeError):
            hint = " (credentials refused: check username / password_env)" if refused_credentials(err) else ""
            return f"{where}: {err}{hint}"
        return f"{where}: connection lost or refused: {err}; retrying"

    def restored(self) -> str:
        return f"broker {self.p.id}: reconnected, {len(self.filters)} subscription(s) restored"

    async def handle_batch(self, msgs: list[tuple[str, Any, OnSpooled | None]], redeliverable: bool = False) -> None:
        """Route messages that arrived together and hand their readings to the pipeline in one batch.

        `payload` is bytes from paho (aiomqtt types it as a union); `ack` acknowledges a message to the broker:
        after its readings are durable. A message nothing in was usable is acknowledged with them, once its dead
        letter is out: in the order the messages came, as MQTT 3.1.1 §4.6 asks of a receiver's PUBACKs.
        """
        # Every message gets its own receive time, in arrival order and never repeated: a profile without a device
        # clock must not stamp a batch the broker delivered together once, or its messages would merge into one
        # InfluxDB point (same series, same timestamp) and all but the last would be lost.
        receive_ns = max(time.time_ns(), self._last_receive_ns + 1)
        self._last_receive_ns = receive_ns + len(msgs) - 1
        self.settled.clear()
        try:
            if self.on_message:
                self.on_message(len(msgs))
            readings, acks, letters, retained, beats = self._decode_all(msgs, receive_ns)
            self._retained(retained)
            self._heard(beats)
            for letter in letters:
                await self.dead_letter(*letter)
            if readings or acks:
                ba = BatchAck(self._ack_all, acks, self._redeliver, redeliverable, self._hold) if acks else None
                await self.submit(readings, ba)
        finally:
            self.settled.set()

    def handle_now(self, msgs: list[Received]) -> bool:
        """One wake of the reader handled in its callback (drivers/mqtt/reader.py `Inbox.on_batch`), as
        `handle_batch` would, when the pipeline takes the readings at once: no task woken, no loop turn more, at
        site rates where every message is a wake of its own. False, having done nothing, when it cannot: the
        pipeline has a queue, or a dead letter is to be published (the session's task takes them then)."""
        now, ack = self._now, self._ack
        if now is None or ack is None or not now.ready():
            return False
        receive_ns = max(time.time_ns(), self._last_receive_ns + 1)  # (as in handle_batch)
        readings, acks, letters, retained, beats = self._decode_all(_with_acks(msgs, ack), receive_ns)
        if letters:
            return False  # its publishing is a coroutine: the task decodes them again (bad input only)
        self._retained(retained)
        self._heard(beats)
        self._last_receive_ns = receive_ns + len(msgs) - 1
        if self.on_message:
            self.on_message(len(msgs))
        if readings or acks:
            done = BatchAck(self._ack_all, acks, self._redeliver, _all_qos1(msgs), self._hold) if acks else None
            now.now(readings, done)
        return True

    def _decode_all(
        self, msgs: list[tuple[str, Any, OnSpooled | None]], receive_ns: int
    ) -> tuple[list[Reading], list[OnSpooled], list[tuple[Any, ...]], list[str], list[str]]:
        """Messages that arrived together, the i-th received at `receive_ns` + i: their readings; every message's
        acknowledger in arrival order (one that gave nothing usable is acknowledged with the others once its
        letter is out: an earlier message's PUBACK may not follow it); the dead letters' arguments (published
        after the batch is decoded); the topics of retained messages, not decoded (`_retained`); the devices whose
        heartbeats came (`_heard`); both counted by the caller (a batch with letters is decoded twice, `handle_now`)."""
        readings: list[Reading] = []
        acks: list[OnSpooled] = []
        letters: list[tuple[Any, ...]] = []
        retained: list[str] = []
        beats: list[str] = []
        for i, (topic, payload, ack) in enumerate(msgs):
            if payload is not RETAINED:
                self._decode(topic, payload, receive_ns + i, readings, letters, beats)
            else:
                retained.append(topic)
            if ack:
                acks.append(ack)
        return readings, acks, letters, retained, beats

    def _heard(self, devices: list[str]) -> None:
        """Heartbeats (PayloadMap.heartbeat): counted, and each device heard."""
        self.heartbeats += len(devices)
        if self.on_heard is not None:
            for device in devices:
                self.on_heard(device)

    def _retained(self, topics: list[str]) -> None:
        """A retained message: the broker's copy of an earlier message, sent because the session subscribed (again
        at every reconnect; MQTT 3.1.1 §3.3.1.3, 5 §3.3.1.3). Decoded, it was a stale value stamped with the time it
        came (profiles without a device clock), a device marked back online, a device clock taken as far behind; its
        message came live already, or is queued for this persistent session: acknowledged, counted, not decoded."""
        for topic in topics:
            self.retained += 1
            level = logging.DEBUG if ("retained", topic) in self._warned else logging.INFO
            self._warned.add(("retained", topic))
            log.log(level, "retained message on %s ignored: the broker's copy of an earlier message", topic)

    def _decode(
        self,
        topic: str,
        payload: Any,
        receive_ns: int,
        out: list[Reading],
        letters: list[tuple[Any, ...]],
        beats: list[str],
    ) -> None:
        """Append the message's readings to `out` (from the first filter whose decoder gives some), its dead
        letters' arguments to `letters`, its device to `beats` if it is a heartbeat. Not a coroutine: one per
        message cost more than the decoding of a small payload."""
        matched = False
        empty: tuple[str, PayloadDecoder] | None = None  # a device's message with none of its profile's fields
        for flt, dec, keys in self._matcher.iter_match(topic):
            matched = True
            device: str | None = self._sole.get(flt)
            try:
                doc = dec.parse(payload)
                key = dec.device_key(topic, doc)
                device = keys.get(key)
                if device is None:
                    raise ProtocolError(f"no device with key {key!r} is configured for {dec.profile.id}")
                if dec.has_heartbeats and dec.heartbeat(doc):  # (before its time: 云筑's may leave it out)
                    beats.append(device)
                    return
                ts = dec.timestamp_ns(doc, receive_ns, device)
                readings, errors = dec.readings(device, doc, ts)
            except ProtocolError as err:
                letters.append((topic, payload, str(err), "decode", device))
                continue
            if errors:
                # partial message: the good fields go in; one dead letter says what was stored and what was refused
                stored = sorted({r.quantity for r in readings})
                letters.append(
                    (
                        topic,
                        payload,
                        f"device {device}: {'; '.join(str(e) for e in errors)}",
                        "field",
                        device,
                        {"stored": stored, "refused": [str(e) for e in errors]},
                    )
                )
            if not readings:
                if not errors and empty is None:
                    empty = (device, dec)
                continue  # nothing usable: dead-lettered (above, or below), acknowledged by the caller
            out.extend(readings)
            return
        if not matched:
            letters.append((topic, payload, "no subscription filter matches", "route"))
        elif empty is not None:  # not dropped unseen: said and counted like any message that gives nothing
            device, dec = empty
            letters.append((topic, payload, dec.none_of_fields(device), "field", device, {"stored": [], "refused": []}))

    async def dead_letter(
        self,
        topic: str,
        payload: bytes,
        reason: str,
        kind: str,
        device: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        inbox = self.inbox
        if inbox is not None and topic in inbox.not_utf8:
            reason = f"the topic is not UTF-8 (its bytes shown as \\xNN); {reason}"
        self.on_dead_letter(kind, f"{topic}: {reason}", device)
        # first one per topic and kind at WARNING; the counter metric carries the rest
        level = logging.DEBUG if (kind, topic) in self._warned else logging.WARNING
        self._warned.add((kind, topic))
        log.log(level, "dead letter from %s: %s (published to %s)", topic, reason, self.p.dead_letter_topic)
        try:
            text: str | None = payload.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        body: dict[str, Any] = {"topic": topic, "reason": reason, "received_at_ns": time.time_ns()}
        if device is not None:
            body["device"] = device
        if detail:
            body.update(detail)
        if text is not None:
            body["payload"] = text
        else:
            body["payload_b64"] = base64.b64encode(payload).decode()
        if self.client is not None:
            try:
                await self.client.publish(self.p.dead_letter_topic, json.dumps(body, ensure_ascii=False), qos=1)
            except MqttError as err:
                log.warning("dead letter could not be published to %s: %s", self.p.dead_letter_topic, err)


def _all_qos1(msgs: list[Received]) -> bool:
    """Every message is QoS 1 (what the session subscribes with): the broker delivers it again until acknowledged.
    (Not QoS 0, which it never delivers again; nor 2, past its PUBREC only the PUBREL would come again.)"""
    return all(m[3] == 1 for m in msgs)


RETAINED = object()  # in place of a retained message's payload (`_with_acks`): acknowledged, not decoded


def _with_acks(msgs: list[Received], ack: Callable[[int, int], object]) -> list[tuple[str, Any, OnSpooled | None]]:
    """The reader's messages as the session decodes them: each with the function that acknowledges it."""
    return [
        (topic, RETAINED if retain else payload, functools.partial(ack, mid, qos))
        for topic, payload, mid, qos, retain in msgs
    ]
