"""The MQTT driver's config: a broker, its TLS and protocol version; the password comes from the environment."""

from __future__ import annotations

import re
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator

from drivers.config import ID, Claims, DeviceEntry, DriverModel
from drivers.profile import MqttProfile
from drivers.timefmt import TimestampFormat
from telemetry.yamlnum import Float, Int

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def topic_problem(topic: str, *, wildcards: bool) -> str | None:
    """What MQTT refuses in a topic filter to subscribe to (`wildcards`) or a topic name to publish to, else None.

    paho raises ValueError for these in subscribe() and publish(), which the session task does not expect: a device's
    filter failed every connection, a dead-letter topic the first dead letter. A control character is a malformed
    string to a broker (Mosquitto closes the connection; MQTT 3.1.1 §1.5.3: U+0000 must not be sent)."""
    if not topic:
        return "empty: a topic has at least one character (MQTT 3.1.1 §4.7.3)"
    if _CONTROL.search(topic):
        return "holds a control character (NUL, newline, tab): brokers close the connection (MQTT 3.1.1 §1.5.3)"
    try:
        size = len(topic.encode("utf-8"))
    except UnicodeEncodeError:
        return "is not valid UTF-8 text"
    if size > 65535:
        return f"{size} bytes long: MQTT strings take at most 65535 (MQTT 3.1.1 §1.5.3)"
    if not wildcards:
        return "a topic to publish to has no wildcards (+, #)" if "+" in topic or "#" in topic else None
    levels = topic.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            return "'#' stands alone in the last level, as in a/b/# (MQTT 3.1.1 §4.7.1.2)"
        if "+" in level and level != "+":
            return "'+' stands alone in its level, as in a/+/c (MQTT 3.1.1 §4.7.1.3)"
    return None


class TlsVerify(StrEnum):
    FULL = "full"
    NONE = "none"  # only for a broker on the same host with a self-signed cert; logged as a warning


class Tls(DriverModel):
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    verify: TlsVerify = TlsVerify.FULL

    @model_validator(mode="after")
    def _pair(self) -> Tls:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together (client certificate authentication)")
        return self


# the in-flight window announced on MQTT 5 unless the site says otherwise (Mosquitto's own default is 20)
DEFAULT_RECEIVE_MAXIMUM = 1000


class MqttProtocol(StrEnum):
    V311 = "3.1.1"
    V5 = "5"


