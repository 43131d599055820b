"""InfluxDB line protocol: escaping, one line, and a batch of readings with their series tags."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import orjson

from telemetry.reading import Quality, Reading

# InfluxDB 1.x unescapes only `\,` `\=` `\ ` in names and tags (a doubled backslash stays doubled), so a
# backslash is written as is; config validation keeps backslashes and control characters out of tag values.
_MEAS = str.maketrans({",": "\\,", " ": "\\ "})
_TAG = str.maketrans({",": "\\,", " ": "\\ ", "=": "\\="})
_STR = str.maketrans({'"': '\\"', "\\": "\\\\"})


def escape_measurement(s: str) -> str:
    return s.translate(_MEAS)


def escape_key(s: str) -> str:
    """Tag keys, tag values and field keys."""
    return s.translate(_TAG)


def escape_string(s: str) -> str:
    """A string field value, without its quotes."""
    return s.translate(_STR)


def format_float(v: float) -> str:
    # repr() is the shortest string that round-trips exactly, so values read back bit-identical
    # (InfluxDB parses exponents such as 1e-07); callers never pass NaN or infinities
    return repr(float(v))


def encode_line(
    measurement: str, tags: Mapping[str, str], fields: Mapping[str, float | int | str | bool], ts_ns: int
) -> str:
    """One line; tags with empty values are left out (InfluxDB cannot store them)."""
    parts = [escape_measurement(measurement)]
    for k in sorted(tags):
        tv = tags[k]
        if tv != "":
            parts.append(f"{escape_key(k)}={escape_key(tv)}")
    fs = []
    for k, v in fields.items():
        if isinstance(v, bool):
            fv = "true" if v else "false"
        elif isinstance(v, int):
            fv = f"{v}i"
        elif isinstance(v, float):
            fv = format_float(v)
        else:
            fv = f'"{escape_string(v)}"'
        fs.append(f"{escape_key(k)}={fv}")
    return f"{','.join(parts)} {','.join(fs)} {ts_ns}\n"


@dataclass(frozen=True, slots=True)
class SeriesTags:
    """What a device contributes to every line: measurement (its kind) and the escaped tag set."""

    measurement: str
    tagset: str  # pre-escaped ",k=v,k=v" so the hot path does no escaping


def series_tags(kind: str, site: str, device: str, zone: str) -> SeriesTags:
    tags = {"site": site, "device": device, "zone": zone}
    tagset = "".join(f",{k}={escape_key(v)}" for k, v in sorted(tags.items()) if v)
    return SeriesTags(escape_measurement(kind), tagset)


# quantity -> escaped field key, for keys JSON writes as they are (letters, digits, `_ . -`: every catalog, depth
# family and auxiliary name); quantities are few (catalog + configured depths)
_field_keys: dict[str, str] = {}
_PLAIN = re.compile(r"[A-Za-z0-9_.\-]+")
_COLON_TO_EQUALS = bytes.maketrans(b":", b"=")


def encode_readings(readings: Iterable[Reading], series: Mapping[str, SeriesTags]) -> tuple[bytes, int, int]:
    """Group readings by (device, timestamp) into lines: one field per quantity.

    Quality other than GOOD is stored as an integer field `<quantity>_q` (1 uncertain, 2 bad, 3 not ready); a
    non-finite value cannot be stored, so only its quality is (BAD, or NOT_READY when the device said so).
    Returns (bytes, lines, readings encoded).
    """
    # A poll or a message is a run of readings of one device at one time: the line is looked up once per run, not
    # once per reading (a reading of the same line further on, such as a derived value, still joins it).
    lines: dict[tuple[str, int], dict[str, float]] = {}  # each line's float fields, key -> value
    flags: dict[tuple[str, int], dict[str, str]] = {}  # its `_q` fields, written out (few: most readings are GOOD)
    fields: dict[str, float] | None = None
    line: tuple[str, int] = ("", 0)
    device: str | None = None  # the run's, None before the first reading
    ts = 0
    keys, isfinite, good = _field_keys, math.isfinite, Quality.GOOD
    plain = True  # every key of the batch is one JSON writes as it is
    n = 0
    for r in readings:
        if r.ts_ns != ts or r.device is not device:
            device, ts = r.device, r.ts_ns
            line = (device, ts)
            fields = lines.get(line)
            if fields is None and device in series:
                fields = lines[line] = {}
        if fields is None:
            continue  # a device with no series (not configured here): not stored
        key = keys.get(r.quantity)
        if key is None:
            key = escape_key(r.quantity)
            if _PLAIN.fullmatch(key):
                keys[r.quantity] = key
            else:
                plain = False
        # one field per key: the pipeline moves a different reading of a series at the same time by 1 ns, so a key
        # repeated here is the same reading delivered twice (a duplicate field in a line would be ambiguous)
        if isfinite(r.value):
            fields[key] = float(r.value)
            if r.quality is not good:
                flags.setdefault(line, {})[key + "_q"] = f"{key}_q={int(r.quality)}i"
        else:  # no value (NaN, a sentinel): only its quality, not ready (3) when the device said so, else bad
            q = Quality.NOT_READY if r.quality is Quality.NOT_READY else Quality.BAD
            flags.setdefault(line, {})[key + "_q"] = f"{key}_q={int(q)}i"
        n += 1
    if not lines:
        return b"", 0, n
    if plain:
        # Every line's float fields written by one orjson call, `{"k":v,...}` per line, turned into `k=v,...` by
        # byte operations: the shortest text that reads back as the same float, as repr() writes (bit-identical
        # round trips), in a tenth of repr's time per value, which was the biggest single cost of the line protocol.
        # Its exponents read the same in InfluxDB and VictoriaMetrics ("1e-7", where repr writes "1e-07"); the
        # values are finite, so no `null`; the keys hold none of `"\\:{}`, so the text changes only where meant.
        text = orjson.dumps(list(lines.values()))[2:-2].translate(_COLON_TO_EQUALS, b'"').split(b"},{")
        bodies = [b.decode() for b in text]
    else:  # a key JSON would escape (a test's, or a name from outside the catalog): written field by field
        bodies = [",".join([f"{k}={v!r}" for k, v in fs.items()]) for fs in lines.values()]
    out = []
    for (dev, t), body in zip(lines, bodies, strict=True):
        st = series[dev]
        qs = flags.get((dev, t)) if flags else None
        if qs:
            body = ",".join([body, *qs.values()]) if body else ",".join(qs.values())
        out.append(f"{st.measurement}{st.tagset} {body} {t}\n")
    return "".join(out).encode(), len(out), n
