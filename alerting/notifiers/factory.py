"""Build a notifier from its channel config, reading its secrets from the environment."""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping

from alerting.notifiers.base import Notifier
from alerting.notifiers.config import (
    ChannelConfig,
    DingTalkChannel,
    EmailChannel,
    FeishuChannel,
    MqttChannel,
    WebhookChannel,
    WeComChannel,
)
from alerting.notifiers.mqtt import MqttNotifier, Publisher
from alerting.notifiers.robots import DingTalkNotifier, FeishuNotifier, WeComNotifier
from alerting.notifiers.smtp import EmailNotifier
from alerting.notifiers.webhook import WebhookNotifier
from telemetry.clock import Clock, wall_clock
from telemetry.secrets import secret


def _need(cfg: ChannelConfig, env: Mapping[str, str], name: str) -> str:
    return secret(name, f"notify channel {cfg.id}", env, allow_empty=False)


def _url(cfg: ChannelConfig, env: Mapping[str, str], name: str) -> str:
    """A robot URL from the env, checked now so a typo fails at start-up; the message never shows the URL."""
    value = _need(cfg, env, name)
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"notify channel {cfg.id}: {name} does not hold an http(s) URL")
    return value


def _maybe(cfg: ChannelConfig, env: Mapping[str, str], name: str | None) -> str | None:
    return None if name is None else _need(cfg, env, name)


def build_notifier(
    cfg: ChannelConfig, env: Mapping[str, str], mqtt: Publisher | None, clock: Clock = wall_clock
) -> Notifier:
    """`mqtt`: the MQTT channel's connection to its broker, opened by the gateway with the channel's timeout (None
    for the other channels). `clock` stamps robot signatures
    and the email Date header. Raises ValueError naming the channel for a missing env var or broker."""
    if isinstance(cfg, MqttChannel):
        if mqtt is None:
            raise ValueError(f"notify channel {cfg.id}: broker {cfg.broker} was not resolved")
        return MqttNotifier(cfg.id, mqtt, cfg.topic, cfg.qos, cfg.retain)
    if isinstance(cfg, WebhookChannel):
        headers = {h: _need(cfg, env, var) for h, var in cfg.headers_env.items()}
        return WebhookNotifier(cfg.id, str(cfg.url), headers, cfg.timeout_s)
    if isinstance(cfg, DingTalkChannel):
        url, secret = _url(cfg, env, cfg.url_env), _maybe(cfg, env, cfg.secret_env)
        return DingTalkNotifier(cfg.id, url, secret, cfg.timeout_s, clock)
    if isinstance(cfg, WeComChannel):
        return WeComNotifier(cfg.id, _url(cfg, env, cfg.url_env), cfg.timeout_s, clock)
    if isinstance(cfg, FeishuChannel):
        url, secret = _url(cfg, env, cfg.url_env), _maybe(cfg, env, cfg.secret_env)
        return FeishuNotifier(cfg.id, url, secret, cfg.timeout_s, clock)
    if isinstance(cfg, EmailChannel):
        return EmailNotifier(
            cfg.id,
            cfg.host,
            cfg.port,
            cfg.security,
            cfg.sender,
            cfg.username,
            _maybe(cfg, env, cfg.password_env),
            cfg.timeout_s,
            clock,
            str(cfg.ca_file) if cfg.ca_file else None,
        )
    raise AssertionError(f"unhandled channel type {cfg!r}")  # the discriminated union is exhaustive
