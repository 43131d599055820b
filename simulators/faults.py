"""Fault modes a simulated device can be switched into at runtime, and the broken payloads they produce."""

from __future__ import annotations

import copy
import json
from enum import StrEnum
from typing import Any

from drivers.profile import ModbusProfile, MqttProfile


class FaultMode(StrEnum):
    NONE = "none"
    OFFLINE = "offline"  # Modbus: no answer (TCP alone on its line: listener closed); MQTT: no publishing
    FROZEN = "frozen"  # values stop changing (MQTT keeps publishing them with fresh timestamps)
    EXCEPTION = "exception"  # Modbus: every request answers exception 4, server device failure
    MALFORMED = "malformed"  # MQTT: invalid JSON, alternating with JSON holding a wrong-typed value


_ALLOWED = {
    "modbus": {FaultMode.NONE, FaultMode.OFFLINE, FaultMode.FROZEN, FaultMode.EXCEPTION},
    "mqtt": {FaultMode.NONE, FaultMode.OFFLINE, FaultMode.FROZEN, FaultMode.MALFORMED},
}


def parse_mode(mode: str, profile: ModbusProfile | MqttProfile) -> FaultMode:
    """The FaultMode named `mode`; ValueError if unknown or meaningless for the device's transport."""
    try:
        fm = FaultMode(mode)
    except ValueError:
        raise ValueError(f"unknown fault mode {mode!r}; known: {', '.join(FaultMode)}") from None
    if fm not in _ALLOWED[profile.transport]:
        raise ValueError(f"fault mode {fm} does not apply to a {profile.transport} device")
    return fm


def malformed_payload(profile: MqttProfile, good: dict[str, Any], count: int) -> bytes:
    """Even `count`: a truncated, unparseable message; odd: valid JSON whose first value is the string "abc"."""
    if count % 2 == 0:
        return json.dumps(good).encode()[:-7]
    bad = copy.deepcopy(good)
    pm = profile.payload
    if pm.fields:
        *parents, leaf = pm.fields[0].path.split(".")
        node: Any = bad
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        node[leaf] = "abc"
    elif pm.points:
        bad[pm.points.path][0][pm.points.value_key] = "abc"
    return json.dumps(bad).encode()
