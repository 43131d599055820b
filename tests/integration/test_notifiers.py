"""Notification channels against real receivers: SMTP (aiosmtpd), an HTTP server playing the robots, Mosquitto."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import subprocess
from collections.abc import Iterator
from contextlib import aclosing
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from pydantic import TypeAdapter, ValidationError

from alerting.notifiers import (
    ChannelConfig,
    Message,
    MqttNotifier,
    Notifier,
    Person,
    Refusal,
    SendResult,
    build_notifier,
)
from drivers.mqtt.client import BrokerParams, HeldPublisher
from services import local as services
from tests.receivers import HttpReceiver, Reply, http_receiver, smtp_server

NOW_NS = 1_767_225_600_123_456_789  # 2026-01-01T00:00:00.123Z; far from the test machine's clock on purpose


def clock() -> int:
    return NOW_NS


CHANNEL = TypeAdapter(ChannelConfig)

MSG = Message(
    key="alarm:12:tier:1:seq:0",
    level=2,
    subject="【报警】塔吊 TC-1 起重力矩超限 105.0 %",
    text=(
        "当前值 105.0 %，报警值 100.0 % (GB 5144-2006 6.1.2 [S+])\n"
        "时间 2026-01-01 08:00:00 +08:00\n设备 TC-1 塔吊，区域 北区\n"
        "处置：立即停止起吊作业，检查力矩限制器\n确认: http://gw.local/ack/12"
    ),
    data={"alarm_id": 12, "rule": "tower_crane.moment", "device": "TC-1", "level": 2, "value": 105.0},
)
ZHANG = Person("u1", "张三", mobile="13800000001", email="zhangsan@site.example")
LI = Person("u2", "李四", mobile="13900000002", email="lisi@site.example")
WANG = Person("u3", "王五", mobile=None, email=None)

DING_SECRET = "SECdingtalk0123456789abcdefSECRET"
DING_TOKEN = "dingAccessToken0123456789"
FEISHU_SECRET = "feishuSecretValue42xyz"
FEISHU_HOOK = "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0"
WECOM_KEY = "wecomKey-693a91f6-7xxx"
SMTP_PASSWORD = "smtp-Pa55word!"
HOOK_TOKEN = "Bearer hook-token-5f2e9a"
ALL_SECRETS = (DING_SECRET, DING_TOKEN, FEISHU_SECRET, FEISHU_HOOK, WECOM_KEY, SMTP_PASSWORD, HOOK_TOKEN)


def notifier(cfg: dict[str, Any], env: dict[str, str] | None = None, mqtt: HeldPublisher | None = None) -> Notifier:
    return build_notifier(CHANNEL.validate_python(cfg), env or {}, mqtt, clock=clock)


async def send_once(
    cfg: dict[str, Any], env: dict[str, str] | None = None, to: list[Person] | None = None
) -> SendResult:
    async with aclosing(notifier(cfg, env)) as n:
        return await n.send(MSG, [ZHANG, LI] if to is None else to)


@pytest.fixture(autouse=True)
def _logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Every test runs with DEBUG logging captured, and no secret may appear in any record (httpx logs URLs)."""
    caplog.set_level(logging.DEBUG)
    yield
    records = caplog.get_records("setup") + caplog.get_records("call")  # .records would be teardown's only
    assert any(r.name == "sitegw.notify" for r in records) or not records, "expected the channel's own log"
    for record in records:
        text = record.getMessage()
        leaked = [s for s in ALL_SECRETS if s in text]
        assert not leaked, f"secret in log record {record.name}: {text!r}"


def no_secret(result: SendResult) -> SendResult:
    assert not [s for s in ALL_SECRETS if s in result.detail], result.detail
    return result


# ---------------------------------------------------------------------------------------------------------- config


