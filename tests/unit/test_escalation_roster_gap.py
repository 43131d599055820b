"""A gap in the duty roster: the channels that name nobody (siren, webhook) still go out, a person-addressed channel
(email) fails counted for the metric and /health; check-config lists each role's uncovered hours."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from alerting.alarms import Lifecycle
from alerting.config import EscalationConfig
from alerting.db import connect
from alerting.escalation import Escalation
from alerting.escalation.roster import uncovered
from alerting.notifiers import MqttNotifier, Notifier, build_notifier
from alerting.rules import Level
from alerting.transition import Transition
from drivers.mqtt.client import BrokerParams, HeldPublisher
from gateway.cli import check_config
from services.local import Service
from tests.receivers import http_receiver, smtp_server
from tests.sites import write_site
from tests.unit.test_escalation import RULES, SITE, FakeClock, at, mail_channel

SUN_10 = at(2024, 6, 9, 10)  # Sunday 10:00 on site
# the README's roster before it was mended: nobody is safety_officer on Sunday 07:00-19:00
DUTY = [
    {"role": "safety_officer", "people": ["zhang"], "days": ["mon", "tue", "wed", "thu", "fri", "sat"],
     "start": "07:00", "end": "19:00"},
    {"role": "safety_officer", "people": ["wang"], "start": "19:00", "end": "07:00"},
    {"role": "project_manager", "people": ["li"]},
]  # fmt: skip


def config(mqtt_port: int, hook_url: str, smtp_port: int) -> dict[str, Any]:
    return {
        "people": [
            {"id": "zhang", "name": "张安全", "email": "zhang@site.test"},
            {"id": "wang", "name": "王值班", "email": "wang@site.test"},
            {"id": "li", "name": "李经理", "email": "li@site.test"},
        ],
        "duty": DUTY,
        "channels": [
            {"id": "siren", "type": "mqtt", "broker": "b", "topic": "gap/siren"},
            {"id": "hook", "type": "webhook", "url": hook_url},
            mail_channel(smtp_port),
        ],
        "policies": [
            {"id": "default", "tiers": [{"roles": ["safety_officer"], "channels": ["siren", "hook", "mail"]}]}
        ],
    }


async def test_a_roster_gap_sounds_the_siren_and_counts_the_mail_nobody_gets(
    tmp_path: Path, mosquitto: Service, caplog: pytest.LogCaptureFixture
) -> None:
    """Nobody on duty used to write every channel's outbox row `failed`, the siren's included, with one log line and
    nothing for the delivery metric or /health: on Sunday daytime a gas alarm sounded no siren."""
    with http_receiver() as hook, smtp_server() as smtp:
        cfg = EscalationConfig.model_validate(config(mosquitto.port, hook.url + "/gap", smtp.port))
        clock = FakeClock(SUN_10)
        conn = connect(tmp_path / "state.db")
        lc = Lifecycle(conn, RULES, clock, chatter_count=3, chatter_window_s=60)
        pub = HeldPublisher(BrokerParams.at("127.0.0.1", mosquitto.port), timeout_s=5)
        notifiers: dict[str, Notifier] = {
            c.id: MqttNotifier(c.id, pub, "gap/siren") if c.type == "mqtt" else build_notifier(c, {}, None, clock)
            for c in cfg.channels
        }
        outcomes: list[tuple[str, str]] = []
        esc = Escalation(conn, cfg, notifiers, clock, SITE, on_delivery=lambda ch, oc: outcomes.append((ch, oc)))
        lc.hooks.append(esc.on_event)
        heard: list[dict[str, Any]] = []
        try:
            async with aiomqtt.Client("127.0.0.1", mosquitto.port) as sub:
                await sub.subscribe("gap/siren", qos=1)
                lc.apply(Transition("gas.lel", "GD-01", "lel", Level.NORMAL, Level.ALARM, 30.0, None, clock.now))
                with caplog.at_level(logging.WARNING, logger="sitegw.escalation"):
                    await esc.step(lc.get)
                async with asyncio.timeout(5):
                    async for m in sub.messages:
                        heard.append(json.loads(bytes(m.payload)))  # type: ignore[arg-type]
                        break
            outbox = {r["channel"]: (r["status"], r["error"]) for r in conn.execute("SELECT * FROM esc_outbox")}
        finally:
            for n in notifiers.values():
                await n.aclose()
            conn.close()
    assert heard and heard[0]["to"] == [] and heard[0]["data"]["device"] == "GD-01"
    assert [r.json["to"] for r in hook.requests] == [[]]
    assert smtp.messages == []
    assert outbox == {
        "siren": ("sent", None),
        "hook": ("sent", None),
        "mail": ("failed", "nobody on duty for safety_officer"),
    }
    assert sorted(outcomes) == [("hook", "sent"), ("mail", "failed"), ("siren", "sent")]
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "safety_officer" in errors[0] and "policy default tier 1" in errors[0]
    assert "mail" in errors[0]


def test_uncovered_lists_each_roles_hours_without_anyone_on_duty() -> None:
    """check-config said nothing of a gap in the roster; it showed only when an alarm found nobody on duty."""
    cfg = EscalationConfig.model_validate(config(1883, "http://x.test/", 25))
    assert uncovered(cfg) == {"safety_officer": ["sun 07:00-19:00"]}
    night = [{"role": "night", "people": ["wang"], "days": ["fri"], "start": "20:00", "end": "06:30"}]
    cfg = EscalationConfig.model_validate({**config(1883, "http://x.test/", 25), "duty": [*DUTY, *night]})
    assert uncovered(cfg)["night"] == [
        "mon 00:00-24:00", "tue 00:00-24:00", "wed 00:00-24:00", "thu 00:00-24:00", "fri 00:00-20:00",
        "sat 06:30-24:00", "sun 00:00-24:00",
    ]  # fmt: skip


def test_check_config_names_the_hours_a_role_is_uncovered(tmp_path: Path) -> None:
    gas = {"id": "GD-01", "profile": "gas_4in1_mqtt_v1", "broker": "b", "topic": "g/+"}
    esc = config(1883, "http://x/", 25)
    site = write_site(tmp_path / "site.yaml", influx_port=8086, mqtt_port=1883, devices=[gas], escalation=esc)
    assert "  NOTE: nobody on duty as safety_officer: sun 07:00-19:00" in check_config(site, tmp_path / "site.yaml")
