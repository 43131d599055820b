"""Escalation settings that cannot work are refused when the site file is loaded, naming their YAML path, instead of
failing (or doing nothing) when an alarm is sent."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from alerting.config import EscalationConfig
from gateway.config import ConfigError
from tests.sites import write_site

MAIL = {"id": "mail", "type": "email", "host": "smtp.site.test", "sender": "工地告警 <gw@site.test>"}
ESC: dict[str, Any] = {
    "people": [
        {"id": "li", "name": "李经理", "email": "li@site.test"},
        {"id": "zhao", "name": "赵总", "mobile": "13800000009"},  # no email
    ],
    "duty": [{"role": "pm", "people": ["li"]}, {"role": "enterprise_safety", "people": ["li", "zhao"]}],
    "channels": [MAIL, {"id": "hook", "type": "webhook", "url": "http://hook.site.test/"}],
    "policies": [
        {
            "id": "p",
            "tiers": [{"roles": ["pm"], "channels": ["mail"]}, {"roles": ["enterprise_safety"], "channels": ["hook"]}],
        }
    ],
}


def site_file(tmp_path: Path, esc: dict[str, Any]) -> None:
    gas = {"id": "GD-01", "profile": "gas_4in1_mqtt_v1", "broker": "b", "topic": "g/+"}
    write_site(tmp_path / "site.yaml", influx_port=8086, mqtt_port=1883, devices=[gas], escalation=esc)


def test_a_person_on_duty_without_email_on_an_email_tier_is_refused_naming_tier_and_person(tmp_path: Path) -> None:
    """赵总, on duty for a tier that goes by email, had no address: the config was accepted and every mail of that
    tier skipped him without a word ('sent to 1')."""
    EscalationConfig.model_validate(ESC)  # by webhook, 赵总 is reached (the robot / hook names him)
    esc = copy.deepcopy(ESC)
    esc["policies"][0]["tiers"][1]["channels"] = ["hook", "mail"]
    EscalationConfig.model_validate(esc)  # the others by mail, 赵总 by the hook beside it (a second review)
    esc["policies"][0]["tiers"][1]["channels"] = ["mail"]  # by mail alone: he hears nothing
    with pytest.raises(ValidationError, match=r"escalation\.policies\[0\]\.tiers\[1\]\.channels: 'mail' is an email"):
        EscalationConfig.model_validate(esc)
    with pytest.raises(ConfigError) as err:
        site_file(tmp_path, esc)
    assert "'zhao' (赵总), on duty as 'enterprise_safety', has no email" in str(err.value)
    assert "escalation.policies[0].tiers" in str(err.value)
    esc = copy.deepcopy(ESC)
    esc["hazard_notices"] = {"roles": ["enterprise_safety"], "channels": ["mail"]}
    with pytest.raises(ValidationError, match=r"escalation\.hazard_notices\.channels: 'mail' is an email channel"):
        EscalationConfig.model_validate(esc)


BAD_MAIL = {
    "starttls_on_465": ({"port": 465, "security": "starttls"}, "port 465 is implicit TLS"),
    "plain_on_465": ({"port": 465, "security": "none"}, "port 465 is implicit TLS"),
    "ssl_on_587": ({"port": 587, "security": "ssl"}, "port 587 is submission with STARTTLS"),
    "username_without_password_env": ({"username": "alarm"}, "username and password_env go together"),
    "password_env_without_username": ({"password_env": "SMTP_PASSWORD"}, "username and password_env go together"),
    "login_in_clear": (
        {"port": 25, "security": "none", "username": "alarm", "password_env": "SMTP_PASSWORD"},
        "sends the password in clear",
    ),
    "sender_without_address": ({"sender": "工地告警"}, "sender '工地告警' has no address"),
}


@pytest.mark.parametrize("case", list(BAD_MAIL))
def test_an_email_channel_that_cannot_work_is_refused_naming_its_path(tmp_path: Path, case: str) -> None:
    """STARTTLS against 465 hung for the whole timeout at every attempt and was retried as if the server were down,
    implicit TLS against 587 likewise; a username without a password (or the reverse), a login over a plain
    connection (RFC 4954 §4) and a sender without an address were accepted and failed, or leaked, at the first alarm."""
    change, said = BAD_MAIL[case]
    esc = copy.deepcopy(ESC)
    esc["channels"][0] = {**MAIL, **change}
    with pytest.raises(ConfigError) as err:
        site_file(tmp_path, esc)
    assert "escalation.channels[0]" in str(err.value) and said in str(err.value)


def test_the_usual_email_settings_still_load() -> None:
    for ok in (
        {"port": 587, "security": "starttls", "username": "alarm", "password_env": "SMTP_PASSWORD"},
        {"port": 465, "security": "ssl", "username": "alarm", "password_env": "SMTP_PASSWORD"},
        {"port": 25, "security": "none"},
        {"port": 2525, "security": "ssl"},
        {"sender": "alarm@site.test"},
    ):
        esc = copy.deepcopy(ESC)
        esc["channels"][0] = {**MAIL, **ok}
        EscalationConfig.model_validate(esc)


def test_repeats_without_an_interval_and_a_duty_of_no_days_are_refused(tmp_path: Path) -> None:
    """`repeats: 3` without `repeat_every_s` planned no repeat, and `days: []` covered no day, both silently."""
    esc = copy.deepcopy(ESC)
    esc["policies"][0]["tiers"][0]["repeats"] = 3
    with pytest.raises(ConfigError, match=r"escalation\.policies\[0\]\.tiers\[0\].*repeats: 3 needs repeat_every_s"):
        site_file(tmp_path, esc)
    esc = copy.deepcopy(ESC)
    esc["duty"][0]["days"] = []
    with pytest.raises(ConfigError, match=r"escalation\.duty\[0\]\.days"):
        site_file(tmp_path, esc)
