"""Simulator encoding (registers, payloads) and signal physics, checked against the profiles and the chart."""

from __future__ import annotations

import json
import math
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.errors import ProtocolError
from drivers.modbus import codec
from drivers.modbus.codec import DataType
from drivers.modbus.driver import decode_block
from drivers.modbus.plan import plan_reads
from drivers.mqtt.payloads import PayloadDecoder
from drivers.profile import ModbusProfile, MqttProfile, RegisterPoint, Table, builtin_profiles
from gateway.config import Device, LoadChartPoint
from simulators import payloads, registers
from simulators.faults import FaultMode, malformed_payload, parse_mode
from simulators.scenarios import Scenario
from simulators.signals import CraneModel, ExcavationModel, GasModel, rng_for
from telemetry import quantities
from telemetry.reading import Reading

PROFILES = builtin_profiles()
CRANE = PROFILES["tower_crane_tcp_v1"]
assert isinstance(CRANE, ModbusProfile)


def _modbus(name: str) -> ModbusProfile:
    p = PROFILES[name]
    assert isinstance(p, ModbusProfile)
    return p


def _index(profile: ModbusProfile, quantity: str) -> int:
    return next(i for i, p in enumerate(profile.points) if p.quantity == quantity)


def test_tilt_in_permille_is_held_as_scaled_degrees() -> None:
    # 0.5 permille = atan(0.0005) = 0.02865 deg -> 29 counts of 0.001 deg -> back to tan(0.029 deg)
    words = registers.encode_point(CRANE, _index(CRANE, "tilt_x"), 0.5)
    assert words == [29]
    assert registers.decode_point(CRANE, _index(CRANE, "tilt_x"), words) == pytest.approx(
        math.tan(math.radians(0.029)) * 1000, rel=1e-12
    )
    assert registers.encode_point(CRANE, _index(CRANE, "tilt_y"), -0.75) == [(-43) & 0xFFFF]


def test_known_words_for_each_order() -> None:
    assert registers.encode_point(CRANE, _index(CRANE, "load"), 2.5) == [0x4020, 0x0000]  # float32 ABCD
    assert registers.encode_point(CRANE, _index(CRANE, "slew_angle"), -123.45) == [0xCFC7, 0xFFFF]  # int32 CDAB
    water = _modbus("excavation_strut_water_rtu_v1")
    assert registers.encode_point(water, _index(water, "groundwater_level"), -3.25) == [0xFFFF, 0xF34E]  # int32 -3250
    strut = registers.encode_point(water, _index(water, "strut_force"), 1234.5)  # kN -> 1.2345 MN, float64 DCBA
    assert struct.pack("<d", 1.2345) == b"".join(struct.pack(">H", w) for w in strut)
    incl = _modbus("excavation_inclinometer_rtu_v1")
    assert registers.encode_point(incl, _index(incl, "deep_displacement_d2m"), 8.25) == [0x0000, 0x3903]  # BADC


def test_image_merges_status_bits_and_fills_the_gap() -> None:
    image = registers.build_register_image(CRANE, {"limit_moment": 1, "limit_slew": 1, "hoisting_up": 1})
    assert image[Table.HOLDING][14] == 0b10010
    assert image[Table.HOLDING][12] == 0 and image[Table.HOLDING][13] == 0
    assert image[Table.DISCRETE] == {0: True}
    assert image[Table.COIL] == {0: False}
    assert sorted(image[Table.HOLDING]) == list(range(15))


def test_integers_saturate_instead_of_wrapping() -> None:
    assert registers.encode_point(CRANE, _index(CRANE, "radius"), -3.0) == [0]
    assert registers.encode_point(CRANE, _index(CRANE, "radius"), 1e6) == [0xFFFF]


def _representable(p: RegisterPoint) -> tuple[float, float]:
    """Catalog range of the point's quantity, narrowed to what its integer type can hold."""
    q = quantities.lookup(p.quantity)
    if not p.type.value.startswith(("int", "uint")):
        return q.low, q.high
    bits = 16 * codec.WIDTH[p.type]
    raw = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if p.type.value.startswith("int") else (0, 2**bits - 1)
    a, b = sorted(registers.from_device_unit(p.quantity, p.unit, r * p.scale + p.offset) for r in raw)
    return max(q.low, a), min(q.high, b)


