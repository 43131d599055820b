"""Numbers in a profile file: a YAML boolean, `.inf` or `.nan` where a number is expected is refused, as in the site
file."""

from __future__ import annotations

from pathlib import Path

import pytest

from drivers.profile import ProfileError, load_profile_file

MODBUS = """
id: bool_probe
kind: excavation
title: probe
transport: modbus
address_base: pdu
points:
  - {{quantity: strut_force, table: holding, address: {address}, type: int16, scale: {scale}}}
"""

MQTT = """
id: bool_probe_mqtt
kind: formwork
title: probe
transport: mqtt
payload:
  format: json
  device_key: {{source: topic, segment: {segment}}}
  timestamp: {{path: ts, format: epoch_ms}}
  fields:
    - {{path: data.settlement, quantity: settlement, unit: mm, scale: {scale}}}
"""


@pytest.mark.parametrize(
    ("text", "field"),
    [
        # PyYAML (YAML 1.1) reads yes / on / true as True, and pydantic took True for 1: `scale: yes` stored the raw
        # value, `address: on` polled register 1, `segment: yes` took the device id from topic level 1
        (MODBUS.format(address="on", scale="0.1"), "points.0.address"),
        (MODBUS.format(address="2", scale="yes"), "points.0.scale"),
        (MQTT.format(segment="yes", scale="1"), "payload.device_key.segment"),
        (MQTT.format(segment="2", scale="true"), "payload.fields.0.scale"),
    ],
)
def test_a_yaml_boolean_where_a_profile_wants_a_number_is_refused(tmp_path: Path, text: str, field: str) -> None:
    f = tmp_path / "bool_probe.yaml"
    f.write_text(text, encoding="utf-8")
    with pytest.raises(ProfileError) as err:
        load_profile_file(f)
    msg = str(err.value)
    assert field in msg and "YAML boolean" in msg, msg


@pytest.mark.parametrize(
    ("text", "field"),
    [
        # before: loaded; `scale: .nan` made every value of the point NaN, `scale: .inf` infinite
        (MODBUS.format(address="2", scale=".nan"), "points.0.scale"),
        (MODBUS.format(address="2", scale="-.inf"), "points.0.scale"),
        (MQTT.format(segment="2", scale=".nan"), "payload.fields.0.scale"),
    ],
)
def test_an_infinite_or_nan_number_in_a_profile_is_refused(tmp_path: Path, text: str, field: str) -> None:
    f = tmp_path / "bool_probe.yaml"
    f.write_text(text, encoding="utf-8")
    with pytest.raises(ProfileError) as err:
        load_profile_file(f)
    msg = str(err.value)
    assert field in msg and "finite" in msg, msg


def test_the_same_profile_with_numbers_loads(tmp_path: Path) -> None:
    f = tmp_path / "bool_probe.yaml"
    f.write_text(MODBUS.format(address="2", scale="0.1"), encoding="utf-8")
    (point,) = load_profile_file(f).points  # type: ignore[union-attr]
    assert (point.address, point.scale) == (2, 0.1)
