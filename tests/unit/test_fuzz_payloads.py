"""Fuzzing the MQTT payload decoders of every built-in profile: only ProtocolError, no GOOD non-finite value."""

from __future__ import annotations

import copy
import json
import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from drivers.errors import ProtocolError
from drivers.mqtt.payloads import PayloadDecoder
from drivers.profile import MqttProfile, builtin_profiles
from drivers.testbench import load_samples, profile_samples
from drivers.timefmt import TimeParser, TimestampFormat, TimestampSpec
from telemetry import quantities
from telemetry.reading import Quality, Reading

PROFILES = {p.id: p for p in builtin_profiles().values() if isinstance(p, MqttProfile)}
DECODERS = {pid: PayloadDecoder(p) for pid, p in PROFILES.items()}
ALL = sorted(PROFILES)
FUZZ = settings(derandomize=True, database=None, deadline=None, max_examples=120)
TS_NS = 1_795_000_000_000_000_000  # what the tests pass to `readings` as the message time
Path = tuple[str | int, ...]


def test_every_mqtt_profile_is_fuzzed() -> None:
    assert {"formwork_mqtt_v1", "gas_4in1_mqtt_v1", "hj212_dust_noise_v1"} <= set(ALL)
    # every profile gets the byte and JSON fuzzing below; those with a valid-document strategy also get the
    # document mutations, and every other one has golden samples that test_golden_samples_mutated mutates
    for pid in set(ALL) - set(VALID):
        assert profile_samples(pid, []) is not None, f"{pid}: add golden samples or a valid-payload strategy"


def check(pid: str, device: str, readings: list[Reading], errors: list[ProtocolError]) -> None:
    """What every decoded message must satisfy, however bad the input."""
    names = set(PROFILES[pid].quantity_names())
    for r in readings:
        assert r.device == device  # never mixes devices
        assert r.quantity in names
        assert r.ts_ns == TS_NS
        assert isinstance(r.value, float) and isinstance(r.quality, Quality)
        assert math.isfinite(r.value) or not r.quality.valid, r  # no value is never a usable one
    for e in errors:
        assert isinstance(e, ProtocolError) and str(e)  # the reason goes with the dead letter


def decode(pid: str, topic: str, payload: bytes) -> tuple[list[Reading], list[ProtocolError]] | None:
    """The session's sequence (drivers/mqtt/session.py `handle`); None when the whole message is dead-lettered."""
    dec = DECODERS[pid]
    try:
        doc = dec.parse(payload)
        key = dec.device_key(topic, doc)
        dec.timestamp_ns(doc, TS_NS)
    except ProtocolError as err:
        assert str(err)
        return None
    device = f"dev-{key}"
    readings, errors = dec.readings(device, doc, TS_NS)
    check(pid, device, readings, errors)
    return readings, errors


def topic_for(pid: str, key: str = "D1") -> str:
    seg = PROFILES[pid].payload.device_key.segment
    return "/".join([key if i == seg else "x" for i in range((seg or 0) + 2)])


# ---------------------------------------------------------------- arbitrary input


@FUZZ
@given(pid=st.sampled_from(ALL), payload=st.binary(max_size=300))
@example(pid="formwork_mqtt_v1", payload=b"[" * 100_000)  # RecursionError in json.loads
@example(pid="formwork_mqtt_v1", payload=b"1" * 5000)  # ValueError: over the 4300-digit int limit
@example(pid="gas_4in1_mqtt_v1", payload=b"\xff\xfe\x00")
def test_arbitrary_bytes(pid: str, payload: bytes) -> None:
    decode(pid, topic_for(pid), payload)


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([2**63, -(2**63) - 1, 2**64, 10**400, -(10**400)]),
    st.floats(),  # NaN and ±Infinity, which json.dumps writes as the literals json.loads accepts
    st.text(max_size=20),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=30,
)
# keys the profiles look for, so that arbitrary documents reach the field and point decoding often
KEYS = ["ts", "data", "settlement", "tilt", "force", "hdisp", "sn", "time", "readings", "status", "fault", "cal"]
KEYS += ["gas", "value", "unit", "EX", "O2", "H2S", "CO", "%LEL", "%VOL", "ppm", "0"]
profile_like = st.recursive(
    scalars | st.sampled_from(KEYS),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(KEYS), inner, max_size=5),
    max_leaves=40,
)