def _step(p: RegisterPoint, value: float) -> float:
    """One raw count of the point in catalog units (floats: their relative precision)."""
    if not p.type.value.startswith(("int", "uint")):
        return 1e-6 * abs(value)
    target = quantities.lookup(p.quantity).unit
    if p.unit in ("°", "deg"):
        return abs(p.scale) * 1000 * math.pi / 180 * 1.02  # d tan/d angle, at most 1.01 below 100 permille
    factor = quantities.linear_factor(p.unit, target) if p.unit else (1.0, 0.0)
    return abs(p.scale * (factor or (1.0, 0.0))[0])


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_round_trip_within_half_a_step_for_every_builtin_point(data: st.DataObject) -> None:
    # the profiles the simulators serve; third-party profiles (with `sources`) are checked against their vendors'
    # own examples instead (drivers/profiles/samples, tests/unit/test_profile_samples.py)
    for profile in (p for p in PROFILES.values() if isinstance(p, ModbusProfile) and not p.sources):
        values: dict[str, float] = {}
        for p in profile.points:
            if p.type in (DataType.BIT, DataType.BOOL):
                values[p.quantity] = float(data.draw(st.integers(0, 1)))
            else:
                values[p.quantity] = data.draw(st.floats(*_representable(p)))
        image = registers.build_register_image(profile, values)
        back = registers.decode(profile, image)
        for p in profile.points:
            step = _step(p, values[p.quantity])
            assert back[p.quantity] == pytest.approx(values[p.quantity], abs=step / 2 + 1e-9), p.quantity
        # and the gateway's own read plan and decoder see exactly what current() reports
        readings: list[Reading] = []
        for block in plan_reads(profile):
            tab = image[block.table]
            decode_block(
                "D", block, [tab.get(a, 0) for a in range(block.address, block.address + block.count)], 0, readings
            )
        assert {r.quantity: r.value for r in readings} == pytest.approx(back, rel=1e-12, abs=1e-12)


def _device(**kw: object) -> Device:
    return Device.model_validate({"id": "X-1", "profile": "formwork_mqtt_v1", **kw})


def test_formwork_payload_matches_profile_paths_and_units() -> None:
    fw = PROFILES["formwork_mqtt_v1"]
    assert isinstance(fw, MqttProfile)
    dev = _device(broker="b", topic="site/s/formwork/+/data")
    body = payloads.build_payload(fw, dev, {"settlement": 1.25, "pole_tilt": 0.5, "axial_force": 12.0}, 1.5, "UTC")
    assert body["ts"] == 1500
    assert body["data"]["settlement"] == 1.25
    assert body["data"]["tilt"] == pytest.approx(0.0286, abs=1e-4)  # permille -> degrees, 4 decimals
    assert payloads.topic_for(dev, fw) == "site/s/formwork/X-1/data"
    bad = [malformed_payload(fw, body, n) for n in range(2)]
    with pytest.raises(json.JSONDecodeError):
        json.loads(bad[0])
    assert json.loads(bad[1])["data"]["settlement"] == "abc"


@pytest.mark.parametrize(
    ("name", "topic", "match"), [("formwork_mqtt_v1", "s/x/fw/+/data", None), ("gas_4in1_mqtt_v1", "s/gas/+", "SN7")]
)
def test_gateway_decoder_reads_simulator_payloads(name: str, topic: str, match: str | None) -> None:
    profile = PROFILES[name]
    assert isinstance(profile, MqttProfile)
    dev = Device.model_validate({"id": "D-1", "profile": name, "broker": "b", "topic": topic, "match": match})
    values = {"settlement": 2.5, "pole_tilt": 1.2, "axial_force": 30.0, "lel": 12.0, "o2": 20.5, "co": 3.0}
    body = json.dumps(payloads.build_payload(profile, dev, values, 1_795_000_000.25, "Asia/Shanghai")).encode()
    dec = PayloadDecoder(profile)
    doc = dec.parse(body)
    assert dec.device_key(payloads.topic_for(dev, profile), doc) == dev.key
    assert dec.timestamp_ns(doc, 0) == 1_795_000_000_250_000_000
    readings, errors = dec.readings(dev.key, doc, 0)
    assert errors == []
    assert {r.quantity: r.value for r in readings} == pytest.approx(payloads.decode_payload(profile, doc), rel=1e-12)
    with pytest.raises(ProtocolError):
        dec.parse(malformed_payload(profile, doc, 0))
    readings, errors = dec.readings(dev.key, dec.parse(malformed_payload(profile, doc, 1)), 0)
    assert len(errors) == 1 and len(readings) == len(profile.quantity_names()) - 1


