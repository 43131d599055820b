"""MQTT JSON payloads built from the profile's payload map (and decoded back, for `current()` and self-checks)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from drivers.profile import MqttProfile, TimestampFormat
from gateway.config import Device
from simulators.registers import from_device_unit, to_device_unit
from telemetry import quantities

_DIGITS = 4  # decimals a device prints; 1e-4 deg is 0.0017 permille


def topic_for(device: Device, profile: MqttProfile) -> str:
    """The device's publish topic: its topic filter with the wildcards replaced by its key."""
    levels = (device.topic or "").split("/")
    return "/".join(device.key if lv in ("+", "#") else lv for lv in levels)


def _set(obj: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    for part in parents:
        obj = obj.setdefault(part, {})
    obj[leaf] = value


def _get(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = obj[int(part)] if isinstance(obj, list) else obj[part]
    return obj


def _device_value(quantity: str, unit: str | None, scale: float, canonical: float) -> float | int:
    if quantities.lookup(quantity).unit == "state":
        return int(canonical >= 0.5)
    return round(to_device_unit(quantity, unit, canonical) / scale, _DIGITS)


def timestamp(fmt: TimestampFormat, ts: float, tz: str) -> float | int | str:
    if fmt is TimestampFormat.EPOCH_MS:
        return int(ts * 1000)
    if fmt is TimestampFormat.EPOCH_S:
        return int(ts)
    return datetime.fromtimestamp(ts, ZoneInfo(tz)).isoformat(timespec="milliseconds")


def build_payload(profile: MqttProfile, device: Device, values: dict[str, float], ts: float, tz: str) -> dict[str, Any]:
    """The JSON object the device publishes for `values` (canonical units) at epoch `ts`."""
    pm = profile.payload
    out: dict[str, Any] = {}
    if pm.device_key.source == "payload" and pm.device_key.path:
        _set(out, pm.device_key.path, device.key)
    if pm.timestamp.format is not TimestampFormat.RECEIVE and pm.timestamp.path:
        _set(out, pm.timestamp.path, timestamp(pm.timestamp.format, ts, tz))
    if pm.points:
        pa = pm.points
        entries = []
        for name, q in pa.names.items():
            # each reading carries the catalog unit, so the gateway converts nothing
            entry: dict[str, Any] = {pa.name_key: name, pa.value_key: _device_value(q, None, 1.0, values.get(q, 0.0))}
            if pa.unit_key:
                entry[pa.unit_key] = quantities.lookup(q).unit
            entries.append(entry)
        _set(out, pa.path, entries)
    for f in pm.fields:
        _set(out, f.path, _device_value(f.quantity, f.unit, f.scale, values.get(f.quantity, 0.0)))
    return out


def decode_payload(profile: MqttProfile, payload: dict[str, Any]) -> dict[str, float]:
    """Canonical values in a payload, converted the way the gateway does (scale, then unit)."""
    pm = profile.payload
    out: dict[str, float] = {}
    if pm.points:
        pa = pm.points
        for entry in _get(payload, pa.path):
            q = pa.names[entry[pa.name_key]]
            unit = entry.get(pa.unit_key) if pa.unit_key else None
            out[q] = from_device_unit(q, unit, float(entry[pa.value_key]))
    for f in pm.fields:
        out[f.quantity] = from_device_unit(f.quantity, f.unit, float(_get(payload, f.path)) * f.scale)
    return out
