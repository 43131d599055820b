"""Site-wide `rules:` entries for rules no device of the site runs: accepted, and said by check-config and at start."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from alerting.engine import AlarmEngine
from gateway.cli import check_config
from tests.sites import write_site
from tests.unit.test_engine import Clock

SRC = {"standard": "某公司模板", "confidence": "P"}
GAS = {"id": "G1", "profile": "gas_4in1_mqtt_v1", "broker": "b", "topic": "g/+"}
RULES = {
    # a company template's entries: a crane rule on a site without a crane, and one that runs here
    "disabled": [{"rule": "tc.tilt_y", "reason": "the crane has its own limiter"}],
    "overrides": [
        {"rule": "tc.wind", "deadband": 1, "source": SRC},
        {"rule": "gas.lel", "thresholds": {"2": 20}, "source": SRC},
        {"rule": "gas.lel", "devices": ["G1"], "deadband": 1, "source": SRC},
    ],
}


def test_check_config_names_entries_for_rules_no_device_runs(tmp_path: Path) -> None:
    # before: accepted and never said; a template entry meant for a device that is missing did nothing, unseen
    site = write_site(tmp_path / "site.yaml", mqtt_port=1883, influx_port=8086, devices=[GAS], rules=RULES)
    out = check_config(site, tmp_path / "site.yaml")
    notes = [ln for ln in out.splitlines() if "runs on no device" in ln]
    assert notes == [
        "  NOTE: rules.disabled[0]: rule tc.tilt_y (tower_crane, tilt_y) runs on no device of this site: it changes "
        "nothing here",
        "  NOTE: rules.overrides[0]: rule tc.wind (tower_crane, wind_speed) runs on no device of this site: it "
        "changes nothing here",
    ]


async def test_the_gateway_says_them_at_start(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    site = write_site(tmp_path / "site.yaml", mqtt_port=1883, influx_port=8086, devices=[GAS], rules=RULES)
    with caplog.at_level(logging.WARNING, logger="sitegw.alarms"):
        eng = AlarmEngine(site.alarm_setup(), Clock())
    try:
        said = [r.getMessage() for r in caplog.records if "runs on no device" in r.getMessage()]
        assert [m.split(":")[0] for m in said] == ["rules.disabled[0]", "rules.overrides[0]"]
        assert all(r.levelno == logging.WARNING for r in caplog.records if "runs on no device" in r.getMessage())
    finally:
        await eng.aclose()
