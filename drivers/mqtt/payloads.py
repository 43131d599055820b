"""Payload decoding per profile: device key, device time, nested fields and arrays of points, units, quality."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from drivers.errors import ProtocolError
from drivers.mqtt.hj212 import parse_hj212
from drivers.payload_map import PayloadMap
from drivers.profile import MqttProfile
from drivers.quality import QualityMap, Sentinels
from drivers.timefmt import HIGH_NS, LOW_NS, TimeParser, TimestampFormat, TimestampSpec
from telemetry import quantities
from telemetry.reading import Quality, Reading, make_reading


def _split(path: str) -> tuple[str | int, ...]:
    return tuple(int(p) if p.isdigit() else p for p in path.split("."))


def _ts_paths(spec: TimestampSpec) -> list[tuple[str | int, ...]] | None:
    return [_split(p) for p in spec.path.split("+")] if spec.path else None


def _get(doc: Any, path: tuple[str | int, ...]) -> Any:
    cur = doc
    for key in path:
        if isinstance(key, int) and isinstance(cur, list):
            if key >= len(cur):
                return _MISSING
            cur = cur[key]
        elif isinstance(cur, dict):
            nxt = cur.get(key, _MISSING)
            if nxt is _MISSING and isinstance(key, int):  # a digit path segment names an object key "0" too
                nxt = cur.get(str(key), _MISSING)
            if nxt is _MISSING:
                return _MISSING
            cur = nxt
        else:
            return _MISSING
    return cur


_MISSING = object()

# orjson reads an integer beyond 64 bits as a float, where json keeps it exact: any run of 19 digits goes to json.
# Found as a run of 19 nines once every digit is a nine: 0.3 µs a message, where a regular expression took 1.5.
_NINES = bytes.maketrans(b"0123456789", b"9999999999")
_LONG_RUN = b"9" * 19
# orjson reads nesting to depth 1024, json to Python's recursion limit less the caller's stack (~990 at best): a
# payload that could nest deeper than this (a bracket each level) goes to json, which decides as it always did
_OPENERS = 512


def loads_json(payload: Any) -> Any:
    """`json.loads`, exactly, in a seventh of its time for the payloads devices send (orjson). What orjson refuses
    (NaN and Infinity literals, numbers beyond a double, a BOM, UTF-16, lone surrogates), long numbers and deep
    nesting go to json, which decides; tests/unit/test_json_loads.py holds the two to the same result on any input."""
    if (
        type(payload) is bytes
        and payload.count(b"[") + payload.count(b"{") < _OPENERS
        and _LONG_RUN not in payload.translate(_NINES)
    ):
        try:
            return orjson.loads(payload)
        except orjson.JSONDecodeError:
            pass
    return json.loads(payload)


@dataclass(frozen=True, slots=True)
class _Field:
    path: tuple[str | int, ...]
    quantity: str
    scale: float
    add: float
    convert: Callable[[float], float] | None
    state: bool = False  # a flag, not a measurement: never marked BAD by `bad_when`
    where: str = ""  # for error messages, built once rather than per reading
    status: tuple[str | int, ...] | None = None
    qmap: QualityMap | None = None
    bits_as: str | None = None
    bit: int | None = None
    # a path of one or two object keys (most fields), looked up inline by `readings`: (key, key or None); else None
    keys: tuple[str, str | None] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        p = self.path
        plain = 1 <= len(p) <= 2 and all(isinstance(k, str) for k in p)
        object.__setattr__(self, "keys", (p[0], p[1] if len(p) == 2 else None) if plain else None)


def _conv(quantity: str, unit: str | None, scale: float) -> tuple[float, float, Callable[[float], float] | None]:
    target = quantities.lookup(quantity).unit
    if unit is None or unit == target or target == "state":
        return scale, 0.0, None
    lin = quantities.linear_factor(unit, target)
    if lin is not None:
        return scale * lin[0], lin[1], None
    return scale, 0.0, quantities.converter(unit, target)


def _number(v: Any, where: str, strings: bool = False) -> float:
    # bool is an int in Python: accept it for flags, but reject strings such as "12.5" unless the profile says
    # the device quotes its numbers
    if isinstance(v, bool):
        return 1.0 if v else 0.0
    if isinstance(v, float):
        return v
    if isinstance(v, int):
        try:
            return float(v)
        except OverflowError:  # JSON integers are unbounded; past ~1.8e308 no float holds them
            raise ProtocolError(
                f"{where}: an integer of {v.bit_length()} bits is beyond the range of a number"
            ) from None
    if strings and isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            raise ProtocolError(f"{where}: {v!r:.40} is not a number") from None
    raise ProtocolError(f"{where}: expected a number, got {type(v).__name__} {v!r:.40}")


def _bits(v: Any, f: _Field) -> float:
    """A bit field: an integer, or a '0'/'1' string whose right-most character is bit 0 (云筑's `warning`)."""
    if f.bits_as == "binary_string":
        if not isinstance(v, str) or not v or v.strip("01"):
            raise ProtocolError(f"{f.where}: expected a string of 0 and 1, got {v!r:.40}")
        n = int(v, 2)
    else:
        if isinstance(v, str) and v.strip().isdigit():
            v = int(v)
        if isinstance(v, bool) or not isinstance(v, int):
            raise ProtocolError(f"{f.where}: expected an integer bit field, got {v!r:.40}")
        n = v
    return float((n >> f.bit) & 1 if f.bit is not None else n)


class PayloadDecoder:
    """Decodes one profile's payloads. Built once per profile; `decode` is the hot path."""

    def __init__(
        self,
        profile: MqttProfile,
        site_tz: str = "Asia/Shanghai",
        device_time: Mapping[str, TimestampSpec] | None = None,
    ) -> None:
        self.profile = profile
        m: PayloadMap = profile.payload
        self.map = m
        self._key_path = _split(m.device_key.path) if m.device_key.path else None
        self._key_segment = m.device_key.segment
        self._ts_path = _ts_paths(m.timestamp)
        self._time = TimeParser(m.timestamp, site_tz)
        self.has_heartbeats = m.heartbeat
        # a heartbeat holds its device's key and time at most: a message with any other key (a field renamed by a
        # firmware update) is not taken for one, so it is still dead-lettered rather than silently heard
        heads = [self._key_path, *(self._ts_path or [])]
        self._beat_keys = frozenset(str(p[0]) for p in heads if p)
        # an integer epoch at a key of the payload's top level (most devices' time): (key, ns per unit), read by
        # `timestamp_ns` without the general path's checks (a fourth of its time); a time out of range still goes
        # through them, and is refused there
        p, unit = self._ts_path, self._time.ns_per_unit
        self._ts_key: tuple[str, int] | None = None
        if unit is not None and p and len(p) == 1 and len(p[0]) == 1 and isinstance(key := p[0][0], str):
            self._ts_key = (key, unit)
        # devices whose clock differs from their model's (another zone or pattern): their own parser
        self._device_time = {
            dev: (TimeParser(spec, site_tz), _ts_paths(spec)) for dev, spec in (device_time or {}).items()
        }
        maps = profile.quality_maps
        self._fields = [
            _Field(
                _split(f.path),
                f.quantity,
                *_conv(f.quantity, f.unit, f.scale),
                state=quantities.lookup(f.quantity).unit == "state",
                where=f"field {f.path!r} ({f.quantity})",
                status=_split(f.status) if f.status else None,
                qmap=maps[f.quality] if f.quality else None,
                bits_as=f.bits_as,
                bit=f.bit,
            )
            for f in m.fields
        ]
        self._bad_path = _split(m.bad_when.path) if m.bad_when else None
        self._not_ready_path = _split(m.not_ready_when.path) if m.not_ready_when else None
        self._arr = m.points
        self._arr_path = _split(m.points.path) if m.points else None
        self._arr_map = maps[m.points.quality] if m.points and m.points.quality else None
        self._sentinels = Sentinels(dict(m.sentinels))
        self._strings = m.numeric_strings or m.format in ("hj212", "columns")
        self._unit_cache: dict[tuple[str, str | None], tuple[float, float, Callable[[float], float] | None]] = {}

    def parse(self, payload: bytes) -> Any:
        if self.map.format == "hj212":
            return parse_hj212(payload)
        if self.map.format == "columns":
            return self._columns(payload)
        try:
            return loads_json(payload)
        # ValueError also covers bad UTF-8 and integers over Python's 4300-digit limit; RecursionError deep nesting
        except (ValueError, RecursionError) as err:
            raise ProtocolError(f"payload is not JSON: {err}") from None

    def _columns(self, payload: bytes) -> dict[str, str]:
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError("payload is not UTF-8 text") from None
        data = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith(self.map.comment)]
        if len(data) != 1:
            raise ProtocolError(
                f"expected one line of values, got {len(data)} (comments start with {self.map.comment!r})"
            )
        cols = data[0].split(self.map.separator)
        return {str(i): c.strip() for i, c in enumerate(cols)}

    def device_key(self, topic: str, doc: Any) -> str:
        if self._key_segment is not None:
            parts = topic.split("/")
            if self._key_segment >= len(parts):
                raise ProtocolError(f"topic {topic!r} has no level {self._key_segment} for the device id")
            return parts[self._key_segment]
        assert self._key_path is not None
        key = _get(doc, self._key_path)
        if key is _MISSING or not isinstance(key, (str, int)) or isinstance(key, bool):
            raise ProtocolError(f"payload has no device id at {self.map.device_key.path!r}")
        return str(key)

    @property
    def receive_time(self) -> bool:
        """True when the profile stamps with the gateway's receive time (no device clock)."""
        return self._time.format is TimestampFormat.RECEIVE

    def timestamp_ns(self, doc: Any, receive_ns: int, device: str | None = None) -> int:
        fast = self._ts_key
        if fast is not None and type(doc) is dict and (device is None or device not in self._device_time):
            v = doc.get(fast[0])
            if type(v) is int:
                ns = v * fast[1]
                if LOW_NS <= ns <= HIGH_NS:
                    return ns
        parser, path = self._time, self._ts_path
        if device is not None and device in self._device_time:
            parser, path = self._device_time[device]
        if path is None or parser.format is TimestampFormat.RECEIVE:
            return receive_ns
        if len(path) == 1:
            v = _get(doc, path[0])
            if v is _MISSING:
                raise ProtocolError(f"{parser.where} is missing")
        else:  # a date and a time in separate fields ("Date+Time"): joined with a space
            parts = [_get(doc, p) for p in path]
            if any(p is _MISSING or not isinstance(p, str) for p in parts):
                raise ProtocolError(f"{parser.where}: a part is missing or not a string")
            v = " ".join(parts)
        return parser.parse(v)

    def heartbeat(self, doc: Any) -> bool:
        """The message holds its device's key and time at most (云筑's may leave the time out): for a profile with
        heartbeats (`has_heartbeats`, PayloadMap.heartbeat), its device's heartbeat."""
        return type(doc) is dict and doc.keys() <= self._beat_keys

    def none_of_fields(self, device: str) -> str:
        """Why a message that gave no reading and no error is a dead letter (the session's and the test bench's
        words, the same)."""
        return f"device {device}: the payload holds none of the fields profile {self.profile.id} maps"

    def _flag(self, doc: Any, path: tuple[str | int, ...] | None) -> bool:
        if path is None:
            return False
        flag = _get(doc, path)
        return flag is not _MISSING and flag not in (0, False, None, "0", "")

    def readings(self, device: str, doc: Any, ts_ns: int) -> tuple[list[Reading], list[ProtocolError]]:
        """Readings of one message; a bad field is an error of its own and never loses the good ones."""
        out: list[Reading] = []
        errors: list[ProtocolError] = []
        quality = Quality.GOOD
        if self._flag(doc, self._bad_path):
            quality = Quality.BAD
        elif self._flag(doc, self._not_ready_path):
            quality = Quality.NOT_READY
        sentinels = self._sentinels if self._sentinels else None
        plain = type(doc) is dict
        # held in locals: every field of every message passes here (an enum member looked up on its class is a
        # descriptor call on Python 3.11, ~70 ns)
        good, bad, isfinite = Quality.GOOD, Quality.BAD, math.isfinite
        for f in self._fields:
            keys = f.keys
            if keys is not None and plain:  # what _get does for such a path, without its loop and checks
                v = doc.get(keys[0], _MISSING)
                if keys[1] is not None and v is not _MISSING:
                    v = v.get(keys[1], _MISSING) if isinstance(v, dict) else _MISSING
            else:
                v = _get(doc, f.path)
            if v is _MISSING:
                continue  # devices omit fields they do not measure right now; that is not an error
            q = good if f.state else quality
            if f.qmap is not None and f.status is not None and not f.state:
                code = _get(doc, f.status)
                if code is not _MISSING and code is not None:  # no status sent: the device said nothing against it
                    q = q.worst(f.qmap.quality_of(code))
            if f.bits_as is not None:
                try:
                    x = _bits(v, f)
                except ProtocolError as err:
                    errors.append(err)
                    continue
            elif type(v) is float:  # the common case, without _number's checks
                x = v
            else:
                if sentinels is not None:
                    sq = sentinels.match(v)
                    if sq is not None:  # "--" while warming up, "ERR", -9999: kept as "no value" with its quality
                        out.append(Reading(device, f.quantity, math.nan, ts_ns, sq.worst(q)))
                        continue
                try:
                    x = _number(v, f.where, self._strings)
                except ProtocolError as err:
                    errors.append(err)
                    continue
            if sentinels is not None and x in sentinels.numbers:
                out.append(Reading(device, f.quantity, math.nan, ts_ns, sentinels.numbers[x].worst(q)))
                continue
            x = x * f.scale + f.add
            if f.convert is not None and isfinite(x):  # tan(inf) raises; a non-finite value stays BAD
                x = f.convert(x)
            out.append(make_reading(device, f.quantity, x, ts_ns, q if isfinite(x) else bad))
        if self._arr is not None and self._arr_path is not None:
            arr = _get(doc, self._arr_path)
            if arr is _MISSING or not isinstance(arr, list):
                errors.append(ProtocolError(f"{self._arr.path!r}: expected an array of points"))
            else:
                for i, item in enumerate(arr):
                    where = f"{self._arr.path}[{i}]"
                    try:
                        out.append(self._point(device, item, where, ts_ns, quality))
                    except ProtocolError as err:
                        errors.append(err)
        return out, errors

    def _point(self, device: str, item: Any, where: str, ts_ns: int, quality: Quality) -> Reading:
        arr = self._arr
        assert arr is not None
        if not isinstance(item, dict):
            raise ProtocolError(f"{where}: expected an object")
        name = item.get(arr.name_key)
        quantity = arr.names.get(str(name))
        if quantity is None:
            raise ProtocolError(f"{where}: unknown point name {name!r}; the profile maps {sorted(arr.names)}")
        state = quantities.lookup(quantity).unit == "state"
        if state:
            quality = Quality.GOOD
        elif self._arr_map is not None and arr.status_key is not None and item.get(arr.status_key) is not None:
            # the channel's own status: a faulted channel (st: 2) is BAD whatever its value says
            quality = quality.worst(self._arr_map.quality_of(item[arr.status_key]))
        raw = item.get(arr.value_key, _MISSING)
        if raw is _MISSING:
            raise ProtocolError(f"{where}.{arr.value_key} ({quantity}): missing")
        sq = self._sentinels.match(raw) if self._sentinels else None
        if sq is not None:
            return Reading(device, quantity, math.nan, ts_ns, sq.worst(quality))
        x = _number(raw, f"{where}.{arr.value_key} ({quantity})", self._strings)
        unit = item.get(arr.unit_key) if arr.unit_key else None
        if unit is not None and not isinstance(unit, str):
            raise ProtocolError(f"{where}.{arr.unit_key}: expected a unit string, got {unit!r:.40}")
        key = (quantity, unit)
        conv = self._unit_cache.get(key)
        if conv is None:
            try:
                conv = _conv(quantity, unit, 1.0)
            except ValueError as err:
                raise ProtocolError(f"{where}: unit {unit!r} for {quantity}: {err}") from None
            self._unit_cache[key] = conv
        x = x * conv[0] + conv[1]
        if conv[2] is not None and math.isfinite(x):
            x = conv[2](x)
        return make_reading(device, quantity, x, ts_ns, quality if math.isfinite(x) else Quality.BAD)
