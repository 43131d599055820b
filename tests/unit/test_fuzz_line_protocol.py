"""Fuzzing the line protocol encoder: what it writes parses back, by an independent InfluxDB 1.x parser, unchanged."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

from hypothesis import example, given, settings
from hypothesis import strategies as st

from telemetry import quantities
from telemetry.lineproto import encode_line, encode_readings, series_tags
from telemetry.reading import Quality, Reading

FUZZ = settings(derandomize=True, database=None, deadline=None, max_examples=150)
FieldValue = float | int | str | bool

# ---------------------------------------------------------------- an independent InfluxDB 1.x line protocol parser
# The rules as gateway/influx.py documents them for 1.x: in the measurement `\,` and `\ ` are escapes; in tag keys,
# tag values and field keys `\,` `\=` `\ `; any other backslash is literal. String field values are in double
# quotes with `\"` and `\\` escaped, and may hold newlines (a line ends at a newline outside quotes).


@dataclass
class Point:
    measurement: str
    tags: dict[str, str] = field(default_factory=dict)
    fields: dict[str, FieldValue] = field(default_factory=dict)
    ts: int = 0


class ParseError(AssertionError):
    pass


class _Scanner:
    def __init__(self, text: str) -> None:
        self.s = text
        self.i = 0

    def peek(self) -> str:
        return self.s[self.i] if self.i < len(self.s) else ""

    def expect(self, ch: str) -> None:
        if self.peek() != ch:
            raise ParseError(f"expected {ch!r} at {self.i}, got {self.peek()!r}: {self.s!r}")
        self.i += 1

    def token(self, stops: str, escapable: str) -> str:
        out: list[str] = []
        while self.i < len(self.s) and self.s[self.i] not in stops:
            c = self.s[self.i]
            if c == "\\" and self.i + 1 < len(self.s) and self.s[self.i + 1] in escapable:
                out.append(self.s[self.i + 1])
                self.i += 2
            else:
                out.append(c)
                self.i += 1
        return "".join(out)

    def string(self) -> str:
        self.expect('"')
        out: list[str] = []
        while self.peek() != '"':
            if not self.peek():
                raise ParseError(f"unterminated string: {self.s!r}")
            if self.peek() == "\\" and self.i + 1 < len(self.s) and self.s[self.i + 1] in '"\\':
                self.i += 1
            out.append(self.s[self.i])
            self.i += 1
        self.i += 1
        return "".join(out)

    def value(self) -> FieldValue:
        if self.peek() == '"':
            return self.string()
        raw = self.token(", \n", "")
        if raw in ("t", "T", "true", "True", "TRUE"):
            return True
        if raw in ("f", "F", "false", "False", "FALSE"):
            return False
        if raw.endswith("i"):
            n = int(raw[:-1])
            if not -(2**63) <= n < 2**63:
                raise ParseError(f"integer out of range: {raw}")
            return n
        if raw.lower().lstrip("+-") in ("nan", "inf", "infinity") or not raw:
            raise ParseError(f"not a field value: {raw!r}")
        return float(raw)

    def key(self, what: str) -> str:
        k = self.token("=, \n", ",= ")
        if not k:
            raise ParseError(f"empty {what} at {self.i}: {self.s!r}")
        return k

    def point(self) -> Point:
        if self.peek() == "#":
            raise ParseError("a line starting with '#' is a comment")
        p = Point(self.token(", \n", ", "))
        if not p.measurement:
            raise ParseError(f"empty measurement: {self.s!r}")
        while self.peek() == ",":
            self.i += 1
            k = self.key("tag key")
            self.expect("=")
            v = self.token(", \n", ",= ")
            if not v or k in p.tags:
                raise ParseError(f"empty or repeated tag {k!r}: {self.s!r}")
            p.tags[k] = v
        self.expect(" ")
        while True:
            k = self.key("field key")
            self.expect("=")
            if k in p.fields:
                raise ParseError(f"field {k!r} twice in one line: {self.s!r}")
            p.fields[k] = self.value()
            if self.peek() != ",":
                break
            self.i += 1
        self.expect(" ")
        digits = self.token("\n", "")
        if not digits.lstrip("-").isdigit():
            raise ParseError(f"bad timestamp {digits!r}")
        p.ts = int(digits)
        self.expect("\n")
        return p


def parse(text: str) -> list[Point]:
    sc = _Scanner(text)
    out = []
    while sc.i < len(text):
        out.append(sc.point())
    return out


def test_the_parser_reads_the_documented_example() -> None:
    line = 'my\\ meas\\,x,zone=北区\\ A\\,B\\=C f\\ k=1.5,s="say \\"hi\\" \\\\ ok",n=3i,b=true 7\n'
    assert parse(line) == [
        Point("my meas,x", {"zone": "北区 A,B=C"}, {"f k": 1.5, "s": 'say "hi" \\ ok', "n": 3, "b": True}, 7)
    ]


# ---------------------------------------------------------------- encode_line

# Names and tags: what config validation and the catalog let through (no control characters, no backslash:
# InfluxDB 1.x cannot store those in tags); `,` `=` ` ` quotes and any unicode are fair game.
_CONTROL = "".join(map(chr, range(32))) + "\x7f"
name_chars = st.characters(blacklist_categories=("Cs",), blacklist_characters=_CONTROL + "\\")
names = st.text(name_chars, min_size=1, max_size=12) | st.sampled_from([",", "=", " ", "a b", 'x"y', "k=v,w"])
measurements = names.filter(lambda s: not s.startswith("#"))  # a leading '#' makes the line a comment
tag_values = names | st.just("")  # empty tags are left out
field_values = st.one_of(
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=20),  # anything: quotes, backslashes, newlines
    st.sampled_from(["\\", '"', '\\"', "a\\", "\n", 'end\\"', "1i", "true"]),
)
timestamps = st.integers(-(2**62), 2**63 - 1)


@FUZZ
@given(
    measurement=measurements,
    tags=st.dictionaries(names, tag_values, max_size=4),
    fields=st.dictionaries(names, field_values, min_size=1, max_size=5),
    ts=timestamps,
)
@example(measurement="m", tags={"t": "a b"}, fields={"s": "trailing backslash \\"}, ts=0)
@example(measurement="m=1", tags={"=": ","}, fields={"f": -0.0, "g": 1e-7, "h": 2**63 - 1}, ts=-1)
def test_encode_line_parses_back_to_the_same_values(
    measurement: str, tags: dict[str, str], fields: dict[str, FieldValue], ts: int
) -> None:
    line = encode_line(measurement, tags, fields, ts)
    assert line.endswith("\n")
    (p,) = parse(line)
    assert p.measurement == measurement
    assert p.tags == {k: v for k, v in tags.items() if v != ""}
    assert p.ts == ts
    assert p.fields.keys() == fields.keys()
    for k, v in fields.items():
        got = p.fields[k]
        assert type(got) is type(v) and got == v, (k, v, got, line)
        if isinstance(v, float):
            assert math.copysign(1, got) == math.copysign(1, v)  # bit-identical, -0.0 included


# ---------------------------------------------------------------- encode_readings

QUANTITIES = [*sorted(quantities.CATALOG), "deep_displacement_d5.0m", "deep_displacement_d12m"]
# names JSON would not write as they are (the encoder's field-by-field path): none comes from a profile, but the
# encoder takes any
QUANTITIES += ["f k", "x:y", "温度", "a{b},{c}"]
devices = st.sampled_from(["TC-01", "PIT.D01", "FW-A_01", "GAS-01", "x"]) | st.from_regex(
    r"\A[A-Za-z0-9][A-Za-z0-9_.\-]{0,10}\Z"  # the config's id pattern
)
values = st.floats() | st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 5e-324, 1e300])


@st.composite
def reading_sets(draw: st.DrawFn) -> tuple[list[Reading], dict[str, tuple[str, str, str, str]]]:
    """Readings of a few devices at a few instants (so they group), one per device, instant and quantity."""
    devs = draw(st.lists(devices, min_size=1, max_size=4, unique=True))
    stamps = draw(st.lists(timestamps, min_size=1, max_size=3, unique=True))
    keys = draw(
        st.lists(
            st.tuples(st.sampled_from(devs), st.sampled_from(stamps), st.sampled_from(QUANTITIES)),
            min_size=1,
            max_size=30,
            unique=True,
        )
    )
    rs = [Reading(d, q, draw(values), ts, draw(st.sampled_from(list(Quality)))) for d, ts, q in keys]
    # some devices have no series (not configured): their readings are skipped
    known = draw(st.lists(st.sampled_from(devs), unique=True, min_size=0, max_size=len(devs)))
    kinds = ["tower_crane", "excavation", "formwork", "gas"]
    series = {
        d: (draw(st.sampled_from(kinds)), draw(names), d, draw(tag_values))  # kind, site, device, zone
        for d in known
    }
    return rs, series


@FUZZ
@given(case=reading_sets())
@example(case=([Reading("TC-01", "load", math.nan, 5, Quality.GOOD)], {"TC-01": ("tower_crane", "s", "TC-01", "")}))
def test_encode_readings_one_line_per_device_and_timestamp(
    case: tuple[list[Reading], dict[str, tuple[str, str, str, str]]],
) -> None:
    readings, spec = case
    series = {d: series_tags(*args) for d, args in spec.items()}
    data, n_lines, n = encode_readings(readings, series)
    points = parse(data.decode("utf-8"))
    mine = [r for r in readings if r.device in series]
    groups = {(r.device, r.ts_ns) for r in mine}
    assert (n_lines, n) == (len(groups), len(mine))
    assert len(points) == len(groups)
    seen = Counter((p.tags["device"], p.ts) for p in points)
    assert set(seen) == groups and set(seen.values()) <= {1}  # one line per device and timestamp, none for others
    by_line = {(p.tags["device"], p.ts): p for p in points}
    for d, (kind, site, device, zone) in spec.items():
        for p in (p for p in points if p.tags["device"] == d):
            assert p.measurement == kind
            assert p.tags == {k: v for k, v in {"site": site, "device": device, "zone": zone}.items() if v}
    expected: dict[tuple[str, int], dict[str, FieldValue]] = {}
    for r in mine:
        f = expected.setdefault((r.device, r.ts_ns), {})
        if math.isfinite(r.value):
            f[r.quantity] = r.value
            if r.quality is not Quality.GOOD:
                f[f"{r.quantity}_q"] = int(r.quality)
        else:
            # a non-finite value cannot be stored: only its quality (not ready when the device said so, else bad)
            f[f"{r.quantity}_q"] = int(Quality.NOT_READY if r.quality is Quality.NOT_READY else Quality.BAD)
    for key, fields in expected.items():
        got = by_line[key].fields
        assert got == fields
        assert all(type(got[k]) is type(v) for k, v in fields.items())  # floats stay floats, qualities ints