def test_config_rejects_inline_secrets_and_bad_env_names() -> None:
    with pytest.raises(ValidationError):
        CHANNEL.validate_python({"type": "dingtalk", "id": "d", "url": "https://oapi.dingtalk.com/robot/send"})
    with pytest.raises(ValidationError):
        CHANNEL.validate_python({"type": "wecom", "id": "w", "url_env": "wecom_url"})  # not an env var name
    with pytest.raises(ValidationError):
        CHANNEL.validate_python({"type": "email", "id": "e", "host": "h", "sender": "a@b", "password": "x"})
    with pytest.raises(ValidationError):
        CHANNEL.validate_python({"type": "mqtt", "id": "m", "broker": "b", "topic": "site/#"})
    cfg = CHANNEL.validate_python({"type": "mqtt", "id": "siren", "broker": "site", "topic": "site/siren"})
    assert (cfg.qos, cfg.retain) == (1, False)


def test_missing_env_var_names_channel_and_variable() -> None:
    with pytest.raises(ValueError, match=r"notify channel ding-pm: environment variable DING_SECRET is not set"):
        notifier(
            {"type": "dingtalk", "id": "ding-pm", "url_env": "DING_URL", "secret_env": "DING_SECRET"},
            {"DING_URL": "http://127.0.0.1:1/dingtalk"},
        )
    with pytest.raises(ValueError, match=r"notify channel siren: broker site was not resolved"):
        notifier({"type": "mqtt", "id": "siren", "broker": "site", "topic": "site/siren"})
    with pytest.raises(ValueError, match=r"notify channel wx: WECOM_URL does not hold an http\(s\) URL") as err:
        notifier({"type": "wecom", "id": "wx", "url_env": "WECOM_URL"}, {"WECOM_URL": f"qyapi/send?key={WECOM_KEY}"})
    assert WECOM_KEY not in str(err.value)


# ------------------------------------------------------------------------------------------------------------ MQTT


async def test_mqtt_publishes_event_json_with_qos1(mosquitto: services.Service) -> None:
    topic = "sitegw/test/notify/siren"
    target = HeldPublisher(BrokerParams.at("127.0.0.1", mosquitto.port), client_id="sitegw-test-notify")
    async with aiomqtt.Client("127.0.0.1", mosquitto.port) as sub:
        await sub.subscribe(topic, qos=1)
        async with aclosing(notifier({"type": "mqtt", "id": "siren", "broker": "b", "topic": topic}, mqtt=target)) as n:
            result = await n.send(MSG, [ZHANG, WANG])
        got = await asyncio.wait_for(anext(aiter(sub.messages)), 10)
    assert result == SendResult(True, False, "sent")
    assert (got.topic.value, got.qos, got.retain) == (topic, 1, False)
    assert isinstance(got.payload, bytes)
    doc = json.loads(got.payload)
    assert doc == {
        "key": MSG.key,
        "level": 2,
        "subject": MSG.subject,
        "text": MSG.text,
        "data": dict(MSG.data),
        "to": ["张三", "王五"],
    }


async def test_mqtt_siren_leaves_in_the_senders_turn(mosquitto: services.Service) -> None:
    """The siren's PUBLISH is on the socket before the event loop runs anything else (drivers/mqtt/client.py
    `publish_now`): aiomqtt's publish left it queued until a writer, registered through call_soon_threadsafe, ran
    two loop turns later, behind whatever else was ready. The send still returns only after the PUBACK."""
    target = HeldPublisher(BrokerParams.at("127.0.0.1", mosquitto.port), client_id="sitegw-test-turn")
    await target.connect()
    publish: asyncio.Task[None] | None = None
    try:
        client = target._client
        assert client is not None
        paho = client._client
        sent: list[bytes] = []
        real = paho._sock_send

        def recording(buf: bytes) -> int:
            sent.append(bytes(buf))
            return real(buf)

        paho._sock_send = recording  # type: ignore[method-assign]
        publish = asyncio.create_task(target.publish("sitegw/test/notify/turn", b"siren", qos=1))
        await asyncio.sleep(0)  # the task's first step, and nothing after it
        assert len(sent) == 1 and b"sitegw/test/notify/turn" in sent[0] and not paho._out_packet
        assert not publish.done()  # waits for the PUBACK
        await asyncio.wait_for(publish, 10)
    finally:
        if publish is not None and not publish.done():
            publish.cancel()
            await asyncio.gather(publish, return_exceptions=True)
        await target.aclose()


