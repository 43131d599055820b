"""Bit points that share a register: with other bits and integer words (status words), never with a float."""

from __future__ import annotations

from pathlib import Path

import pytest

from drivers.profile import ProfileError, load_profile_file

HEAD = """
id: bit_probe
kind: gas
title: probe
transport: modbus
address_base: pdu
points:
"""


def load(tmp_path: Path, points: str) -> object:
    f = tmp_path / "bit_probe.yaml"
    f.write_text(HEAD + points, encoding="utf-8")
    return load_profile_file(f)


@pytest.mark.parametrize("bit_address", [10, 11])
def test_a_bit_of_a_float_s_register_is_refused(tmp_path: Path, bit_address: int) -> None:
    # before: accepted; the "flag" read a bit of the gas reading's float32 (its sign, exponent or mantissa)
    points = (
        "  - {quantity: lel, table: holding, address: 10, type: float32}\n"
        f"  - {{quantity: sensor_fault, table: holding, address: {bit_address}, type: bit, bit: 3}}\n"
    )
    with pytest.raises(ProfileError) as err:
        load(tmp_path, points)
    msg = str(err.value)
    assert "points[1] (sensor_fault)" in msg and f"holding {bit_address}" in msg and "float32 lel" in msg, msg


def test_bits_share_a_status_word_and_its_integer_value(tmp_path: Path) -> None:
    # a status word read whole and as fields, fields overlapping (as the Honeywell Midas map does)
    points = (
        "  - {quantity: lel, table: holding, address: 10, type: float32}\n"
        "  - {quantity: bit_probe_word, table: holding, address: 12, type: uint16}\n"
        "  - {quantity: sensor_fault, table: holding, address: 12, type: bit, bit: 3}\n"
        "  - {quantity: calibrating, table: holding, address: 12, type: bit, bit: 0, bit_count: 4}\n"
    )
    f = tmp_path / "bit_probe.yaml"
    f.write_text(
        HEAD.replace("points:\n", "auxiliary:\n  - {name: bit_probe_word, unit: raw, low: 0, high: 65535}\npoints:\n")
        + points,
        encoding="utf-8",
    )
    prof = load_profile_file(f)
    assert [p.quantity for p in prof.points] == ["lel", "bit_probe_word", "sensor_fault", "calibrating"]  # type: ignore[union-attr]
