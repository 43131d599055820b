"""Reading's own constructor and the decoders' `make_reading` (telemetry/reading.py) keep what the dataclass gave:
fields, default, frozen, equality."""

from __future__ import annotations

import copy
import dataclasses
import pickle

import pytest

from telemetry.reading import Quality, Reading, make_reading


def test_a_reading_is_built_from_positions_or_names_with_good_quality_by_default() -> None:
    r = Reading("D1", "gas_ch4", 0.5, 7)
    assert (r.device, r.quantity, r.value, r.ts_ns, r.quality) == ("D1", "gas_ch4", 0.5, 7, Quality.GOOD)
    assert Reading(device="D1", quantity="gas_ch4", value=0.5, ts_ns=7) == r
    assert Reading("D1", "gas_ch4", 0.5, 7, Quality.BAD) != r
    assert hash(Reading("D1", "gas_ch4", 0.5, 7)) == hash(r)
    assert [f.name for f in dataclasses.fields(Reading)] == ["device", "quantity", "value", "ts_ns", "quality"]


def test_a_reading_cannot_be_changed_once_built() -> None:
    r = Reading("D1", "gas_ch4", 0.5, 7)
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.value = 9.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        Reading("D1", "gas_ch4", 0.5)  # type: ignore[call-arg]
    assert not hasattr(r, "__dict__")  # slots: no stray attributes either


def test_the_decoders_fast_constructor_makes_the_same_frozen_reading() -> None:
    r = make_reading("D1", "gas_ch4", 0.5, 7, Quality.BAD)
    assert type(r) is Reading and r == Reading("D1", "gas_ch4", 0.5, 7, Quality.BAD)
    assert hash(r) == hash(Reading("D1", "gas_ch4", 0.5, 7, Quality.BAD))
    assert make_reading("D1", "gas_ch4", 0.5, 7).quality is Quality.GOOD
    assert repr(r) == repr(Reading("D1", "gas_ch4", 0.5, 7, Quality.BAD))
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.value = 9.0  # type: ignore[misc]
    assert not hasattr(r, "__dict__")
    assert pickle.loads(pickle.dumps(r)) == r and copy.deepcopy(r) == r and dataclasses.replace(r, value=1.0).value == 1