async def test_mqtt_siren_on_a_connection_found_broken_goes_on_a_new_one_at_once(mosquitto: services.Service) -> None:
    """The held connection breaks under the siren's write (here: our side can no longer send): paho closes it and
    says so with a return code; the send must not wait the PUBACK's timeout (30 s here) on a connection that is
    gone, but go again on a fresh one."""
    target = HeldPublisher(BrokerParams.at("127.0.0.1", mosquitto.port), client_id="sitegw-test-broken", timeout_s=30)
    await target.connect()
    first = target._client
    assert first is not None
    first._client._sock.shutdown(socket.SHUT_WR)  # the next send fails with EPIPE
    cfg = {"type": "mqtt", "id": "siren", "broker": "b", "topic": "sitegw/test/notify/broken"}
    async with aclosing(notifier(cfg, mqtt=target)) as n:
        result = await asyncio.wait_for(n.send(MSG, [ZHANG]), 10)
    assert result == SendResult(True, False, "sent")
    assert target.connects == 2 and target._client is not first


async def test_mqtt_broker_down_is_retryable(tmp_path: Path) -> None:
    own = services.mosquitto(tmp_path / "own-mosquitto")
    own.start()
    try:
        cfg = {"type": "mqtt", "id": "siren", "broker": "b", "topic": "site/siren", "timeout_s": 2}
        async with aclosing(
            notifier(cfg, mqtt=HeldPublisher(BrokerParams.at("127.0.0.1", own.port), timeout_s=2))
        ) as n:
            first = await n.send(MSG, [])
            own.stop()
            second = await n.send(MSG, [])
    finally:
        own.stop()
    assert first.ok
    assert (second.ok, second.retryable) == (False, True)
    assert f"127.0.0.1:{own.port}" in second.detail


async def test_mqtt_keeps_its_connection_and_reconnects_after_a_broker_restart(tmp_path: Path) -> None:
    own = services.mosquitto(tmp_path / "own-mosquitto")
    own.start()
    topic = "site/siren"
    got: list[bytes] = []
    try:
        cfg = {"type": "mqtt", "id": "siren", "broker": "b", "topic": topic, "timeout_s": 2}
        async with aclosing(
            notifier(cfg, mqtt=HeldPublisher(BrokerParams.at("127.0.0.1", own.port), timeout_s=2))
        ) as n:
            assert isinstance(n, MqttNotifier)
            async with aiomqtt.Client("127.0.0.1", own.port) as sub:
                await sub.subscribe(topic, qos=1)
                sent = [await n.send(MSG, []) for _ in range(3)]
                for _ in range(3):
                    m = await asyncio.wait_for(anext(aiter(sub.messages)), 10)
                    assert isinstance(m.payload, bytes)
                    got.append(m.payload)
            assert n.connects == 1  # three messages, one connection
            own.restart()  # the held connection dies with the broker; the next send must not fail because of it
            async with aiomqtt.Client("127.0.0.1", own.port) as sub:
                await sub.subscribe(topic, qos=1)
                after = await n.send(MSG, [])
                msg = await asyncio.wait_for(anext(aiter(sub.messages)), 10)
            assert n.connects == 2
    finally:
        own.stop()
    assert all(r.ok for r in sent), sent
    assert after.ok, after
    assert isinstance(msg.payload, bytes)
    assert json.loads(msg.payload)["key"] == MSG.key
    assert [json.loads(g)["key"] for g in got] == [MSG.key] * 3


