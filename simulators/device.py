"""One simulated device: its model, pinned values, fault mode, and what it currently serves."""

from __future__ import annotations

import time
from typing import Any

from drivers.profile import ModbusProfile, MqttProfile
from gateway.config import Device
from simulators import payloads, registers
from simulators.faults import FaultMode
from simulators.signals import Model, Values


def quantities_of(profile: ModbusProfile | MqttProfile) -> list[str]:
    if isinstance(profile, ModbusProfile):
        return [p.quantity for p in profile.points]
    return profile.quantity_names()


class DeviceSim:
    """Model values overridden by pins, rendered into a register image (Modbus) or payload values (MQTT)."""

    def __init__(self, device: Device, profile: ModbusProfile | MqttProfile, model: Model, tz: str) -> None:
        self.device = device
        self.profile = profile
        self.model = model
        self.tz = tz
        self.fault = FaultMode.NONE
        self.pins: Values = {}
        self.quantities = quantities_of(profile)
        self._model_values: Values = {}
        self.values: Values = {}
        self.image: registers.Image = {}
        self.render()

    @property
    def id(self) -> str:
        return self.device.id

    def update(self, model_values: Values) -> None:
        """New model values; ignored while frozen, so the device keeps serving what it served."""
        if self.fault is FaultMode.FROZEN:
            return
        self._model_values = model_values
        self.render()

    def render(self) -> None:
        self.values = {q: self._model_values.get(q, 0.0) for q in self.quantities}
        self.values.update(self.pins)
        if isinstance(self.profile, ModbusProfile):
            self.image = registers.build_register_image(self.profile, self.values)

    def pin(self, values: dict[str, float]) -> None:
        unknown = sorted(set(values) - set(self.quantities))
        if unknown:
            raise KeyError(f"{self.id} has no quantity {', '.join(unknown)}; it has {', '.join(self.quantities)}")
        self.pins.update({q: float(v) for q, v in values.items()})
        self.render()  # pins apply at once, even while frozen

    def release(self) -> None:
        self.pins.clear()
        self.render()

    def payload(self, ts: float | None = None) -> dict[str, Any]:
        """The JSON object an MQTT device publishes now."""
        if not isinstance(self.profile, MqttProfile):
            raise TypeError(f"{self.id} is a Modbus device; it has no payload")
        when = time.time() if ts is None else ts
        return payloads.build_payload(self.profile, self.device, self.values, when, self.tz)

    def current(self) -> Values:
        """Canonical values as served, i.e. after quantisation to registers or to the payload's decimals."""
        if isinstance(self.profile, ModbusProfile):
            return registers.decode(self.profile, self.image)
        return payloads.decode_payload(self.profile, self.payload(0.0))