class Broker(DriverModel):
    id: str = Field(pattern=ID)
    host: str
    port: Int = Field(default=1883, ge=1, le=65535)
    client_id: str | None = None  # default: sitegw-<site>-<broker>; stable so the broker keeps the session
    username: str | None = None
    password_env: str | None = Field(default=None, pattern=r"^[A-Z_][A-Z0-9_]*$")
    tls: Tls | None = None
    protocol: MqttProtocol = MqttProtocol.V311

    @field_validator("protocol", mode="before")
    @classmethod
    def _protocol(cls, v: Any) -> Any:
        return str(v) if isinstance(v, (int, float)) else v  # `protocol: 5` unquoted in YAML

    # MQTT 5: how many QoS 1 messages the broker may send us unacknowledged (CONNECT's Receive Maximum). The gateway
    # holds up to half of them for one fsync (docs/configuration.md); MQTT 3.1.1 has no such field
    receive_maximum: Int | None = Field(default=None, ge=2, le=65535)
    keepalive_s: Int = Field(default=30, ge=5, le=3600)
    dead_letter_topic: str = "sitegw/deadletter"
    # Above `read_window_above` messages a second from this broker, what is read is handed over when a window of
    # `read_window_ms` from the first of it ends: one pipeline batch for several messages, not one each
    # (drivers/mqtt/reader.py). A message then waits at most that much longer, an alarm's too; below the rate,
    # every message is handed over as it comes. 0: never.
    read_window_ms: Float = Field(default=2.0, ge=0, le=20)
    read_window_above: Int = Field(default=1500, ge=1)

    @field_validator("password_env")
    @classmethod
    def _with_user(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is not None and "username" in info.data and info.data["username"] is None:
            # aiomqtt sets a login only with a user name: the password was read, then never sent
            raise ValueError("a password is sent only with a user name (MQTT 3.1.1 §3.1.2.9): give `username` too")
        return v

    @field_validator("dead_letter_topic")
    @classmethod
    def _publish_topic(cls, v: str) -> str:
        problem = topic_problem(v, wildcards=False)
        if problem:
            raise ValueError(problem)
        return v

    @model_validator(mode="after")
    def _window(self) -> Broker:
        if self.receive_maximum is not None and self.protocol is not MqttProtocol.V5:
            raise ValueError(
                "receive_maximum is an MQTT 5 field (protocol: 5); on MQTT 3.1.1 the broker's own in-flight window "
                "applies (Mosquitto's max_inflight_messages) and spool.ack_linger_messages stays below it"
            )
        return self

    def session_id(self, site_id: str) -> str:
        """The client id the gateway connects with: `client_id`, or sitegw-<site>-<broker>."""
        return self.client_id or f"sitegw-{site_id}-{self.id}"

    @property
    def window(self) -> int | None:
        """The in-flight window the gateway announces (MQTT 5), None when it is the broker's to choose."""
        if self.protocol is MqttProtocol.V5:
            return self.receive_maximum or DEFAULT_RECEIVE_MAXIMUM
        return None


def check_brokers(brokers: Sequence[Broker], site_id: str) -> None:
    """Refuse two brokers that are one session: the same host:port (host names in any case) and client id. The broker
    ends the older connection whenever the other one connects (MQTT 3.1.1 §3.1.4), and each took the other over."""
    seen: dict[tuple[str, int, str], int] = {}
    for i, b in enumerate(brokers):
        cid = b.session_id(site_id)
        j = seen.setdefault((b.host.strip().lower(), b.port, cid), i)
        if j != i:
            raise ValueError(
                f"brokers[{i}] ({b.id}).client_id: {cid!r} on {b.host}:{b.port} is already the session of broker "
                f"{brokers[j].id} (brokers[{j}]): the broker ends one whenever the other connects (MQTT 3.1.1 "
                "§3.1.4); give each its own client_id, or keep one of the two entries"
            )


def check_device(at: str, d: DeviceEntry, prof: MqttProfile, claims: Claims) -> None:
    """A device that publishes: on a defined broker, under a topic filter its profile alone reads, with a key no
    other device on that broker uses, and a time override its profile can apply."""
    if d.broker is None or d.topic is None:
        raise ValueError(f"{at}: an MQTT device needs 'broker' and 'topic'")
    if d.line or d.unit_id is not None:
        raise ValueError(f"{at}: an MQTT device takes no 'line'/'unit_id'")
    if d.broker not in claims.brokers:
        raise ValueError(f"{at}.broker: unknown broker {d.broker!r}")
    if d.expected_interval_s is None:
        raise ValueError(
            f"{at}.expected_interval_s: required for an MQTT device (how often it publishes; "
            f"`up` drops to 0 after stale_factor x this without a message)"
        )
    problem = topic_problem(d.topic, wildcards=True)
    if problem:
        raise ValueError(f"{at}.topic: {d.topic!r} is no MQTT topic filter: {problem}")
    other = claims.filters.setdefault((d.broker, d.topic), prof.id)
    if other != prof.id:
        raise ValueError(f"{at}.topic: {d.topic!r} is already used by a {other} device; one profile per topic filter")
    seg = prof.payload.device_key.segment
    if seg is not None:
        levels = d.topic.split("/")
        if seg >= len(levels) or levels[seg] not in ("+", d.key):
            raise ValueError(
                f"{at}.topic: profile {prof.id} takes the device id from topic level {seg} (0-based), "
                f"but level {seg} of {d.topic!r} is neither '+' nor {d.key!r}"
            )
    if d.timestamp is not None:
        try:
            spec = d.timestamp.apply(prof.payload.timestamp)
        except ValidationError as err:
            # (its text's last line is pydantic's link to its docs: that was all the message said)
            msg = "; ".join(e["msg"].removeprefix("Value error, ") for e in err.errors())
            raise ValueError(f"{at}.timestamp: {msg}") from None
        if spec.format is not TimestampFormat.RECEIVE and prof.payload.timestamp.path is None:
            raise ValueError(f"{at}.timestamp: profile {prof.id} has no time field to read")
    other = claims.keys.setdefault((d.broker, d.key), d.id)
    if other != d.id:
        raise ValueError(f"{at}: device key {d.key!r} on broker {d.broker} is already {other}")