@pytest.fixture
def auth_mosquitto(tmp_path: Path) -> Iterator[services.Service]:
    """A broker of the test's own that wants user siren / right-password."""
    pw = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(pw), "siren", "right-password"], check=True)
    own = services.mosquitto(tmp_path / "auth-mosquitto", extra=f"allow_anonymous false\npassword_file {pw}\n")
    own.start()
    yield own
    own.stop()


async def test_mqtt_refused_credentials_are_not_retryable(auth_mosquitto: services.Service) -> None:
    cfg = {"type": "mqtt", "id": "siren", "broker": "b", "topic": "site/siren", "timeout_s": 2}
    good_target = HeldPublisher(
        BrokerParams.at("127.0.0.1", auth_mosquitto.port, username="siren", password="right-password"), timeout_s=2
    )
    async with aclosing(notifier(cfg, mqtt=good_target)) as n:
        good = await n.send(MSG, [])
    bad_target = HeldPublisher(
        BrokerParams.at("127.0.0.1", auth_mosquitto.port, username="siren", password=SMTP_PASSWORD), timeout_s=2
    )
    async with aclosing(notifier(cfg, mqtt=bad_target)) as n:
        bad = no_secret(await n.send(MSG, []))
    assert good.ok, good
    assert (bad.ok, bad.retryable) == (False, False)
    assert "Not authorized" in bad.detail


@pytest.fixture
def acl_mosquitto(tmp_path: Path) -> Iterator[services.Service]:
    """A broker whose ACL lets user siren write site/other only: the siren topic is a mistake of the broker's."""
    pw, acl = tmp_path / "passwd", tmp_path / "acl"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(pw), "siren", "right-password"], check=True)
    acl.write_text("user siren\ntopic write site/other\n")
    own = services.mosquitto(
        tmp_path / "acl-mosquitto", extra=f"allow_anonymous false\npassword_file {pw}\nacl_file {acl}\n"
    )
    own.start()
    yield own
    own.stop()


async def test_mqtt5_siren_publish_the_broker_refuses_is_a_permanent_failure(acl_mosquitto: services.Service) -> None:
    """A broker's ACL refusing the siren topic: the PUBACK said so (MQTT 5 reason code 0x87) and the notifier,
    always speaking MQTT 3.1.1 and never reading a PUBACK's reason, reported the siren sent while none sounded. On
    a broker configured as MQTT 5 the refusal now fails the delivery; MQTT 3.1.1 has no way to say it."""
    params = BrokerParams.at("127.0.0.1", acl_mosquitto.port, username="siren", password="right-password")
    results = []
    for v5, topic in ((True, "site/siren"), (True, "site/other"), (False, "site/siren")):
        cfg = {"type": "mqtt", "id": "siren", "broker": "b", "topic": topic, "timeout_s": 2}
        target = HeldPublisher(replace(params, protocol_v5=v5), timeout_s=2)
        async with aclosing(notifier(cfg, mqtt=target)) as n:
            results.append(await n.send(MSG, []))
    refused, allowed, unseen = results
    assert (refused.ok, refused.retryable) == (False, False)
    assert "site/siren refused: Not authorized (MQTT 5 reason code 0x87)" in refused.detail
    assert "right-password" not in refused.detail
    assert allowed.ok, allowed
    assert unseen.ok  # MQTT 3.1.1: the broker acknowledges and drops it (documented)


# -------------------------------------------------------------------------------------------------------- webhook


@pytest.fixture
def rx() -> Iterator[HttpReceiver]:
    with http_receiver(dingtalk_secret=DING_SECRET, feishu_secret=FEISHU_SECRET, clock=clock) as r:
        yield r


def webhook_cfg(rx: HttpReceiver, **extra: Any) -> dict[str, Any]:
    return {
        "type": "webhook",
        "id": "hook",
        "url": f"{rx.url}/hook",
        "headers_env": {"Authorization": "HOOK_TOKEN"},
        **extra,
    }