UNHASHABLE_UNIT = {"sn": "A", "time": "2026-11-21T09:30:00Z", "readings": [{"gas": "CO", "value": 1, "unit": []}]}


@FUZZ
@given(pid=st.sampled_from(ALL), doc=json_values | profile_like)
@example(pid="formwork_mqtt_v1", doc={"ts": float("nan"), "data": {}})  # round(NaN) raised ValueError
@example(pid="formwork_mqtt_v1", doc={"ts": 1e308, "data": {}})  # round(inf) raised OverflowError
@example(pid="formwork_mqtt_v1", doc={"ts": 1795000000000, "data": {"tilt": float("inf")}})  # tan(inf)
@example(pid="formwork_mqtt_v1", doc={"ts": 1795000000000, "data": {"settlement": 10**400}})  # float(int)
@example(pid="gas_4in1_mqtt_v1", doc=UNHASHABLE_UNIT)  # TypeError: unhashable type
def test_arbitrary_json(pid: str, doc: Any) -> None:
    payload = json.dumps(doc).encode()
    decode(pid, topic_for(pid), payload)
    # and the decoder's parts on the document as such, whatever the session would have stopped at
    dec = DECODERS[pid]
    for step in (lambda: dec.device_key(topic_for(pid), doc), lambda: dec.timestamp_ns(doc, TS_NS)):
        try:
            step()
        except ProtocolError:
            pass
    check(pid, "D", *dec.readings("D", doc, TS_NS))


@FUZZ
@given(pid=st.sampled_from(ALL), depth=st.integers(1, 50_000), opener=st.sampled_from(["[", '{"a":']))
def test_deep_nesting(pid: str, depth: int, opener: str) -> None:
    closer = "]" if opener == "[" else "}"
    inner = opener * depth + "1" + closer * depth
    for payload in (inner, '{"data": {"settlement": ' + inner + '}, "readings": [' + inner + "]}"):
        decode(pid, topic_for(pid), payload.encode())


# ---------------------------------------------------------------- valid payloads, then mutated


def _units(quantity: str) -> list[str | None]:
    target = quantities.lookup(quantity).unit
    out: list[str | None] = [None, target]
    for u in ("%LEL", "%VOL", "ppm", "mm", "cm", "m", "°", "deg", "mrad", "%", "kN", "N", "MN", "t"):
        try:
            quantities.converter(u, target)
        except ValueError:
            continue
        if u not in out:
            out.append(u)
    return out


def _epoch_ms() -> st.SearchStrategy[int]:
    return st.integers(946_684_800_000, 4_102_444_799_000)


measured = st.floats(-1e6, 1e6, allow_nan=False) | st.integers(-(10**6), 10**6)


@st.composite
def formwork_doc(draw: st.DrawFn) -> dict[str, Any]:
    paths = [f.path.split(".") for f in PROFILES["formwork_mqtt_v1"].payload.fields]
    doc: dict[str, Any] = {"ts": draw(_epoch_ms())}
    for p in paths:
        cur = doc
        for k in p[:-1]:
            cur = cur.setdefault(k, {})
        cur[p[-1]] = draw(measured)
    return doc


@st.composite
def gas_doc(draw: st.DrawFn) -> dict[str, Any]:
    arr = PROFILES["gas_4in1_mqtt_v1"].payload.points
    assert arr is not None and arr.unit_key is not None
    points = []
    for name in draw(st.lists(st.sampled_from(sorted(arr.names)), min_size=1, max_size=6)):
        pt: dict[str, Any] = {arr.name_key: name, arr.value_key: draw(measured)}
        unit = draw(st.sampled_from(_units(arr.names[name])))
        if unit is not None:
            pt[arr.unit_key] = unit
        points.append(pt)
    zone = timezone(timedelta(minutes=draw(st.integers(-14 * 60, 14 * 60))))
    when = draw(st.datetimes(datetime(2001, 1, 1), datetime(2099, 1, 1))).replace(tzinfo=zone)
    return {
        "sn": draw(st.text(min_size=1, max_size=12)),
        "time": when.isoformat().replace("+00:00", draw(st.sampled_from(["+00:00", "Z"]))),
        "readings": points,
        "status": {"fault": draw(st.sampled_from([0, 1])), "cal": draw(st.sampled_from([0, 1]))},
    }


