"""MQTT JSON payload decoding per profile: keys, timestamps, nested fields, arrays of points, units, bad input."""

from __future__ import annotations

import json
import math

import pytest

from drivers.errors import ProtocolError
from drivers.mqtt.payloads import PayloadDecoder
from drivers.profile import MqttProfile, builtin_profiles
from telemetry.reading import Quality


def dec(name: str) -> PayloadDecoder:
    p = builtin_profiles()[name]
    assert isinstance(p, MqttProfile)
    return PayloadDecoder(p)


def test_formwork_nested_fields_epoch_ms_and_degrees() -> None:
    d = dec("formwork_mqtt_v1")
    doc = d.parse(json.dumps({"ts": 1732170000123, "data": {"settlement": 1.25, "tilt": 0.5, "force": 12.5}}).encode())
    assert d.device_key("site/demo/formwork/FW-A01/data", doc) == "FW-A01"
    ts = d.timestamp_ns(doc, 0)
    assert ts == 1732170000123 * 1_000_000
    rs, errs = d.readings("FW-A01", doc, ts)
    got = {r.quantity: r.value for r in rs}
    assert errs == []
    assert got["settlement"] == 1.25 and got["axial_force"] == 12.5
    assert math.isclose(got["pole_tilt"], math.tan(math.radians(0.5)) * 1000)  # ° -> ‰
    assert "horizontal_displacement" not in got  # absent field: not an error, not a reading


def test_gas_array_of_points_with_units_iso_time_and_fault_flag() -> None:
    d = dec("gas_4in1_mqtt_v1")
    payload = {
        "sn": "SN1",
        "time": "2026-11-21T09:30:00.250+08:00",
        "readings": [
            {"gas": "EX", "value": 12, "unit": "%LEL"},
            {"gas": "O2", "value": 20.9, "unit": "%VOL"},
            {"gas": "CO", "value": 0.0024, "unit": "%VOL"},
        ],
        "status": {"fault": 1, "cal": 0},
    }
    doc = d.parse(json.dumps(payload).encode())
    assert d.device_key("x", doc) == "SN1"
    ts = d.timestamp_ns(doc, 0)
    assert ts == 1795224600_250_000_000  # 01:30:00.25 UTC
    rs, errs = d.readings("GAS-01", doc, ts)
    by = {r.quantity: r for r in rs}
    assert errs == []
    assert by["lel"].value == 12.0 and by["o2"].value == 20.9
    assert math.isclose(by["co"].value, 24.0)  # %VOL -> ppm
    assert by["lel"].quality is Quality.BAD  # fault flag set: gas values flagged BAD
    assert by["sensor_fault"].value == 1.0 and by["sensor_fault"].quality is Quality.GOOD


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"{not json", "payload is not JSON"),
        (b"\xff\xfe", "payload is not JSON"),
        (json.dumps({"time": "2026-11-21T09:30:00", "readings": [], "sn": "A"}).encode(), "has no zone"),
        (json.dumps({"time": "yesterday", "readings": [], "sn": "A"}).encode(), "not ISO 8601"),
        (json.dumps({"readings": []}).encode(), "no device id at 'sn'"),
    ],
)
def test_bad_gas_payloads(payload: bytes, expected: str) -> None:
    d = dec("gas_4in1_mqtt_v1")
    with pytest.raises(ProtocolError, match=expected):
        doc = d.parse(payload)
        d.device_key("t", doc)
        d.timestamp_ns(doc, 0)


def test_wrong_type_field_loses_only_that_field() -> None:
    d = dec("formwork_mqtt_v1")
    doc = {"ts": 1732170000123, "data": {"settlement": "abc", "force": 3.0}}
    rs, errs = d.readings("FW", doc, 1)
    assert [r.quantity for r in rs] == ["axial_force"]
    assert len(errs) == 1 and "field 'data.settlement' (settlement): expected a number, got str" in str(errs[0])


def test_epoch_in_wrong_unit_is_refused() -> None:
    d = dec("formwork_mqtt_v1")
    with pytest.raises(ProtocolError, match="not a plausible epoch_ms"):
        d.timestamp_ns({"ts": 1732170000, "data": {}}, 0)  # seconds sent as ms: year 1970


def test_unknown_point_name_and_unit() -> None:
    d = dec("gas_4in1_mqtt_v1")
    doc = {
        "sn": "A",
        "readings": [
            {"gas": "NH3", "value": 1},
            {"gas": "CO", "value": 1, "unit": "furlong"},
            {"gas": "H2S", "value": 2, "unit": "ppm"},
        ],
    }
    rs, errs = d.readings("G", doc, 1)
    assert [(r.quantity, r.value) for r in rs] == [("h2s", 2.0)]
    assert "unknown point name 'NH3'" in str(errs[0]) and "unit 'furlong'" in str(errs[1])
