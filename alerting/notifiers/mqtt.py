"""MQTT channel: one JSON message on a topic (site siren controller, LED board), QoS 1 by default."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import ssl
from collections.abc import Sequence
from dataclasses import dataclass

import aiomqtt
from aiomqtt.exceptions import MqttConnectError

from alerting.notifiers.base import SENT, Message, Person, Scrubber, SendResult, event_json, report

log = logging.getLogger("sitegw.notify")

_AUTH_CODES = frozenset({4, 5, 134, 135})  # 3.1.1 bad credentials / not authorised, and their MQTT 5 codes


@dataclass(frozen=True, slots=True)
class MqttTarget:
    """A broker connection, resolved by the gateway from its broker config (password already read from the env)."""

    host: str
    port: int = 1883
    username: str | None = None
    password: str | None = None
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_verify: bool = True
    use_tls: bool = False
    client_id: str | None = None  # a prefix: each connection appends a random suffix, see MqttNotifier


class MqttNotifier:
    """Holds one broker connection, opened at the first message and kept. A siren must sound within milliseconds of
    the alarm, and a connection per message cost several round trips (CONNECT, CONNACK, DISCONNECT) on a gateway
    busy with its input: most of the alarm latency the benchmark measured (`bench/alarm_latency.py`). A held
    connection can be half-open and fail only at the PUBACK timeout, so a publish that fails on a held connection is
    tried once more on a fresh one before the failure is reported; the escalation engine owns further retries. Each
    connection's client id gets a random suffix, so a new connection never makes the broker drop one still closing."""

    def __init__(
        self, id: str, target: MqttTarget, topic: str, qos: int = 1, retain: bool = False, timeout_s: float = 10.0
    ) -> None:
        self.id = id
        self._t = target
        self._topic = topic
        self._qos = qos
        self._retain = retain
        self._timeout_s = timeout_s
        self._scrub = Scrubber([target.password])
        self._client: aiomqtt.Client | None = None
        self._lock = asyncio.Lock()  # one connection attempt at a time; sends share the connection
        self.connects = 0

    def _new_client(self) -> aiomqtt.Client:
        t = self._t
        tls_params = None
        if t.use_tls:
            tls_params = aiomqtt.TLSParameters(
                ca_certs=t.tls_ca,
                certfile=t.tls_cert,
                keyfile=t.tls_key,
                cert_reqs=ssl.CERT_REQUIRED if t.tls_verify else ssl.CERT_NONE,
            )
        return aiomqtt.Client(
            t.host,
            t.port,
            identifier=f"{t.client_id}-{secrets.token_hex(4)}" if t.client_id else None,
            username=t.username,
            password=t.password,
            tls_params=tls_params,
            tls_insecure=(not t.tls_verify) if t.use_tls else None,
            timeout=self._timeout_s,
            clean_session=True,
        )

    async def _connection(self) -> aiomqtt.Client:
        async with self._lock:
            if self._client is None:
                client = self._new_client()
                await client.__aenter__()  # connects; raises MqttError when refused or unreachable
                self._client = client
                self.connects += 1
            return self._client

    async def _drop(self, client: aiomqtt.Client) -> None:
        if self._client is client:
            self._client = None
        with contextlib.suppress(Exception):  # the connection is gone or going; nothing to report from closing it
            await client.__aexit__(None, None, None)

    async def warm(self) -> None:
        """Connect ahead of the first alarm (at start), so the first siren does not wait for a connection either.
        A broker that is not there yet is only logged: `send` connects when it has to."""
        try:
            await self._connection()
        except (OSError, ValueError, aiomqtt.MqttError) as err:
            log.warning("channel %s: broker %s:%d not reachable yet: %s", self.id, self._t.host, self._t.port,
                        self._scrub(str(err)))  # fmt: skip

    async def send(self, msg: Message, to: Sequence[Person]) -> SendResult:
        payload = event_json(msg, to, names_only=True)
        while True:
            held = self._client is not None
            try:
                client = await self._connection()
            except (OSError, ValueError) as err:  # unreadable CA / cert / key file: configuration, not delivery
                return report(self.id, msg, SendResult(False, False, self._scrub(f"TLS setup failed: {err}")))
            except aiomqtt.MqttError as err:
                return report(self.id, msg, self._failed(err))
            try:
                # publish() returns after the PUBACK for QoS 1 (PUBCOMP for 2), or raises at the timeout
                await client.publish(self._topic, payload, qos=self._qos, retain=self._retain)
            except aiomqtt.MqttError as err:
                await self._drop(client)
                if held:
                    continue  # the held connection had died: once more on a fresh one
                return report(self.id, msg, self._failed(err))
            return report(self.id, msg, SENT)

    def _failed(self, err: aiomqtt.MqttError) -> SendResult:
        # refused credentials fail the same way next time; anything else (refused, reset, timeout) may pass
        rc = getattr(err.rc, "value", err.rc) if isinstance(err, MqttConnectError) else None
        detail = self._scrub(f"broker {self._t.host}:{self._t.port}: {err}")
        return SendResult(False, rc not in _AUTH_CODES, detail)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._drop(self._client)