def test_gas_payload_carries_key_iso_time_and_units() -> None:
    gas = PROFILES["gas_4in1_mqtt_v1"]
    assert isinstance(gas, MqttProfile)
    dev = Device.model_validate({"id": "G", "profile": gas.id, "broker": "b", "topic": "s/gas/+", "match": "SN9"})
    body = payloads.build_payload(gas, dev, {"lel": 12.5, "o2": 20.9}, 1_795_000_000.25, "Asia/Shanghai")
    assert body["sn"] == "SN9" and body["time"].endswith(".250+08:00")
    assert {r["gas"]: (r["value"], r["unit"]) for r in body["readings"]}["EX"] == (12.5, "%LEL")
    assert body["status"] == {"fault": 0, "cal": 0}
    assert payloads.decode_payload(gas, body)["o2"] == 20.9
    assert payloads.topic_for(dev, gas) == "s/gas/SN9"
    assert parse_mode("malformed", gas) is FaultMode.MALFORMED
    with pytest.raises(ValueError, match="does not apply"):
        parse_mode("exception", gas)


CHART = [LoadChartPoint(radius_m=r, rated_load_t=t) for r, t in ((2.5, 6.0), (12.0, 6.0), (30.0, 2.2), (50.0, 1.2))]


def _crane(scenario: str = "normal") -> CraneModel:
    dev = Device.model_validate({"id": "TC", "profile": CRANE.id, "line": "l", "unit_id": 1, "load_chart": CHART})
    return CraneModel(dev, [p.quantity for p in CRANE.points], rng_for(7, "TC"), Scenario(scenario), 1.0)


def test_crane_load_radius_and_moment_agree_with_the_chart_through_lift_cycles() -> None:
    crane = _crane()
    picks = []
    for i in range(3000):  # 10 simulated minutes at 0.2 s: several full lift cycles
        v = crane.advance(i * 0.2)
        assert v["rated_load"] == pytest.approx(crane.rated(v["radius"]))
        assert v["load_moment_ratio"] == pytest.approx(v["load"] / v["rated_load"] * 100)
        assert -0.05 < v["load"] <= 0.96 * v["rated_load"] + 0.02  # a normal operator stays under the chart
        assert v["limit_moment"] == 0.0 and abs(v["tilt_x"]) < 1.5
        picks.append(v["load"])
    assert max(picks) > 1.0  # loads were really lifted
    # the rated moment is linear between chart points, as the gateway reads the chart: 12 m x 6 t = 72 t·m,
    # 30 m x 2.2 t = 66 t·m, half way (21 m) 69 t·m, so 69 / 21 = 3.29 t (not the straight line in load's 4.1 t)
    assert crane.rated(21.0) == pytest.approx(69 / 21)


def test_crane_overload_trips_both_limiters() -> None:
    crane = _crane("crane_overload")
    tripped = [crane.advance(i * 0.2) for i in range(600)]
    over = [v for v in tripped if v["limit_moment"]]
    assert over and all(v["load_moment_ratio"] > 100 for v in over)
    assert max(v["load_moment_ratio"] for v in over) == pytest.approx(105, abs=0.5)
    assert any(v["limit_load"] for v in over)


def test_wind_gust_scenario_ramps_above_12_m_s() -> None:
    crane = _crane("wind_gust")
    winds = [crane.advance(i * 0.5)["wind_speed"] for i in range(400)]
    assert max(winds[:15]) < 12 < min(winds[120:])


def test_excavation_trend_follows_time_scale_and_fast_scenario() -> None:
    names = ["horizontal_displacement", "vertical_displacement", "deep_displacement_d2m", "deep_displacement_d10m"]
    dev = Device.model_validate({"id": "P", "profile": "excavation_displacement_rtu_v1", "line": "l", "unit_id": 1})
    fast = ExcavationModel(dev, names, rng_for(1, "P"), Scenario("excavation_fast"), 86400.0)  # 1 s = 1 day
    first = fast.advance(0.0)
    later = fast.advance(10.0)
    assert later["vertical_displacement"] - first["vertical_displacement"] == pytest.approx(-50.0, abs=0.5)
    assert later["deep_displacement_d2m"] > later["deep_displacement_d10m"] > 0  # largest near the top


def test_gas_is_never_negative_and_the_leak_ramps_lel() -> None:
    dev = Device.model_validate({"id": "G", "profile": "gas_4in1_mqtt_v1", "broker": "b", "topic": "t/+"})
    gas = GasModel(dev, [], rng_for(3, "G"), Scenario("gas_leak"), 1.0)
    samples = [gas.advance(t) for t in range(0, 200)]
    assert all(min(s["lel"], s["h2s"], s["co"], s["o2"]) >= 0 for s in samples)
    assert samples[5]["lel"] < 2 and samples[150]["lel"] == pytest.approx(40, abs=2)
    assert 20.0 < samples[150]["o2"] < 20.6
