"""Each device's settings against its profile: the fields of its kind, and a clock of its own to limit."""

from __future__ import annotations

from drivers.profile import AnyProfile, ModbusProfile, MqttProfile
from drivers.timefmt import TimestampFormat
from gateway.config.sections import Device
from telemetry.kinds import DeviceKind

# fields that mean something for one kind of device only: on another they were accepted and did nothing
KIND_FIELDS: dict[str, DeviceKind] = {
    "warning_values": DeviceKind.EXCAVATION,  # the exc.* rules' 预警值
    "excavation_depth_m": DeviceKind.EXCAVATION,
    "load_chart": DeviceKind.TOWER_CRANE,  # tc.load_ratio, the simulators, the console's jib
    "wind_limit_ms": DeviceKind.TOWER_CRANE,  # tc.wind
    "jib_length_m": DeviceKind.TOWER_CRANE,
}


# a polled device's settings: a device that publishes or is surveyed delivers when it does (expected_interval_s)
POLLED_ONLY = ("poll_interval_s", "timeout_s", "retries")


def check_device_fields(at: str, d: Device, prof: AnyProfile) -> None:
    """Refuse a setting the device's profile makes meaningless, naming it under `at` (its `devices[i] (id)`)."""
    for name, kind in KIND_FIELDS.items():
        if getattr(d, name) and prof.kind is not kind:
            raise ValueError(f"{at}.{name}: for {kind} devices only; profile {prof.id} is of kind {prof.kind}")
    if not isinstance(prof, ModbusProfile):
        how = "publishes over MQTT" if isinstance(prof, MqttProfile) else "is surveyed"
        for name in POLLED_ONLY:
            if name in d.model_fields_set:
                raise ValueError(
                    f"{at}.{name}: for polled (Modbus) devices only; a {prof.id} device {how}, and "
                    "expected_interval_s says how often"
                )
    elif d.match is not None:
        raise ValueError(
            f"{at}.match: for devices that name themselves in a topic, payload or survey file; a Modbus device is "
            "its line and unit_id"
        )
    stamped = gateway_stamped(prof, d) if d.device_clock is not None else None
    if stamped:
        raise ValueError(f"{at}.device_clock: {stamped}; the device has no clock here to limit")


def gateway_stamped(prof: AnyProfile, d: Device) -> str | None:
    """Why the device's readings carry the gateway's time, not its own clock's; None when they carry its own."""
    if isinstance(prof, ModbusProfile) and prof.clock is None:
        return f"profile {prof.id} has no register clock: each poll is stamped with the gateway's time"
    if isinstance(prof, MqttProfile):
        spec = d.timestamp.apply(prof.payload.timestamp) if d.timestamp else prof.payload.timestamp
        if spec.format is TimestampFormat.RECEIVE:
            return "its timestamp format is receive: each message is stamped with the gateway's time"
    return None