@st.composite
def yunzhu_crane_doc(draw: st.DrawFn) -> dict[str, Any]:
    """云筑 crane live data: local time without a zone (a pattern), a 32-character 0/1 alarm string."""
    doc: dict[str, Any] = {
        "deviceId": draw(st.text(min_size=1, max_size=12)),
        "deviceTime": draw(st.datetimes(datetime(2001, 1, 1), datetime(2099, 1, 1))).strftime("%Y-%m-%d %H:%M:%S"),
        "warning": "".join(draw(st.lists(st.sampled_from("01"), min_size=32, max_size=32))),
    }
    for f in PROFILES["yunzhu_tower_crane_json_v1"].payload.fields:
        if f.path not in doc:
            doc[f.path] = draw(measured)
    return doc


VALID: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "formwork_mqtt_v1": formwork_doc(),
    "gas_4in1_mqtt_v1": gas_doc(),
    "yunzhu_tower_crane_json_v1": yunzhu_crane_doc(),
}
DOCS = sorted(VALID)


@FUZZ
@given(pid=st.sampled_from(DOCS), data=st.data())
def test_valid_payloads_decode_without_errors(pid: str, data: st.DataObject) -> None:
    doc = data.draw(VALID[pid])
    got = decode(pid, topic_for(pid, str(doc.get("sn", "D1"))), json.dumps(doc).encode())
    assert got is not None
    readings, errors = got
    assert errors == []
    assert len(readings) == len(PROFILES[pid].payload.fields) + len(doc.get("readings", []))


SAMPLED = [
    (pid, case.payload)
    for pid in ALL
    if (sp := profile_samples(pid, [])) is not None
    for case in load_samples(sp).cases
    if case.payload is not None
]


@FUZZ
@given(sample=st.sampled_from(SAMPLED), cut=st.integers(0, 600), junk=st.binary(max_size=8), data=st.data())
def test_golden_samples_mutated(sample: tuple[str, str], cut: int, junk: bytes, data: st.DataObject) -> None:
    """Every profile's own golden payloads (HJ 212 frames, 0/1 alarm strings, two-field dates, per-channel status),
    cut, spliced with junk and with characters replaced: a ProtocolError or readings that pass `check`."""
    pid, text = sample
    raw = text.strip().encode()
    cut = min(cut, len(raw))
    i = data.draw(st.integers(0, max(0, len(raw) - 1)))
    swapped = (
        raw[:i] + data.draw(st.sampled_from([b"-", b"9", b",", b";", b"=", b"&", b'"', b"\xff", b"."])) + raw[i + 1 :]
    )
    for payload in (raw[:cut], raw[:cut] + junk + raw[cut:], raw[:cut] + junk + raw[cut + len(junk) :], swapped):
        decode(pid, topic_for(pid), payload)


PATTERNS = ["yyyy-MM-dd HH:mm:ss", "yyyy/MM/dd HH:mm:ss", "yyyyMMddHHmmss", "yyyy-MM-dd HH:mm:ss.SSS", "%d.%m.%Y %H:%M"]


@FUZZ
@given(
    pattern=st.sampled_from(PATTERNS),
    zone=st.sampled_from(["site", "UTC", "+08:00", "-03:30", "Europe/Berlin"]),
    value=st.one_of(
        st.text(max_size=30),
        st.datetimes(datetime(1900, 1, 1), datetime(2300, 1, 1)).map(lambda d: d.strftime("%Y-%m-%d %H:%M:%S")),
        st.integers(),
        st.floats(),
        st.none(),
    ),
)
def test_pattern_times_only_ever_raise_protocol_errors(pattern: str, zone: str, value: Any) -> None:
    p = TimeParser(TimestampSpec(path="t", format=TimestampFormat.PATTERN, pattern=pattern, zone=zone), "Asia/Shanghai")
    try:
        ns = p.parse(value)
    except ProtocolError as err:
        assert str(err).startswith("timestamp 't'")
        return
    assert 946_684_800 * 10**9 <= ns <= 4_102_444_800 * 10**9


