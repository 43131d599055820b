"""A Modbus point's `invalid` sentinels are the raw values its device sends: binary32 floats, exact integers."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from drivers.modbus.driver import PollResult, decode_poll
from drivers.modbus.plan import plan_device
from drivers.profile import ModbusProfile, ProfileError, load_profile_file
from telemetry.reading import Quality

HEAD = """\
id: sentinel_probe
kind: excavation
title: probe
transport: modbus
address_base: pdu
points:
"""
NOW_NS = 1_800_000_000_000_000_000


def profile(tmp_path: Path, points: str) -> ModbusProfile:
    f = tmp_path / "sentinel_probe.yaml"
    f.write_text(HEAD + points, encoding="utf-8")
    prof = load_profile_file(f)
    assert isinstance(prof, ModbusProfile)
    return prof


def refusal(tmp_path: Path, points: str) -> str:
    with pytest.raises(ProfileError) as ei:
        profile(tmp_path, points)
    return str(ei.value)


def qualities(prof: ModbusProfile, raw: bytes) -> dict[str, Quality]:
    """The readings' qualities when the device answers the profile's one block with these bytes."""
    plan = plan_device(prof)
    (block,) = plan.blocks
    out = PollResult()
    decode_poll("D1", plan, [(block, list(struct.unpack(f">{len(raw) // 2}H", raw)))], NOW_NS, out)
    return {r.quantity: r.quality for r in out.readings}


def test_float32_sentinels_match_the_binary32_value_the_device_sends(tmp_path: Path) -> None:
    """A float32 sentinel was compared as the float64 of its text: -99.9 and the float32 maximum as data sheets
    print it (3.4028235e38) are not binary32 values, so the device's "no value" never matched and was stored as a
    GOOD reading (-99.9000015258789)."""
    prof = profile(
        tmp_path,
        "  - {quantity: groundwater_level, table: holding, address: 0, type: float32, unit: m, invalid: {-99.9: bad}}\n"
        "  - {quantity: horizontal_displacement, table: holding, address: 2, type: float32, unit: mm,\n"
        "     invalid: {3.4028235e38: not_ready}}\n"
        "  - {quantity: settlement, table: holding, address: 4, type: float64, unit: mm, invalid: {-99.9: bad}}\n",
    )
    sent = qualities(prof, struct.pack(">ffd", -99.9, 3.4028235e38, -99.9))
    assert sent == {
        "groundwater_level": Quality.BAD,
        "horizontal_displacement": Quality.NOT_READY,
        "settlement": Quality.BAD,  # float64 sentinels stay float64
    }
    near = qualities(prof, struct.pack(">ffd", -99.8, 3.4e38, -99.9000015258789))
    assert set(near.values()) == {Quality.GOOD}
    msg = refusal(tmp_path, "  - {quantity: groundwater_level, table: holding, type: float32, address: 0,"
                            " invalid: {1.0e+39: bad}}\n")  # fmt: skip
    assert "points[0] (groundwater_level).invalid: '1e+39': beyond the float32 range" in msg, msg


@pytest.mark.parametrize("key", [0x7FFFFFFFFFFFFFFF, 0x7FFFFFFFFFFFFC01, -(2**63)])
def test_int64_sentinels_are_kept_exactly(tmp_path: Path, key: int) -> None:
    """64-bit sentinels went through float(): int64's maximum (a common "no value") was refused as not fitting
    int64, and 0x7FFFFFFFFFFFFC01 was kept as 0x7FFFFFFFFFFFFC00, so the device's sentinel never matched and a
    neighbouring value did."""
    prof = profile(
        tmp_path,
        f"  - {{quantity: groundwater_level, table: holding, address: 0, type: int64, invalid: {{{hex(key)}: bad}}}}\n",
    )
    assert qualities(prof, struct.pack(">q", key)) == {"groundwater_level": Quality.BAD}
    assert qualities(prof, struct.pack(">q", key - 1 if key > 0 else key + 1)) == {"groundwater_level": Quality.GOOD}


def test_integer_sentinels_are_parsed_as_integers_and_range_checked(tmp_path: Path) -> None:
    """Integer sentinels are read exactly: hex text, an integral float ("65535.0"); a fraction or a value the type
    cannot hold is refused naming the point."""
    point = "  - {{quantity: groundwater_level, table: holding, address: 0, type: {t}, invalid: {{{k}: bad}}}}\n"
    prof = profile(tmp_path, point.format(t="uint16", k="'65535.0'") + point.format(t="int16", k="'0x7FFF'").replace(
        "groundwater_level, table: holding, address: 0", "settlement, table: holding, address: 1"
    ))  # fmt: skip
    assert qualities(prof, struct.pack(">HH", 0xFFFF, 0x7FFF)) == {
        "groundwater_level": Quality.BAD,
        "settlement": Quality.BAD,
    }
    msg = refusal(tmp_path, point.format(t="uint16", k="65535.5"))
    assert "points[0] (groundwater_level).invalid: '65535.5': not a whole number" in msg, msg
    msg = refusal(tmp_path, point.format(t="uint16", k="0x10000"))
    assert "points[0] (groundwater_level).invalid: '65536': does not fit uint16 (0..65535)" in msg, msg
    msg = refusal(tmp_path, point.format(t="int16", k="'ERR'"))
    assert "points[0] (groundwater_level).invalid: 'ERR': not a number" in msg, msg
    top = profile(tmp_path, point.format(t="uint64", k="0xFFFFFFFFFFFFFFFF"))  # float() made it 2**64: refused
    assert qualities(top, b"\xff" * 8) == {"groundwater_level": Quality.BAD}


@pytest.mark.parametrize("key", ["9223372036854775807", "-1", "4"])
def test_a_bit_field_sentinel_outside_its_bits_is_refused(tmp_path: Path, key: str) -> None:
    """A two-bit field holds 0..3: a sentinel outside that was accepted and could never match (a second review)."""
    said = refusal(
        tmp_path,
        "  - {quantity: groundwater_level, table: holding, address: 0, type: bit, bit: 0, bit_count: 2,"
        f" invalid: {{'{key}': bad}}}}\n",
    )
    assert f"points[0] (groundwater_level).invalid: '{key}'" in said


def test_a_coil_sentinel_is_refused(tmp_path: Path) -> None:
    """A coil's `invalid: {1: bad}` was accepted and never applied: its True was stored GOOD (a second review)."""
    said = refusal(
        tmp_path, "  - {quantity: groundwater_level, table: coil, address: 0, type: bool, invalid: {1: bad}}\n"
    )
    assert "points[0] (groundwater_level).invalid: a coil or discrete input has no 'no value' sentinel" in said
