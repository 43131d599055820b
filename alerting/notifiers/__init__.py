"""Notification channels: send ONE message ONE time and say whether a failure is worth retrying."""

from alerting.notifiers.base import Message, Notifier, Person, Refusal, SendResult
from alerting.notifiers.config import (
    ChannelConfig,
    DingTalkChannel,
    EmailChannel,
    FeishuChannel,
    MqttChannel,
    WebhookChannel,
    WeComChannel,
)
from alerting.notifiers.factory import build_notifier
from alerting.notifiers.mqtt import MqttNotifier, Publisher
from alerting.notifiers.robots import DingTalkNotifier, FeishuNotifier, WeComNotifier, dingtalk_sign, feishu_sign
from alerting.notifiers.smtp import EmailNotifier
from alerting.notifiers.webhook import WebhookNotifier

__all__ = [
    "ChannelConfig",
    "DingTalkChannel",
    "DingTalkNotifier",
    "EmailChannel",
    "EmailNotifier",
    "FeishuChannel",
    "FeishuNotifier",
    "Message",
    "MqttChannel",
    "MqttNotifier",
    "Notifier",
    "Person",
    "Publisher",
    "Refusal",
    "SendResult",
    "WeComChannel",
    "WeComNotifier",
    "WebhookChannel",
    "WebhookNotifier",
    "build_notifier",
    "dingtalk_sign",
    "feishu_sign",
]