async def test_webhook_posts_event_json_with_key_and_env_header(rx: HttpReceiver) -> None:
    result = await send_once(webhook_cfg(rx), {"HOOK_TOKEN": HOOK_TOKEN}, [ZHANG, WANG])
    assert result.ok, result
    [req] = rx.requests
    assert (req.method, req.path) == ("POST", "/hook")
    assert req.headers["x-sitegw-key"] == MSG.key
    assert req.headers["authorization"] == HOOK_TOKEN
    assert req.json == {
        "key": MSG.key,
        "level": 2,
        "subject": MSG.subject,
        "text": MSG.text,
        "data": dict(MSG.data),
        "to": [
            {"id": "u1", "name": "张三", "mobile": "13800000001", "email": "zhangsan@site.example"},
            {"id": "u3", "name": "王五", "mobile": None, "email": None},
        ],
    }


async def test_webhook_status_classes(rx: HttpReceiver) -> None:
    rx.script("/hook", [Reply(500, body=b"oops"), Reply(429), Reply(404, body=b"no such hook"), Reply(204)])
    async with aclosing(notifier(webhook_cfg(rx), {"HOOK_TOKEN": HOOK_TOKEN})) as n:
        results = [no_secret(await n.send(MSG, [ZHANG])) for _ in range(4)]
    assert [(r.ok, r.retryable) for r in results] == [(False, True), (False, True), (False, False), (True, False)]
    assert results[0].detail == "HTTP 500: oops"
    assert results[2].detail == "HTTP 404: no such hook"
    assert len(rx.requests) == 4  # one request per send: retries are the engine's business


async def test_webhook_timeout_and_refused_connection_are_retryable(rx: HttpReceiver) -> None:
    rx.script("/hook", [Reply(200, json={"ok": True}, delay_s=30)])
    timed_out = await send_once(webhook_cfg(rx, timeout_s=0.3), {"HOOK_TOKEN": HOOK_TOKEN})
    assert (timed_out.ok, timed_out.retryable) == (False, True)
    assert timed_out.detail.startswith("timeout")
    dead = f"http://127.0.0.1:{services.free_port()}/hook"
    refused = await send_once({"type": "webhook", "id": "hook", "url": dead})
    assert (refused.ok, refused.retryable) == (False, True)
    assert refused.detail.startswith("connection failed (ConnectError")


# ------------------------------------------------------------------------------------------------------- DingTalk


def ding_cfg(secret_env: str | None = "DING_SECRET") -> dict[str, Any]:
    cfg: dict[str, Any] = {"type": "dingtalk", "id": "ding", "url_env": "DING_URL"}
    if secret_env:
        cfg["secret_env"] = secret_env
    return cfg


def ding_env(rx: HttpReceiver, secret: str = DING_SECRET) -> dict[str, str]:
    return {"DING_URL": f"{rx.url}/dingtalk/robot/send?access_token={DING_TOKEN}", "DING_SECRET": secret}


