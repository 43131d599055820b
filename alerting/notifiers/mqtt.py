"""MQTT channel: one JSON message on a topic (site siren controller, LED board), QoS 1 by default."""

from __future__ import annotations

import secrets
import ssl
from collections.abc import Sequence
from dataclasses import dataclass

import aiomqtt
from aiomqtt.exceptions import MqttConnectError

from alerting.notifiers.base import SENT, Message, Person, Scrubber, SendResult, event_json, report

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
    """Connects per message rather than holding a session: alarms are rare (a few an hour), a per-message connection
    needs no background task to supervise, and it reports the broker's state at the moment of sending (a held
    connection can be half-open and only fail at the PUBACK timeout). The escalation engine owns retries. The client
    id gets a random suffix because two overlapping sends with one id would make the broker drop the first."""

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

    def _client(self) -> aiomqtt.Client:
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

    async def send(self, msg: Message, to: Sequence[Person]) -> SendResult:
        payload = event_json(msg, to, names_only=True)
        published = False
        try:
            client = self._client()
        except (OSError, ValueError) as err:  # unreadable CA / cert / key file: configuration, not delivery
            return report(self.id, msg, SendResult(False, False, self._scrub(f"TLS setup failed: {err}")))
        try:
            async with client:
                # publish() returns after the PUBACK for QoS 1 (PUBCOMP for 2), or raises at the timeout
                await client.publish(self._topic, payload, qos=self._qos, retain=self._retain)
                published = True
        except aiomqtt.MqttError as err:
            if published:  # the broker has the message; a failed DISCONNECT does not undo that
                return report(self.id, msg, SENT)
            # refused credentials fail the same way next time; anything else (refused, reset, timeout) may pass
            rc = getattr(err.rc, "value", err.rc) if isinstance(err, MqttConnectError) else None
            detail = self._scrub(f"broker {self._t.host}:{self._t.port}: {err}")
            return report(self.id, msg, SendResult(False, rc not in _AUTH_CODES, detail))
        return report(self.id, msg, SENT)

    async def aclose(self) -> None:
        return None  # nothing held between messages
