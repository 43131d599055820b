"""What every notification channel shares: people, messages, send results, the Notifier protocol, secret scrubbing."""

from __future__ import annotations

import json
import logging
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger("sitegw.notify")


@dataclass(frozen=True, slots=True)
class Person:
    id: str
    name: str
    mobile: str | None = None
    email: str | None = None


@dataclass(frozen=True, slots=True)
class Message:
    key: str  # idempotency key, e.g. "alarm:12:tier:1:seq:0"; receivers use it to drop a retried duplicate
    level: int  # 0..3, alerting.rules.Level
    subject: str  # one line, Chinese first
    text: str  # plain-text body, several lines
    data: Mapping[str, Any]  # the machine-readable event for MQTT / webhook JSON


@dataclass(frozen=True, slots=True)
class Refusal:
    """One recipient a server refused while it accepted the message for others (SMTP RCPT TO answered 4xx / 5xx)."""

    to: str  # the address
    people: tuple[str, ...]  # the ids of the people at that address
    code: int
    reply: str

    @property
    def transient(self) -> bool:
        return 400 <= self.code < 500  # RFC 5321 §4.2.1: 4yz, the same command may succeed later


@dataclass(frozen=True, slots=True)
class SendResult:
    ok: bool
    retryable: bool
    detail: str  # short, human readable, never contains a secret
    refused: tuple[Refusal, ...] = ()  # with ok: sent, but not to these


class Notifier(Protocol):
    id: str

    async def send(self, msg: Message, to: Sequence[Person]) -> SendResult:
        """Send `msg` once. Delivery problems come back as a result, never as an exception."""
        ...

    async def aclose(self) -> None: ...


SENT = SendResult(ok=True, retryable=False, detail="sent")


def event_json(msg: Message, to: Sequence[Person], *, names_only: bool = False) -> bytes:
    """The JSON document of MQTT and generic webhooks. `default=str` so a datetime or Decimal in `data` cannot
    turn an alarm into an exception at delivery time."""
    people: list[Any] = (
        [p.name for p in to]
        if names_only
        else [{"id": p.id, "name": p.name, "mobile": p.mobile, "email": p.email} for p in to]
    )
    doc = {"key": msg.key, "level": msg.level, "subject": msg.subject, "text": msg.text, "data": msg.data, "to": people}
    return json.dumps(doc, ensure_ascii=False, default=str).encode()


def url_secrets(url: str) -> list[str]:
    """The parts of a webhook URL that are credentials: robot URLs carry the token in the query
    (DingTalk access_token, WeCom key) or as the last path segment (Feishu hook id)."""
    parts = urllib.parse.urlsplit(url)
    found = [url]
    found += [v for _, v in urllib.parse.parse_qsl(parts.query) if len(v) >= 6]
    found += [seg for seg in parts.path.split("/") if len(seg) >= 16]
    return found


class Scrubber:
    """Replaces known secret strings by "***" in anything we report or log. Longest first, so a URL is replaced
    whole before the token inside it."""

    def __init__(self, secrets: Iterable[str | None]) -> None:
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for s in self._secrets:
            text = text.replace(s, "***")
        return text


def people_with(to: Sequence[Person], attr: str) -> list[str]:
    """Distinct non-empty values of `attr` (mobile, email) in recipient order."""
    out: list[str] = []
    for p in to:
        v = getattr(p, attr)
        if v and v not in out:
            out.append(v)
    return out


def report(channel: str, msg: Message, result: SendResult) -> SendResult:
    """Log the outcome of one send (detail is already scrubbed) and hand it back."""
    if result.ok and result.refused:
        log.warning("channel %s: %s sent, not to everyone: %s", channel, msg.key, result.detail)
    elif result.ok:
        log.debug("channel %s: %s sent (%s)", channel, msg.key, result.detail)
    else:
        log.warning(
            "channel %s: %s not sent, %s: %s",
            channel,
            msg.key,
            "will retry" if result.retryable else "permanent",
            result.detail,
        )
    return result
