"""JSON payload decoding per profile: device key, timestamp, nested fields and arrays of points, units."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from drivers.errors import ProtocolError
from drivers.profile import MqttProfile, PayloadMap, TimestampFormat
from gateway import quantities
from gateway.model import Quality, Reading


def _split(path: str) -> tuple[str | int, ...]:
    return tuple(int(p) if p.isdigit() else p for p in path.split("."))


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


@dataclass(frozen=True, slots=True)
class _Field:
    path: tuple[str | int, ...]
    quantity: str
    scale: float
    add: float
    convert: Callable[[float], float] | None
    state: bool = False  # a flag, not a measurement: never marked BAD by `bad_when`
    where: str = ""  # for error messages, built once rather than per reading


def _conv(quantity: str, unit: str | None, scale: float) -> tuple[float, float, Callable[[float], float] | None]:
    target = quantities.lookup(quantity).unit
    if unit is None or unit == target or target == "state":
        return scale, 0.0, None
    lin = quantities.linear_factor(unit, target)
    if lin is not None:
        return scale * lin[0], lin[1], None
    return scale, 0.0, quantities.converter(unit, target)


def _number(v: Any, where: str) -> float:
    # bool is an int in Python: accept it for flags, but reject strings such as "12.5" explicitly
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
    raise ProtocolError(f"{where}: expected a number, got {type(v).__name__} {v!r:.40}")


class PayloadDecoder:
    """Decodes one profile's payloads. Built once per profile; `decode` is the hot path."""

    def __init__(self, profile: MqttProfile) -> None:
        self.profile = profile
        m: PayloadMap = profile.payload
        self.map = m
        self._key_path = _split(m.device_key.path) if m.device_key.path else None
        self._key_segment = m.device_key.segment
        self._ts_path = _split(m.timestamp.path) if m.timestamp.path else None
        self._ts_format = m.timestamp.format
        self._fields = [
            _Field(
                _split(f.path),
                f.quantity,
                *_conv(f.quantity, f.unit, f.scale),
                state=quantities.lookup(f.quantity).unit == "state",
                where=f"field {f.path!r} ({f.quantity})",
            )
            for f in m.fields
        ]
        self._bad_path = _split(m.bad_when.path) if m.bad_when else None
        self._arr = m.points
        self._arr_path = _split(m.points.path) if m.points else None
        self._unit_cache: dict[tuple[str, str | None], tuple[float, float, Callable[[float], float] | None]] = {}

    def parse(self, payload: bytes) -> Any:
        try:
            return json.loads(payload)
        # ValueError also covers bad UTF-8 and integers over Python's 4300-digit limit; RecursionError deep nesting
        except (ValueError, RecursionError) as err:
            raise ProtocolError(f"payload is not JSON: {err}") from None

    def device_key(self, topic: str, doc: Any) -> str:
        if self._key_segment is not None:
            parts = topic.split("/")
            if self._key_segment >= len(parts):
                raise ProtocolError(f"topic {topic!r} has no level {self._key_segment} for the device id")
            return parts[self._key_segment]
        assert self._key_path is not None
        key = _get(doc, self._key_path)
        if key is _MISSING or not isinstance(key, (str, int)):
            raise ProtocolError(f"payload has no device id at {self.map.device_key.path!r}")
        return str(key)

    def timestamp_ns(self, doc: Any, receive_ns: int) -> int:
        if self._ts_path is None or self._ts_format is TimestampFormat.RECEIVE:
            return receive_ns
        v = _get(doc, self._ts_path)
        where = f"timestamp {self.map.timestamp.path!r}"
        if v is _MISSING:
            raise ProtocolError(f"{where} is missing")
        if self._ts_format is TimestampFormat.ISO8601:
            if not isinstance(v, str):
                raise ProtocolError(f"{where}: expected an ISO 8601 string, got {v!r:.40}")
            try:
                dt = datetime.fromisoformat(v)
            except ValueError:
                raise ProtocolError(f"{where}: not ISO 8601: {v!r:.40}") from None
            if dt.tzinfo is None:
                raise ProtocolError(f"{where}: {v!r} has no zone (add Z or +08:00)")
            ns = int(dt.timestamp()) * 1_000_000_000 + dt.microsecond * 1000
        else:
            n = _number(v, where)
            # integers exactly; floats to the microsecond (a float ns value would lose its last digits)
            if isinstance(v, int):
                ns = v * (1_000_000_000 if self._ts_format is TimestampFormat.EPOCH_S else 1_000_000)
            else:
                us = n * (1e6 if self._ts_format is TimestampFormat.EPOCH_S else 1e3)
                # NaN / Infinity literals (json.loads accepts them) and 1e308 cannot be rounded: out of range
                ns = round(us) * 1000 if math.isfinite(us) else 0
        # a timestamp in the wrong unit is a classic DTU misconfiguration: refuse rather than store year 50000
        # (ISO 8601 too: year 9999 does not fit InfluxDB's int64 nanoseconds)
        if not 946_684_800e9 <= ns <= 4_102_444_800e9:
            raise ProtocolError(f"{where}: {v!r} is not a plausible {self._ts_format.value} time (2000..2100)")
        return int(ns)

    def readings(self, device: str, doc: Any, ts_ns: int) -> tuple[list[Reading], list[ProtocolError]]:
        """Readings of one message; a bad field is an error of its own and never loses the good ones."""
        out: list[Reading] = []
        errors: list[ProtocolError] = []
        quality = Quality.GOOD
        if self._bad_path is not None:
            flag = _get(doc, self._bad_path)
            if flag is not _MISSING and flag not in (0, False, None, "0"):
                quality = Quality.BAD
        for f in self._fields:
            v = _get(doc, f.path)
            if v is _MISSING:
                continue  # devices omit fields they do not measure right now; that is not an error
            if type(v) is float:  # the common case, without _number's checks
                x = v
            else:
                try:
                    x = _number(v, f.where)
                except ProtocolError as err:
                    errors.append(err)
                    continue
            x = x * f.scale + f.add
            if f.convert is not None and math.isfinite(x):  # tan(inf) raises; a non-finite value stays BAD
                x = f.convert(x)
            q = Quality.GOOD if f.state else quality
            out.append(Reading(device, f.quantity, x, ts_ns, q if math.isfinite(x) else Quality.BAD))
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
        assert self._arr is not None
        if not isinstance(item, dict):
            raise ProtocolError(f"{where}: expected an object")
        name = item.get(self._arr.name_key)
        quantity = self._arr.names.get(str(name))
        if quantity is None:
            raise ProtocolError(f"{where}: unknown point name {name!r}; the profile maps {sorted(self._arr.names)}")
        x = _number(item.get(self._arr.value_key), f"{where}.{self._arr.value_key} ({quantity})")
        unit = item.get(self._arr.unit_key) if self._arr.unit_key else None
        if unit is not None and not isinstance(unit, str):
            raise ProtocolError(f"{where}.{self._arr.unit_key}: expected a unit string, got {unit!r:.40}")
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
        if quantities.lookup(quantity).unit == "state":
            quality = Quality.GOOD
        return Reading(device, quantity, x, ts_ns, quality if math.isfinite(x) else Quality.BAD)