async def test_dingtalk_signed_markdown_mentions_recipients(rx: HttpReceiver) -> None:
    result = await send_once(ding_cfg(), ding_env(rx), [ZHANG, WANG, LI])
    assert result == SendResult(True, False, "sent")  # the receiver recomputed the signature and accepted it
    [req] = rx.requests
    assert req.query["access_token"] == DING_TOKEN
    assert req.query["timestamp"] == str(NOW_NS // 1_000_000)  # ms, from the injected clock
    assert req.json["msgtype"] == "markdown"
    assert req.json["at"] == {"atMobiles": ["13800000001", "13900000002"], "isAtAll": False}
    assert req.json["markdown"]["title"] == MSG.subject
    text = req.json["markdown"]["text"]
    assert text.startswith(f"#### {MSG.subject}\n\n")
    assert "GB 5144-2006 6.1.2 [S+]" in text
    assert text.endswith("@13800000001 @13900000002")


async def test_dingtalk_wrong_secret_is_rejected_and_not_retryable(rx: HttpReceiver) -> None:
    result = no_secret(await send_once(ding_cfg(), ding_env(rx, secret="SECwrong-secret-000000")))
    assert (result.ok, result.retryable) == (False, False)
    assert "code 310000" in result.detail
    unsigned = await send_once(ding_cfg(secret_env=None), ding_env(rx))
    assert (unsigned.ok, unsigned.retryable) == (False, False)
    assert "timestamp" not in rx.requests[-1].query


async def test_dingtalk_rate_limit_and_5xx_are_retryable(rx: HttpReceiver) -> None:
    rx.script(
        "/dingtalk/robot/send",
        [Reply(json={"errcode": 130101, "errmsg": "send too fast, exceed 20 times per minute"}), Reply(502)],
    )
    async with aclosing(notifier(ding_cfg(), ding_env(rx))) as n:
        limited, bad_gateway, third = [no_secret(await n.send(MSG, [ZHANG])) for _ in range(3)]
    assert (limited.ok, limited.retryable) == (False, True)
    assert "130101" in limited.detail
    assert (bad_gateway.ok, bad_gateway.retryable) == (False, True)
    assert third.ok


# ---------------------------------------------------------------------------------------------------------- WeCom


async def test_wecom_text_with_mentioned_mobiles(rx: HttpReceiver) -> None:
    env = {"WECOM_URL": f"{rx.url}/wecom/cgi-bin/webhook/send?key={WECOM_KEY}"}
    result = await send_once({"type": "wecom", "id": "wx", "url_env": "WECOM_URL"}, env, [WANG, LI])
    assert result.ok, result
    [req] = rx.requests
    assert req.query["key"] == WECOM_KEY
    assert req.json == {
        "msgtype": "text",
        "text": {"content": f"{MSG.subject}\n{MSG.text}", "mentioned_mobile_list": ["13900000002"]},
    }


async def test_wecom_error_codes_and_length_limit(rx: HttpReceiver) -> None:
    path = "/wecom/cgi-bin/webhook/send"
    rx.script(
        path,
        [
            Reply(json={"errcode": 45009, "errmsg": "api freq out of limit"}),
            Reply(json={"errcode": 93000, "errmsg": "invalid webhook url"}),
        ],
    )
    env = {"WECOM_URL": f"{rx.url}{path}?key={WECOM_KEY}"}
    long = Message(MSG.key, MSG.level, MSG.subject, "超长正文" * 400, MSG.data)
    async with aclosing(notifier({"type": "wecom", "id": "wx", "url_env": "WECOM_URL"}, env)) as n:
        limited = no_secret(await n.send(MSG, [LI]))
        invalid = no_secret(await n.send(MSG, [LI]))
        truncated = await n.send(long, [LI])
    assert (limited.ok, limited.retryable) == (False, True)
    assert (invalid.ok, invalid.retryable) == (False, False)
    assert truncated.ok
    content = rx.requests[-1].json["text"]["content"]
    assert len(content.encode()) <= 2048
    assert content.startswith(MSG.subject) and content.endswith("…")


# --------------------------------------------------------------------------------------------------------- Feishu


def feishu_env(rx: HttpReceiver, secret: str = FEISHU_SECRET) -> dict[str, str]:
    return {"FS_URL": f"{rx.url}/feishu/open-apis/bot/v2/hook/{FEISHU_HOOK}", "FS_SECRET": secret}


FEISHU_CFG = {"type": "feishu", "id": "fs", "url_env": "FS_URL", "secret_env": "FS_SECRET"}


async def test_feishu_signed_text(rx: HttpReceiver) -> None:
    result = await send_once(FEISHU_CFG, feishu_env(rx), [ZHANG, LI])
    assert result.ok, result
    [req] = rx.requests
    assert req.path == f"/feishu/open-apis/bot/v2/hook/{FEISHU_HOOK}"
    assert req.json["msg_type"] == "text"
    assert req.json["timestamp"] == str(NOW_NS // 1_000_000_000)  # seconds, from the injected clock
    assert req.json["content"]["text"] == f"{MSG.subject}\n{MSG.text}\n通知: 张三、李四"


async def test_feishu_wrong_secret_rejected_and_rate_limit_retryable(rx: HttpReceiver) -> None:
    wrong = no_secret(await send_once(FEISHU_CFG, feishu_env(rx, secret="not-the-secret")))
    assert (wrong.ok, wrong.retryable) == (False, False)
    assert "code 19021" in wrong.detail
    path = f"/feishu/open-apis/bot/v2/hook/{FEISHU_HOOK}"
    # Feishu answers its rate limit with HTTP 400 and code 9499: the code decides, not the status
    rx.script(
        path,
        [
            Reply(400, json={"code": 9499, "msg": "too many request", "data": {}}),
            Reply(200, json={"StatusCode": 0, "StatusMessage": "success"}),
        ],
    )
    async with aclosing(notifier(FEISHU_CFG, feishu_env(rx))) as n:
        limited = no_secret(await n.send(MSG, [ZHANG]))
        legacy_ok = await n.send(MSG, [ZHANG])
    assert (limited.ok, limited.retryable) == (False, True)
    assert legacy_ok.ok


# ---------------------------------------------------------------------------------------------------------- email


def email_cfg(port: int, **extra: Any) -> dict[str, Any]:
    return {
        "type": "email",
        "id": "mail",
        "host": "127.0.0.1",
        "port": port,
        "security": "none",
        "sender": "工地告警 <alarm@site.example>",
        "timeout_s": 5,
        **extra,
    }


async def test_email_delivers_chinese_subject_and_body() -> None:
    with smtp_server() as srv:
        result = await send_once(email_cfg(srv.port), to=[ZHANG, WANG, LI])
    assert result == SendResult(True, False, "sent to 2")
    [em] = srv.messages
    assert srv.envelopes == [("alarm@site.example", ["zhangsan@site.example", "lisi@site.example"])]
    assert em["Subject"] == MSG.subject
    assert em["From"].addresses[0].display_name == "工地告警"
    assert [(a.display_name, a.addr_spec) for a in em["To"].addresses] == [
        ("张三", "zhangsan@site.example"),
        ("李四", "lisi@site.example"),
    ]
    assert em["X-SiteGW-Key"] == MSG.key
    assert em["Message-ID"] == "<alarm.12.tier.1.seq.0@site.example>"
    assert em["Date"].datetime == datetime.fromtimestamp(NOW_NS // 10**9, UTC)
    body = em.get_content()
    assert "当前值 105.0 %" in body and "GB 5144-2006 6.1.2 [S+]" in body


async def test_email_is_seven_bit_on_the_wire() -> None:
    """The body went as raw UTF-8 (Content-Transfer-Encoding: 8bit) without BODY=8BITMIME, also to servers that do
    not offer 8BITMIME (RFC 6152 §3): a strict relay refuses it or mangles the Chinese text."""
    with smtp_server() as srv:
        result = await send_once(email_cfg(srv.port), to=[ZHANG, LI])
    assert result.ok, result
    [raw] = srv.raw
    assert max(raw) < 128
    [em] = srv.messages
    assert em["Content-Transfer-Encoding"] == "base64" and em.get_content() == MSG.text + "\n"
    assert em["Subject"] == MSG.subject and em["To"].addresses[0].display_name == "张三"


async def test_email_without_addresses_is_a_permanent_failure() -> None:
    with smtp_server() as srv:
        result = await send_once(email_cfg(srv.port), to=[WANG])
    assert result == SendResult(False, False, "no recipient with an email address")
    assert srv.messages == []


async def test_email_451_is_retryable_then_delivers() -> None:
    with smtp_server(fail_first=1) as srv:
        async with aclosing(notifier(email_cfg(srv.port))) as n:
            first = await n.send(MSG, [ZHANG])
            second = await n.send(MSG, [ZHANG])
    assert (first.ok, first.retryable) == (False, True)
    assert "451" in first.detail
    assert second.ok
    assert len(srv.messages) == 1


async def test_email_550_is_not_retryable_and_partial_refusal_is_reported() -> None:
    with smtp_server(reject={"zhangsan@site.example", "lisi@site.example"}) as srv:
        refused = await send_once(email_cfg(srv.port), to=[ZHANG, LI])
    assert (refused.ok, refused.retryable) == (False, False)
    assert "550" in refused.detail
    with smtp_server(reject={"lisi@site.example"}) as srv:
        partial = await send_once(email_cfg(srv.port), to=[ZHANG, LI])
    assert (partial.ok, partial.retryable) == (True, False)
    assert partial.detail == "sent to 1 of 2; lisi@site.example refused: 550 5.1.1 user unknown"
    assert partial.refused == (Refusal("lisi@site.example", (LI.id,), 550, "5.1.1 user unknown"),)
    assert srv.envelopes[0][1] == ["zhangsan@site.example"]


@pytest.mark.parametrize("quit_reply", ["421 4.3.2 service shutting down", "500 5.5.1 command unrecognized"])
async def test_email_accepted_at_the_end_of_data_is_sent_whatever_quit_answers(quit_reply: str) -> None:
    """The QUIT reply decided an email the server had already taken (RFC 5321 §4.1.1.4: after the 250 to DATA it
    is the server's): a 421 made it a retry, sent again (a duplicate), a 5xx a failed delivery that went out."""
    with smtp_server(quit_reply=quit_reply) as srv:
        result = await send_once(email_cfg(srv.port), to=[ZHANG])
    assert result == SendResult(True, False, "sent to 1")
    assert len(srv.messages) == 1


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
async def test_email_login_and_wrong_password(cert: tuple[str, str]) -> None:
    # over STARTTLS: a login over security: none is refused by the config (the password would go in clear)
    cfg = email_cfg(0, username="alarm", password_env="SMTP_PASSWORD", security="starttls", ca_file=cert[0])
    with smtp_server(auth=("alarm", SMTP_PASSWORD), tls=cert) as srv:
        cfg["port"] = srv.port
        good = await send_once(cfg, {"SMTP_PASSWORD": SMTP_PASSWORD})
        bad = no_secret(await send_once(cfg, {"SMTP_PASSWORD": "wrong-" + SMTP_PASSWORD[::-1]}))
        anonymous = await send_once(email_cfg(srv.port, security="starttls", ca_file=cert[0]))
    assert good.ok, good
    assert srv.logins == ["alarm"]
    assert (bad.ok, bad.retryable) == (False, False)
    assert "535" in bad.detail
    assert (anonymous.ok, anonymous.retryable) == (False, False)  # 530 authentication required
    assert len(srv.messages) == 1


async def test_email_connection_refused_is_retryable() -> None:
    result = await send_once(email_cfg(services.free_port()))
    assert (result.ok, result.retryable) == (False, True)
    assert "ConnectionRefusedError" in result.detail


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    d = tmp_path_factory.mktemp("smtp-tls")
    crt, key = d / "server.crt", d / "server.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(crt),
        ],
        check=True,
        capture_output=True,
    )
    return str(crt), str(key)


@pytest.mark.parametrize("mode", ["starttls", "ssl"])
async def test_email_over_tls_verifies_the_server(mode: str, cert: tuple[str, str]) -> None:
    with smtp_server(tls=cert, tls_mode=mode) as srv:
        trusted = await send_once(email_cfg(srv.port, security=mode, ca_file=cert[0]))
        untrusted = await send_once(email_cfg(srv.port, security=mode))  # system CAs do not know our cert
    assert trusted.ok, trusted
    assert len(srv.messages) == 1
    assert (untrusted.ok, untrusted.retryable) == (False, False)
    assert "not trusted" in untrusted.detail
