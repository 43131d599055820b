"""Numbers as people write them, read as YAML 1.2 reads them: leading zeros (Modicon 00010, unit id 010) are decimal,
where PyYAML's YAML 1.1 read 0[0-7]+ as octal (coil 00010 was polled at coil 8); 19:00 is a time, where YAML 1.1's
base 60 made it 1140 (a duty shift's start at 00:19)."""

from __future__ import annotations

from datetime import time
from pathlib import Path

import pytest

from drivers.modbus.plan import plan_reads
from drivers.profile import load_profile_file
from gateway.config import ConfigError, load_config
from telemetry.yamltext import safe_load
from tests.sites import write_site

PROFILE = """
id: coil_probe
kind: tower_crane
title: probe
transport: modbus
address_base: modicon
points:
  - {quantity: hoisting_up, address: 00009, type: bool}
  - {quantity: limiter_bypass, address: 00010, type: bool}
"""


def test_modicon_coil_addresses_with_leading_zeros_are_the_coils_they_name(tmp_path: Path) -> None:
    f = tmp_path / "coil_probe.yaml"
    f.write_text(PROFILE)
    prof = load_profile_file(f)
    # Modicon 00009 is coil 9, PDU address 8; 00010 is coil 10, PDU address 9 (it was 8 as octal: PDU 7)
    assert {p.quantity: addr for p, _t, addr, _o in prof.resolved()} == {"hoisting_up": 8, "limiter_bypass": 9}
    assert [b.describe() for b in plan_reads(prof)] == ["FC1 coil 8..9 (2) -> hoisting_up, limiter_bypass"]


def test_a_site_files_leading_zero_unit_id_is_decimal(tmp_path: Path) -> None:
    lines = [{"id": "bus", "type": "modbus_tcp", "host": "127.0.0.1", "port": 5020}]
    devices = [{"id": "TC-01", "profile": "tower_crane_tcp_v1", "line": "bus", "unit_id": 1}]
    write_site(tmp_path / "site.yaml", influx_port=8086, mqtt_port=1883, http_port=0, lines=lines, devices=devices)
    text = (tmp_path / "site.yaml").read_text()
    assert "unit_id: 1\n" in text
    (tmp_path / "site.yaml").write_text(text.replace("unit_id: 1\n", "unit_id: 010\n"))
    assert load_config(tmp_path / "site.yaml").devices[0].unit_id == 10  # (8 before)


def test_other_integers_read_as_before() -> None:
    doc = safe_load("a: 0x10\nb: 0b11\nc: 1_000\nd: 0\ne: '010'\nf: -017\ng: 00009\nh: 1.50\n")
    assert doc == {"a": 16, "b": 3, "c": 1000, "d": 0, "e": "010", "f": -17, "g": "00009", "h": 1.5}


SHIFT = """\
site: {id: s1, name: t, timezone: Asia/Shanghai}
devices:
  - {id: P1, profile: excavation_survey_v1, expected_interval_s: 86400}
sink: {type: influxdb_v1, url: "http://127.0.0.1:8086", database: d}
escalation:
  people:
    - {id: wang, name: 王值班, title: 值班安全员, mobile: "13800000003"}
  duty:
    - {role: safety_officer, people: [wang], start: START, end: "07:00"}
  channels:
    - {id: hook, type: webhook, url: "http://127.0.0.1:9/x"}
  policies:
    - {id: p, tiers: [{roles: [safety_officer], channels: [hook]}]}
"""


def test_an_unquoted_shift_time_is_the_time_and_a_number_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "site.yaml"
    for written, read in (("19:00", time(19, 0)), ("07:30", time(7, 30)), ('"19:00"', time(19, 0))):
        p.write_text(SHIFT.replace("START", written), encoding="utf-8")
        cfg = load_config(p)
        assert cfg.escalation is not None and cfg.escalation.duty[0].start == read, written
    # 7:30 (base 60 in YAML 1.1: 450, the time 00:07:30) and 1900 (seconds) were times nobody meant: refused now
    for written, said in (("7:30", "valid time format"), ("1900", "1900 is a number: write the time as")):
        p.write_text(SHIFT.replace("START", written), encoding="utf-8")
        with pytest.raises(ConfigError, match=rf"escalation\.duty\[0\]\.start.*{said}"):
            load_config(p)


def test_base_60_is_text() -> None:
    assert safe_load("a: 19:00\nb: 1:30.5\nc: 07:00\n") == {"a": "19:00", "b": "1:30.5", "c": "07:00"}
