"""Chat-group robots: DingTalk (钉钉), WeCom (企业微信) and Feishu (飞书); each checks the robot's own result code."""

from __future__ import annotations

# Each posts one message and reads the robot's own result code, since they answer HTTP 200 on failure.
import base64
import hashlib
import hmac
import json
import urllib.parse
from collections.abc import Sequence
from typing import Any

from alerting.notifiers.base import Message, Person, Scrubber, SendResult, people_with, report, url_secrets
from alerting.notifiers.jsonpost import JsonPoster, Reply, classify_status
from telemetry.clock import Clock

# Codes that mean "too fast / busy, try later"; every other non-zero code (bad signature 310000 / 19021, invalid
# token 300001 / 93000, keyword missing, IP not allowed, bad message) will fail the same way next time.
DINGTALK_RETRY = frozenset({-1, 130101, 410100})  # -1 系统繁忙, 130101 send too fast (20/min per robot)
WECOM_RETRY = frozenset({-1, 45009, 45033})  # 45009 api freq out of limit (20/min), 45033 concurrency limit
FEISHU_RETRY = frozenset({9499, 11232})  # 9499 too many request, 11232 frequency limited

WECOM_MAX_BYTES = 2048  # text.content limit of the WeCom group robot


def dingtalk_sign(secret: str, timestamp_ms: int) -> str:
    """加签: base64(HMAC-SHA256(key=secret, msg=f"{timestamp}\\n{secret}")); URL-encoding is the caller's."""
    mac = hmac.new(secret.encode(), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256)
    return base64.b64encode(mac.digest()).decode()


def feishu_sign(secret: str, timestamp_s: int) -> str:
    """签名校验: base64(HMAC-SHA256(key=f"{timestamp}\\n{secret}", msg=b"")), the reverse of DingTalk's roles."""
    mac = hmac.new(f"{timestamp_s}\n{secret}".encode(), b"", hashlib.sha256)
    return base64.b64encode(mac.digest()).decode()


def truncate_utf8(text: str, max_bytes: int) -> str:
    raw = text.encode()
    if len(raw) <= max_bytes:
        return text
    return raw[: max_bytes - 3].decode(errors="ignore") + "…"


def _robot_result(reply: Reply, code_keys: tuple[str, ...], retry: frozenset[int]) -> SendResult:
    body = reply.body if isinstance(reply.body, dict) else {}
    code: Any = next((body[k] for k in code_keys if k in body), None)
    if not isinstance(code, int):
        if 200 <= reply.status < 300:
            # a 200 without the robot's code: not the robot API (wrong URL, a captive portal); retrying won't help
            return SendResult(False, False, f"HTTP {reply.status}, not a robot reply: {reply.text[:80]}")
        return classify_status(reply.status, reply.text)
    if code == 0 and 200 <= reply.status < 300:
        return SendResult(True, False, "sent")
    why = body.get("errmsg") or body.get("msg") or body.get("StatusMessage") or ""
    retryable = code in retry or reply.status >= 500 or reply.status == 429
    return SendResult(False, retryable, f"HTTP {reply.status}, code {code}: {str(why)[:160]}")


class _Robot:
    _code_keys: tuple[str, ...] = ("errcode",)
    _retry: frozenset[int] = frozenset()

    def __init__(self, id: str, url: str, secret: str | None, timeout_s: float, clock: Clock) -> None:
        self.id = id
        self._url = url
        self._secret = secret
        self._clock = clock
        self._scrub = Scrubber([*url_secrets(url), secret])
        self._http = JsonPoster(timeout_s, self._scrub)

    def _request(self, msg: Message, to: Sequence[Person]) -> tuple[str, dict[str, Any]]:
        raise NotImplementedError

    async def send(self, msg: Message, to: Sequence[Person]) -> SendResult:
        url, body = self._request(msg, to)
        raw = json.dumps(body, ensure_ascii=False).encode()
        reply = await self._http.post(url, raw, {"X-SiteGW-Key": msg.key})
        result = _robot_result(reply, self._code_keys, self._retry) if isinstance(reply, Reply) else reply
        return report(self.id, msg, SendResult(result.ok, result.retryable, self._scrub(result.detail)))

    async def aclose(self) -> None:
        await self._http.aclose()


class DingTalkNotifier(_Robot):
    """msgtype markdown; the @ only shows when the mobile is both in at.atMobiles and written as @mobile in the text."""

    _retry = DINGTALK_RETRY

    def _request(self, msg: Message, to: Sequence[Person]) -> tuple[str, dict[str, Any]]:
        mobiles = people_with(to, "mobile")
        # markdown paragraphs: DingTalk clients drop single newlines, so every line becomes its own paragraph
        lines = [f"#### {msg.subject}", *(line for line in msg.text.splitlines() if line.strip())]
        if mobiles:
            lines.append(" ".join(f"@{m}" for m in mobiles))
        body = {
            "msgtype": "markdown",
            "markdown": {"title": msg.subject, "text": "\n\n".join(lines)},
            "at": {"atMobiles": mobiles, "isAtAll": False},
        }
        url = self._url
        if self._secret:
            ts = self._clock() // 1_000_000
            query = urllib.parse.urlencode({"timestamp": ts, "sign": dingtalk_sign(self._secret, ts)})
            url += ("&" if "?" in url else "?") + query
        return url, body


class WeComNotifier(_Robot):
    """msgtype text with mentioned_mobile_list; the key in the URL is the only credential (no signing)."""

    _retry = WECOM_RETRY

    def __init__(self, id: str, url: str, timeout_s: float, clock: Clock) -> None:
        super().__init__(id, url, None, timeout_s, clock)

    def _request(self, msg: Message, to: Sequence[Person]) -> tuple[str, dict[str, Any]]:
        content = truncate_utf8(f"{msg.subject}\n{msg.text}", WECOM_MAX_BYTES)
        return self._url, {
            "msgtype": "text",
            "text": {"content": content, "mentioned_mobile_list": people_with(to, "mobile")},
        }


class FeishuNotifier(_Robot):
    """msg_type text; mentions need Feishu open_ids, which the recipient list does not carry, so names are listed."""

    _code_keys = ("code", "StatusCode")
    _retry = FEISHU_RETRY

    def _request(self, msg: Message, to: Sequence[Person]) -> tuple[str, dict[str, Any]]:
        text = f"{msg.subject}\n{msg.text}"
        if to:
            text += "\n通知: " + "、".join(p.name for p in to)
        body: dict[str, Any] = {"msg_type": "text", "content": {"text": text}}
        if self._secret:
            ts = self._clock() // 1_000_000_000
            body.update(timestamp=str(ts), sign=feishu_sign(self._secret, ts))
        return self._url, body
