"""The MQTT payloads' JSON reader (orjson, json for what orjson refuses) gives json.loads's result on any input."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.mqtt.payloads import loads_json


def same(a: Any, b: Any) -> bool:
    """Equal values of the same types, NaN equal to NaN and -0.0 told from 0.0, keys in the same order."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def outcome(load: Any, data: bytes) -> tuple[str, Any]:
    try:
        return "ok", load(data)
    except RecursionError:
        return "RecursionError", None
    except ValueError:  # json's and orjson's decode errors, and bad UTF-8
        return "ValueError", None


def check(data: bytes) -> None:
    want, got = outcome(json.loads, data), outcome(loads_json, data)
    assert want[0] == got[0], data[:80]
    if data.count(b"[") + data.count(b"{") > 200:  # too deep, maybe, for same(); repr says the same, flatly
        assert repr(want[1]) == repr(got[1]), data[:80]
    else:
        assert same(want[1], got[1]), data[:80]


SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),  # beyond 64 bits too
    st.integers(min_value=-(2**64), max_value=2**64),
    st.floats(),  # NaN and the infinities are written as json writes them
    st.text(),
)
VALUES = st.recursive(
    SCALARS, lambda inner: st.one_of(st.lists(inner), st.dictionaries(st.text(), inner)), max_leaves=30
)


@settings(max_examples=400, deadline=None)
@given(value=VALUES, ascii_only=st.booleans(), indent=st.sampled_from([None, 0, 2]))
def test_any_json_document_reads_as_json_reads_it(value: Any, ascii_only: bool, indent: int | None) -> None:
    check(json.dumps(value, ensure_ascii=ascii_only, indent=indent).encode("utf-8", "surrogatepass"))


@settings(max_examples=400, deadline=None)
@given(value=VALUES, cut=st.integers(min_value=0, max_value=200), junk=st.binary(max_size=4))
def test_broken_documents_fail_or_read_alike(value: Any, cut: int, junk: bytes) -> None:
    doc = json.dumps(value).encode()
    check(doc[:cut] + junk + doc[cut:])


@given(data=st.binary(max_size=64))
def test_arbitrary_bytes_fail_or_read_alike(data: bytes) -> None:
    check(data)


@pytest.mark.parametrize(
    "data",
    [
        b'{"a":1,"a":2}',  # the last of duplicate keys
        b"18446744073709551616",  # 2**64: orjson would give a float
        b"-9223372036854775809",
        b"18446744073709551615",
        b'{"deviceId":12345678901234567890123,"v":1.5}',
        b"NaN",
        b'{"v":-Infinity}',
        b"1e400",
        b"-0",
        b"-0.0",
        b"4.9e-324",
        b'"\\ud800"',  # a lone surrogate
        b'\xef\xbb\xbf{"a":1}',  # a UTF-8 byte-order mark
        '{"a":"中"}'.encode("utf-16"),
        '{"a":"中"}'.encode("utf-32-le"),
        b'"\xff"',
        b'"a\tb"',  # a raw control character: json refuses it
        b"[" * 1100 + b"]" * 1100,  # deeper than orjson reads
        b"[" * 1000 + b"]" * 1000,  # deeper than json reads, not than orjson: json refuses it
        b'{"a":' * 600 + b"1" + b"}" * 600,
        b"[" * 511 + b"]" * 511,
        b"[" + b"[]," * 700 + b"[]]",  # many brackets, shallow
        b"1" * 5000,  # over Python's digit limit
        b" \n{} ",
        b"",
    ],
)
def test_what_orjson_refuses_or_reads_otherwise_is_json_s(data: bytes) -> None:
    check(data)
