"""The drivers a site can use, by their profiles' transport: each one's profile model and its check of a device."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from drivers import survey_config as survey
from drivers.config import Claims, DeviceEntry
from drivers.modbus import config as modbus
from drivers.mqtt import config as mqtt
from drivers.profile import AnyProfile, ModbusProfile, MqttProfile, SurveyProfile


@dataclass(frozen=True, slots=True)
class Driver:
    """One way readings come in."""

    transport: str  # a profile's `transport`
    profile: type[ModbusProfile | MqttProfile | SurveyProfile]
    check_device: Callable[[str, DeviceEntry, AnyProfile, Claims], None]  # raises ValueError naming `at`
    late_data: bool  # readings routinely arrive long after they were measured (a survey brought in days later)


def _modbus(at: str, d: DeviceEntry, prof: AnyProfile, claims: Claims) -> None:
    modbus.check_device(at, d, claims)


def _mqtt(at: str, d: DeviceEntry, prof: AnyProfile, claims: Claims) -> None:
    assert isinstance(prof, MqttProfile)
    mqtt.check_device(at, d, prof, claims)


def _survey(at: str, d: DeviceEntry, prof: AnyProfile, claims: Claims) -> None:
    survey.check_device(at, d, claims)


DRIVERS: dict[str, Driver] = {
    d.transport: d
    for d in (
        Driver("modbus", ModbusProfile, _modbus, late_data=False),
        Driver("mqtt", MqttProfile, _mqtt, late_data=False),
        Driver("survey", SurveyProfile, _survey, late_data=True),
    )
}


def driver_of(prof: AnyProfile) -> Driver:
    """The driver that reads devices of this profile."""
    return DRIVERS[prof.transport]