@FUZZ
@given(
    fmt=st.sampled_from(
        [TimestampFormat.EPOCH_S, TimestampFormat.EPOCH_MS, TimestampFormat.EPOCH_US, TimestampFormat.EPOCH_NS]
    ),
    value=st.one_of(st.integers(), st.floats(), st.text(max_size=25), st.booleans()),
)
def test_epoch_times_only_ever_raise_protocol_errors(fmt: TimestampFormat, value: Any) -> None:
    p = TimeParser(TimestampSpec(path="t", format=fmt), "UTC")
    try:
        ns = p.parse(value)
    except ProtocolError:
        return
    assert 946_684_800 * 10**9 <= ns <= 4_102_444_800 * 10**9


nasty = st.one_of(
    st.text(max_size=10),  # numbers as strings, unicode, empty
    st.sampled_from(["12.5", "NaN", "", "🏗️塔吊", "\u0000", "1e999", "0x10"]),
    st.sampled_from([10**400, -(10**400), 2**64, float("nan"), float("inf"), float("-inf"), 1e308, -1e308, 5e-324]),
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=3),
    st.integers(1, 200).map(lambda n: json.loads("[" * n + "]" * n)),  # deep nesting
)


def _leaves(doc: Any, path: Path = ()) -> list[Path]:
    if isinstance(doc, dict):
        return [p for k, v in doc.items() for p in _leaves(v, (*path, k))] or [path]
    if isinstance(doc, list):
        return [p for i, v in enumerate(doc) for p in _leaves(v, (*path, i))] or [path]
    return [path]


def _objects(doc: Any, path: Path = ()) -> list[Path]:
    """Paths of every JSON object in the document (where an extra key can go)."""
    if isinstance(doc, dict):
        return [path] + [p for k, v in doc.items() for p in _objects(v, (*path, k))]
    if isinstance(doc, list):
        return [p for i, v in enumerate(doc) for p in _objects(v, (*path, i))]
    return []


def _at(doc: Any, path: Path) -> Any:
    for k in path:
        doc = doc[k]
    return doc


@st.composite
def mutated(draw: st.DrawFn, pid: str) -> tuple[dict[str, Any], dict[str, Any], set[Path]]:
    """(valid document, mutated copy, paths whose value changed or went away)."""
    doc = draw(VALID[pid])
    bad = copy.deepcopy(doc)
    touched: set[Path] = set()
    leaves = _leaves(doc)
    for path in draw(st.lists(st.sampled_from(leaves), max_size=len(leaves), unique=True)):
        parent, key = _at(bad, path[:-1]), path[-1]
        if isinstance(parent, dict) and draw(st.booleans()):
            del parent[key]  # a missing key
        else:
            parent[key] = draw(nasty)  # a wrong type, a huge number, NaN, unicode, deep nesting
        touched.add(path)
    for path in draw(st.lists(st.sampled_from(_objects(bad)), max_size=3)):
        target = _at(bad, path)
        extra = "x-" + draw(st.text(max_size=6))  # an extra key nobody asked for: no profile reads `x-...`
        target[extra] = draw(nasty | measured)
    return doc, bad, touched


def _field_paths(pid: str, doc: dict[str, Any]) -> list[Path]:
    """The source path of each reading of a valid document, in the decoder's output order."""
    m = PROFILES[pid].payload
    out: list[Path] = [tuple(int(k) if k.isdigit() else k for k in f.path.split(".")) for f in m.fields]
    if m.points is not None:
        out += [(m.points.path, i) for i in range(len(doc[m.points.path]))]
    return out


