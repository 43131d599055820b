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


QMAP = """
id: qprobe
kind: gas
title: probe
transport: mqtt
quality_maps:
  st: {{codes: {codes}}}
payload:
  format: json
  device_key: {{source: topic, segment: 1}}
  fields:
    - {{path: lel, quantity: lel, status: st, quality: st}}
"""


def test_a_yaml_boolean_as_a_status_code_is_refused(tmp_path: Path) -> None:
    # `codes: {on: good, off: bad}` for a detector that sends "on"/"off": PyYAML reads the keys as True/False and
    # code_key makes them "1"/"0"; the device's "on" matches neither and every reading takes `other` (BAD)
    f = tmp_path / "qprobe.yaml"
    f.write_text(QMAP.format(codes="{on: good, off: bad}"), encoding="utf-8")
    with pytest.raises(ProfileError, match="YAML boolean"):
        load_profile_file(f)


def test_a_yaml_boolean_as_a_sentinel_is_refused(tmp_path: Path) -> None:
    # `sentinels: {off: not_ready}` becomes the text sentinel 'False': it never matches what the device sends
    f = tmp_path / "sprobe.yaml"
    f.write_text(
        "id: sprobe\nkind: gas\ntitle: p\ntransport: mqtt\npayload:\n  device_key: {source: topic, segment: 1}\n"
        "  sentinels: {off: not_ready}\n  fields: [{path: lel, quantity: lel}]\n",
        encoding="utf-8",
    )
    with pytest.raises(ProfileError, match="YAML boolean"):
        load_profile_file(f)


@pytest.mark.parametrize("scale", ["0", "0.0", "-0"])
def test_a_zero_scale_is_refused(tmp_path: Path, scale: str) -> None:
    # every value of the point becomes 0: a strut force that can never alarm (as bad as `scale: .nan`, now refused)
    f = tmp_path / "zprobe.yaml"
    f.write_text(
        "id: zprobe\nkind: excavation\ntitle: p\ntransport: modbus\naddress_base: pdu\npoints:\n"
        f"  - {{quantity: strut_force, table: holding, address: 2, type: int16, scale: {scale}}}\n",
        encoding="utf-8",
    )
    with pytest.raises(ProfileError, match="scale"):
        load_profile_file(f)
