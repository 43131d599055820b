"""What every driver's config shares: strict frozen models, the id pattern, a device entry and what devices claim."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from pydantic import BaseModel, ConfigDict

from drivers.timefmt import TimestampOverride

ID = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"


class DriverModel(BaseModel):
    """A config section: unknown keys are errors (a typo never passes silently), values never change after load."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)  # `.inf`, `.nan`: refused


class DeviceEntry(Protocol):
    """What a driver reads of one device entry of the site file (the site config's `Device`)."""

    @property
    def id(self) -> str: ...
    @property
    def key(self) -> str: ...  # the id the device uses for itself in topics, payloads and survey files
    @property
    def line(self) -> str | None: ...
    @property
    def unit_id(self) -> int | None: ...
    @property
    def broker(self) -> str | None: ...
    @property
    def topic(self) -> str | None: ...
    @property
    def timestamp(self) -> TimestampOverride | None: ...
    @property
    def timeout_s(self) -> float: ...
    @property
    def poll_interval_s(self) -> float: ...
    @property
    def expected_interval_s(self) -> float | None: ...


@dataclass
class Claims:
    """The site's lines and brokers, and what its devices have taken so far: a driver refuses a second device on
    one unit, key or topic filter, naming the device that has it."""

    lines: tuple[str, ...]  # ids in the order of the site file
    brokers: tuple[str, ...]
    units: dict[tuple[str, int], str] = field(default_factory=dict)  # (line, unit id) -> device id
    line_types: dict[str, str] = field(default_factory=dict)  # line id -> its `type`: the unit ids it takes
    # line id -> the line whose unit ids it shares: Modbus TCP lines to one host:port reach the same devices
    unit_scope: dict[str, str] = field(default_factory=dict)
    keys: dict[tuple[str, str], str] = field(default_factory=dict)  # (broker, device key) -> device id
    filters: dict[tuple[str, str], str] = field(default_factory=dict)  # (broker, topic filter) -> profile id
    survey_keys: dict[str, str] = field(default_factory=dict)  # a surveyor's point id -> device id