@FUZZ
@given(pid=st.sampled_from(DOCS), data=st.data())
def test_mutated_payloads_keep_their_good_fields(pid: str, data: st.DataObject) -> None:
    doc, bad, touched = data.draw(mutated(pid))
    dec = DECODERS[pid]
    before, errs = dec.readings("D", doc, TS_NS)
    assert errs == []
    # the whole message goes to the dead letters only when its device id or timestamp was hit
    m = PROFILES[pid].payload
    head = {p for p in (m.device_key.path, m.timestamp.path) if p}
    got = decode(pid, topic_for(pid, str(bad.get("sn", "D1"))), json.dumps(bad).encode())
    if got is None:
        assert {p[0] for p in touched} & head, (bad, touched)
    after, errors = dec.readings("D", bad, TS_NS)
    check(pid, "D", after, errors)
    flag_intact = m.bad_when is None or not any(p[0] == m.bad_when.path.split(".")[0] for p in touched)
    remaining = list(after)
    for path, r in zip(_field_paths(pid, doc), before, strict=True):
        if any(path[: len(t)] == t or t[: len(path)] == path for t in touched):
            continue
        # an untouched field comes through with its value (and its quality, unless the fault flag was hit)
        match = [x for x in remaining if x.quantity == r.quantity and x.value == r.value]
        assert match, (path, r, after, errors)
        if flag_intact:
            assert match[0].quality is r.quality
        remaining.remove(match[0])
    # a field that is there but holds no usable number is reported, naming its path (the dead letter's reason)
    for f in m.fields:
        v = _get_or(bad, f.path)
        bit_string = f.bits_as == "binary_string" and isinstance(v, str) and v != "" and not v.strip("01")
        if v is not _ABSENT and not _usable(v) and not bit_string:
            assert any(repr(f.path) in str(e) for e in errors), (f.path, v, errors)


_ABSENT = object()


def _usable(v: Any) -> bool:
    """A JSON number that fits a float (bool counts: flags)."""
    if not isinstance(v, (int, float)):
        return False
    try:
        float(v)
    except OverflowError:
        return False
    return True


def _get_or(doc: Any, dotted: str) -> Any:
    for k in dotted.split("."):
        if not isinstance(doc, dict) or k not in doc:
            return _ABSENT
        doc = doc[k]
    return doc


@settings(FUZZ, max_examples=40)
@given(docs=st.lists(VALID["gas_4in1_mqtt_v1"], min_size=2, max_size=5))
def test_messages_of_several_devices_never_mix(docs: list[dict[str, Any]]) -> None:
    dec = DECODERS["gas_4in1_mqtt_v1"]
    for i, doc in enumerate(docs):
        parsed = dec.parse(json.dumps(doc).encode())
        assert dec.device_key("t", parsed) == doc["sn"]
        readings, _ = dec.readings(f"GAS-{i}", parsed, TS_NS)
        assert {r.device for r in readings} == {f"GAS-{i}"}


@FUZZ
@given(pid=st.sampled_from(DOCS), data=st.data(), cut=st.integers(0, 400), junk=st.binary(max_size=6))
def test_byte_level_mutations(pid: str, data: st.DataObject, cut: int, junk: bytes) -> None:
    raw = json.dumps(data.draw(VALID[pid]), ensure_ascii=False).encode()
    cut = min(cut, len(raw))
    for payload in (raw[:cut], raw[:cut] + junk + raw[cut:], raw[:cut] + junk + raw[cut + len(junk) :]):
        decode(pid, topic_for(pid), payload)


# ---------------------------------------------------------------- regressions found by the fuzzing, spelled out


def test_nan_and_infinite_timestamps_are_refused_not_crashing() -> None:
    dec = DECODERS["formwork_mqtt_v1"]
    for raw in (b'{"ts": NaN}', b'{"ts": Infinity}', b'{"ts": -Infinity}', b'{"ts": 1e308}'):
        with pytest.raises(ProtocolError, match="not a plausible epoch_ms time"):
            dec.timestamp_ns(dec.parse(raw), 0)


def test_iso_timestamps_are_checked_for_plausibility_too() -> None:
    dec = DECODERS["gas_4in1_mqtt_v1"]
    for t in ("9999-12-31T23:59:59+00:00", "0001-01-01T00:00:00+14:00", "1969-12-31T23:59:59.5Z"):
        with pytest.raises(ProtocolError, match="not a plausible iso8601 time"):
            dec.timestamp_ns({"time": t}, 0)
    good = datetime(2026, 11, 21, 1, 30, tzinfo=UTC)
    assert dec.timestamp_ns({"time": good.isoformat()}, 0) == int(good.timestamp()) * 1_000_000_000


