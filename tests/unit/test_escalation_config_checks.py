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
