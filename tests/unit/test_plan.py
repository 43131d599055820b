"""Block coalescing: contiguous and near points share a request; limits split them."""

from __future__ import annotations

import pytest

from drivers.modbus.driver import decode_block
from drivers.modbus.plan import plan_reads, split_block
from drivers.profile import ModbusProfile, Table, builtin_profiles
from telemetry.reading import Reading


def profile(points: list[dict[str, object]], base: str = "pdu") -> ModbusProfile:
    return ModbusProfile.model_validate(
        {"id": "t", "kind": "excavation", "title": "t", "transport": "modbus", "address_base": base, "points": points}
    )


def test_crane_profile_is_three_requests() -> None:
    blocks = plan_reads(builtin_profiles()["tower_crane_tcp_v1"])  # type: ignore[arg-type]
    assert [(b.table, b.address, b.count) for b in blocks] == [
        (Table.COIL, 0, 1),
        (Table.DISCRETE, 0, 1),
        (Table.HOLDING, 0, 15),
    ]


def test_gap_rule() -> None:
    pts = [
        {"quantity": "settlement", "table": "holding", "address": 0, "type": "float32"},
        {"quantity": "pole_tilt", "table": "holding", "address": 10, "type": "float32"},
    ]
    # 8 unused registers between 2 and 10: merged with max_gap 8, split with 7
    assert [(b.address, b.count) for b in plan_reads(profile(pts), max_gap=8)] == [(0, 12)]
    assert [(b.address, b.count) for b in plan_reads(profile(pts), max_gap=7)] == [(0, 2), (10, 2)]


def test_block_size_limit() -> None:
    pts = [
        {"quantity": f"deep_displacement_d{i}m", "table": "input", "address": i * 4, "type": "float64"}
        for i in range(40)
    ]
    blocks = plan_reads(profile(pts), max_gap=0, max_block=125)
    assert all(b.count <= 125 for b in blocks)
    assert sum(len(b.points) for b in blocks) == 40
    assert [(b.address, b.count) for b in blocks] == [(0, 124), (124, 36)]


def test_modicon_addresses_resolve_to_tables() -> None:
    pts = [
        {"quantity": "settlement", "address": 40001, "type": "float32"},
        {"quantity": "pole_tilt", "address": 30010, "type": "int16"},
        {"quantity": "sensor_fault", "address": 10001, "type": "bool"},
        {"quantity": "calibrating", "address": 1, "type": "bool"},
    ]
    got = {(b.table, b.address) for b in plan_reads(profile(pts, "modicon"))}
    assert got == {(Table.HOLDING, 0), (Table.INPUT, 9), (Table.DISCRETE, 0), (Table.COIL, 0)}


def test_linear_units_fold_into_scale() -> None:
    pts = [{"quantity": "strut_force", "table": "holding", "address": 0, "type": "float32", "unit": "MN"}]
    (block,) = plan_reads(profile(pts))
    (p,) = block.points
    assert p.scale == 1000.0 and p.convert is None


def test_a_point_past_register_65535_is_refused() -> None:
    """A point whose registers ran past the last address (0xFFFF, Modbus Application Protocol V1.1b3 §4.4) was
    accepted and planned as 'FC3 holding 65535..65536', a request no device can answer; so was a register clock."""
    last = [{"quantity": "settlement", "table": "holding", "address": 65534, "type": "float32"}]
    (block,) = plan_reads(profile(last))
    assert (block.address, block.count) == (65534, 2)  # ends on 65535: fine
    for address, dtype in ((65535, "float32"), (65533, "float64"), (65535, "int32")):
        over = [{"quantity": "settlement", "table": "holding", "address": address, "type": dtype}]
        with pytest.raises(ValueError, match=rf"points\[0\] \(settlement\): holding {address}\.\.\d+ \(\d registers\) "
                           "runs past the last address 65535"):  # fmt: skip
            profile(over)
    with pytest.raises(ValueError, match=r"clock: holding 65533\.\.65538 \(6 registers\) runs past the last address"):
        ModbusProfile.model_validate(
            {"id": "t", "kind": "excavation", "title": "t", "transport": "modbus", "address_base": "pdu",
             "points": last, "clock": {"address": 65533}}
        )  # fmt: skip


def test_the_last_register_is_register_65536_when_counted_from_1() -> None:
    """One-based register 65536 is wire address 0xFFFF (item X is addressed X-1, Modbus Application Protocol
    V1.1b3 §4.4): refused by the field's 0..65535 before any addressing was applied (a second review)."""
    one_based = ModbusProfile.model_validate(
        {"id": "t", "kind": "excavation", "title": "t", "transport": "modbus", "address_base": "one_based",
         "points": [{"quantity": "settlement", "table": "holding", "address": 65536, "type": "uint16"}]}
    )  # fmt: skip
    (block,) = plan_reads(one_based)
    assert (block.address, block.count) == (65535, 1)
    with pytest.raises(ValueError, match=r"holding 65536\.\.65536 \(1 registers\) runs past the last address 65535"):
        profile([{"quantity": "settlement", "table": "holding", "address": 65536, "type": "uint16"}])  # (pdu)


def test_a_merged_block_splits_into_its_gap_free_parts() -> None:
    """What replaces a merged read a device refuses with exception 02 (gateway/supervisor.py poll_device): the
    block's points regrouped with max_gap 0, each at its offset in its part; bit points stay on their register."""
    pts = [
        {"quantity": "settlement", "table": "holding", "address": 0, "type": "float32"},
        {"quantity": "sensor_fault", "table": "holding", "address": 4, "type": "bit", "bit": 0},
        {"quantity": "calibrating", "table": "holding", "address": 4, "type": "bit", "bit": 1},
        {"quantity": "pole_tilt", "table": "holding", "address": 5, "type": "int16"},
        {"quantity": "tilt_x", "table": "holding", "address": 12, "type": "float32"},
    ]
    (block,) = plan_reads(profile(pts), max_gap=8)
    assert (block.address, block.count) == (0, 14)
    parts = split_block(block)
    assert [(b.address, b.count, [(p.quantity, p.offset) for p in b.points]) for b in parts] == [
        (0, 2, [("settlement", 0)]),
        (4, 2, [("sensor_fault", 0), ("calibrating", 0), ("pole_tilt", 1)]),
        (12, 2, [("tilt_x", 0)]),
    ]
    words = [0x4049, 0x0FDB, 0, 0, 0b10, 0xFFFE, 0, 0, 0, 0, 0, 0, 0x3F80, 0]
    whole: list[Reading] = []
    decode_block("D", block, words, 1, whole)
    split: list[Reading] = []
    for b in parts:
        decode_block("D", b, words[b.address : b.address + b.count], 1, split)
    assert split == whole and len(whole) == 5
    assert split_block(parts[1]) == [parts[1]]  # no gap: nothing to split