def test_infinite_tilt_in_degrees_is_bad_not_a_crash() -> None:
    dec = DECODERS["formwork_mqtt_v1"]
    readings, errors = dec.readings("FW", dec.parse(b'{"data": {"tilt": Infinity, "settlement": 1}}'), TS_NS)
    assert errors == []
    by = {r.quantity: r for r in readings}
    assert by["pole_tilt"].quality is Quality.BAD and by["settlement"].value == 1.0


def test_integer_beyond_float_range_loses_only_its_field() -> None:
    dec = DECODERS["formwork_mqtt_v1"]
    readings, errors = dec.readings("FW", {"data": {"settlement": 10**400, "force": 2}}, TS_NS)
    assert [(r.quantity, r.value) for r in readings] == [("axial_force", 2.0)]
    assert len(errors) == 1 and "beyond the range of a number" in str(errors[0])


def test_unit_that_is_not_a_string_loses_only_its_point() -> None:
    dec = DECODERS["gas_4in1_mqtt_v1"]
    doc = {"readings": [{"gas": "CO", "value": 1, "unit": []}, {"gas": "O2", "value": 20.9, "unit": {"a": 1}}]}
    doc["readings"].append({"gas": "H2S", "value": 2, "unit": "ppm"})
    readings, errors = dec.readings("G", doc, TS_NS)
    assert [(r.quantity, r.value) for r in readings] == [("h2s", 2.0)]
    assert len(errors) == 2 and all("expected a unit string" in str(e) for e in errors)


def test_unparseable_json_is_a_protocol_error() -> None:
    dec = DECODERS["formwork_mqtt_v1"]
    for raw in (b"[" * 100_000, b"9" * 5000):
        with pytest.raises(ProtocolError, match="payload is not JSON"):
            dec.parse(raw)


def _walking(dec: PayloadDecoder) -> PayloadDecoder:
    """The decoder with every field looked up by `_get`'s walk of its path, not `readings`' inline lookup."""
    walk = copy.copy(dec)
    walk._fields = [copy.copy(f) for f in dec._fields]
    for f in walk._fields:
        object.__setattr__(f, "keys", None)
    return walk


WALKING = {pid: _walking(dec) for pid, dec in DECODERS.items()}


@FUZZ
@given(pid=st.sampled_from(ALL), doc=json_values | profile_like)
@example(pid="formwork_mqtt_v1", doc={"data": {"settlement": 1.5, "tilt": [0.2]}, "status": [{"fault": 1}]})
@example(pid="formwork_mqtt_v1", doc={"data": {"0": 1, "settlement": -0.0}, "status": {"fault": 0, "cal": True}})
def test_the_inline_field_lookup_reads_what_the_path_walk_reads(pid: str, doc: Any) -> None:
    assert any(f.keys is not None and f.keys[1] is not None for f in DECODERS["formwork_mqtt_v1"]._fields)
    assert repr(DECODERS[pid].readings("D", doc, TS_NS)) == repr(WALKING[pid].readings("D", doc, TS_NS))


def test_only_paths_of_one_or_two_object_keys_are_looked_up_inline() -> None:
    from drivers.mqtt.payloads import _Field, _get, _split

    def field(path: str) -> _Field:
        return _Field(_split(path), "load", 1.0, 0.0, None)

    assert field("load").keys == ("load", None)
    assert field("d.load").keys == ("d", "load")
    # a digit names an array item or the object key "0" (_get tries both): always the walk
    assert field("data.0").keys is None and field("0").keys is None
    assert field("a.b.c").keys is None
    doc = {"data": {"0": 1.5}, "d": [{"load": 2.0}]}
    assert _get(doc, field("data.0").path) == 1.5
    dec = copy.copy(DECODERS["formwork_mqtt_v1"])
    dec._fields = [field("data.0"), field("d.load")]
    (r,), errors = dec.readings("D", doc, TS_NS)
    assert (r.value, errors) == (1.5, [])  # "d" holds a list: no "load" under it, and nothing reported
