"""Device models as data: register maps and payload maps loaded from drivers/profiles/*.yaml."""

from __future__ import annotations

from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from drivers.modbus.codec import WIDTH, DataType, Order
from gateway import quantities

PROFILE_DIR = Path(__file__).parent / "profiles"


class DeviceKind(StrEnum):
    """Device kinds; each is one InfluxDB measurement."""

    TOWER_CRANE = "tower_crane"
    EXCAVATION = "excavation"
    FORMWORK = "formwork"
    GAS = "gas"


class Table(StrEnum):
    """Modbus data tables and the read function code for each."""

    COIL = "coil"  # FC1
    DISCRETE = "discrete"  # FC2
    HOLDING = "holding"  # FC3
    INPUT = "input"  # FC4

    @property
    def function_code(self) -> int:
        return {"coil": 1, "discrete": 2, "holding": 3, "input": 4}[self.value]

    @property
    def is_bit(self) -> bool:
        return self in (Table.COIL, Table.DISCRETE)


class AddressBase(StrEnum):
    PDU = "pdu"  # 0-based address as sent on the wire; `table` required
    MODICON = "modicon"  # 1-based 5-digit notation: 00001 coil, 10001 discrete, 30001 input, 40001 holding


_Strict = ConfigDict(extra="forbid", frozen=True)


class _Base(BaseModel):
    model_config = _Strict


def _check_quantity(name: str) -> str:
    quantities.lookup(name)  # KeyError -> validation error naming the quantity
    return name


def _check_unit(quantity: str, unit: str | None) -> None:
    """The device's unit must convert to the catalog unit; found at load time, not on the first message."""
    target = quantities.lookup(quantity).unit
    if unit is None or target == "state":
        return
    try:
        quantities.converter(unit, target)
    except ValueError:
        raise ValueError(f"{quantity}: unit {unit!r} does not convert to the catalog unit {target!r}") from None


class RegisterPoint(_Base):
    """One quantity read from a register (or bit) of the device."""

    quantity: str
    address: int = Field(ge=0, le=65535)  # PDU 0..65535; Modicon 00001..49999
    table: Table | None = None
    type: DataType = DataType.UINT16
    order: Order | None = None
    bit: int | None = Field(default=None, ge=0, le=15)
    scale: float = 1.0
    offset: float = 0.0
    unit: str | None = None  # the device's unit; converted to the catalog unit at the edge

    @model_validator(mode="after")
    def _check(self) -> RegisterPoint:
        try:
            _check_quantity(self.quantity)
        except KeyError as err:
            raise ValueError(str(err.args[0])) from None
        _check_unit(self.quantity, self.unit)
        if self.type is DataType.BIT and self.bit is None:
            raise ValueError("type 'bit' needs 'bit' (0..15)")
        if self.type is not DataType.BIT and self.bit is not None:
            raise ValueError("'bit' is only valid with type 'bit'")
        return self


class ModbusProfile(_Base):
    id: str
    kind: DeviceKind
    title: str
    transport: Literal["modbus"]
    address_base: AddressBase
    order: Order = Order.ABCD  # default for multi-register values
    points: list[RegisterPoint] = Field(min_length=1)

    @model_validator(mode="after")
    def _resolve(self) -> ModbusProfile:
        seen: dict[tuple[Table, int], str] = {}
        names: set[str] = set()
        for i, p in enumerate(self.points):
            table, addr = resolve_address(self.address_base, p, i)
            if p.type is DataType.BOOL and not table.is_bit:
                raise ValueError(f"points[{i}] ({p.quantity}): type 'bool' needs table coil or discrete")
            if table.is_bit and p.type is not DataType.BOOL:
                raise ValueError(f"points[{i}] ({p.quantity}): coils/discrete inputs hold type 'bool'")
            if p.quantity in names:
                raise ValueError(f"points[{i}]: quantity {p.quantity!r} appears twice")
            names.add(p.quantity)
            for off in range(WIDTH[p.type]):
                key = (table, addr + off)
                if key in seen and p.type is not DataType.BIT:
                    raise ValueError(f"points[{i}] ({p.quantity}) overlaps {seen[key]} at {table} {addr + off}")
                if p.type is not DataType.BIT:
                    seen[key] = p.quantity
        return self

    def resolved(self) -> list[tuple[RegisterPoint, Table, int, Order]]:
        """(point, table, 0-based PDU address, order) for every point."""
        return [
            (p, *resolve_address(self.address_base, p, i), p.order or self.order) for i, p in enumerate(self.points)
        ]


def resolve_address(base: AddressBase, p: RegisterPoint, index: int) -> tuple[Table, int]:
    if base is AddressBase.PDU:
        if p.table is None:
            raise ValueError(f"points[{index}] ({p.quantity}): address_base 'pdu' needs 'table'")
        if p.address > 65535:
            raise ValueError(f"points[{index}] ({p.quantity}): PDU address {p.address} > 65535")
        return p.table, p.address
    prefix, rest = divmod(p.address, 10000)
    if rest == 0 or p.address > 49999:
        raise ValueError(f"points[{index}] ({p.quantity}): {p.address:05d} is not a Modicon address (00001..49999)")
    table = {0: Table.COIL, 1: Table.DISCRETE, 3: Table.INPUT, 4: Table.HOLDING}.get(prefix)
    if table is None:
        raise ValueError(f"points[{index}] ({p.quantity}): {p.address:05d} has no table (2xxxx is unused)")
    if p.table is not None and p.table is not table:
        raise ValueError(f"points[{index}] ({p.quantity}): {p.address:05d} is a {table} address, not {p.table}")
    return table, rest - 1


class PayloadField(_Base):
    """A value at a dotted path in a JSON payload (`data.settlement`, `channels.0.value`)."""

    path: str
    quantity: str
    unit: str | None = None
    scale: float = 1.0

    @model_validator(mode="after")
    def _check(self) -> PayloadField:
        try:
            _check_quantity(self.quantity)
        except KeyError as err:
            raise ValueError(str(err.args[0])) from None
        _check_unit(self.quantity, self.unit)
        return self


class PointArray(_Base):
    """An array of points inside the payload, each naming itself and (optionally) its unit."""

    path: str
    name_key: str
    value_key: str
    unit_key: str | None = None
    names: dict[str, str]  # device's point name -> catalog quantity

    @model_validator(mode="after")
    def _check(self) -> PointArray:
        for q in self.names.values():
            try:
                _check_quantity(q)
            except KeyError as err:
                raise ValueError(str(err.args[0])) from None
        return self


class DeviceKey(_Base):
    """Where the device's id is found: a topic level (0-based) or a payload path."""

    source: Literal["topic", "payload"]
    segment: int | None = Field(default=None, ge=0)
    path: str | None = None

    @model_validator(mode="after")
    def _check(self) -> DeviceKey:
        if self.source == "topic" and self.segment is None:
            raise ValueError("source 'topic' needs 'segment'")
        if self.source == "payload" and not self.path:
            raise ValueError("source 'payload' needs 'path'")
        return self


class TimestampFormat(StrEnum):
    EPOCH_S = "epoch_s"
    EPOCH_MS = "epoch_ms"
    ISO8601 = "iso8601"  # must carry its zone (Z or +08:00): a naive local time is rejected
    RECEIVE = "receive"  # the gateway's receive time


class TimestampSpec(_Base):
    path: str | None = None
    format: TimestampFormat = TimestampFormat.RECEIVE

    @model_validator(mode="after")
    def _check(self) -> TimestampSpec:
        if self.format is not TimestampFormat.RECEIVE and not self.path:
            raise ValueError(f"timestamp format {self.format} needs 'path'")
        return self


class BadWhen(_Base):
    """Mark every measured value of the message BAD when the flag at `path` is truthy (a detector fault bit);
    state quantities (the flags themselves) stay GOOD."""

    path: str


class PayloadMap(_Base):
    format: Literal["json"] = "json"
    device_key: DeviceKey
    timestamp: TimestampSpec = TimestampSpec()
    fields: list[PayloadField] = []
    points: PointArray | None = None
    bad_when: BadWhen | None = None

    @model_validator(mode="after")
    def _check(self) -> PayloadMap:
        if not self.fields and self.points is None:
            raise ValueError("a payload map needs 'fields' or 'points'")
        return self


class MqttProfile(_Base):
    id: str
    kind: DeviceKind
    title: str
    transport: Literal["mqtt"]
    payload: PayloadMap

    def quantity_names(self) -> list[str]:
        names = [f.quantity for f in self.payload.fields]
        if self.payload.points:
            names += list(self.payload.points.names.values())
        return names


Profile = Annotated[ModbusProfile | MqttProfile, Field(discriminator="transport")]


class _ProfileFile(_Base):
    profile: Profile


class ProfileError(ValueError):
    """A profile file that does not load; the message names the file and the field."""


def load_profile_file(path: Path) -> ModbusProfile | MqttProfile:
    from pydantic import ValidationError

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        return _ProfileFile.model_validate({"profile": data}).profile
    except ValidationError as err:
        lines = [f"{path}: invalid profile"]
        for e in err.errors():
            loc = ".".join(str(x) for x in e["loc"][2:])  # drop 'profile' and the union tag
            lines.append(f"  {loc or '(top)'}: {e['msg']}")
        raise ProfileError("\n".join(lines)) from None
    except yaml.YAMLError as err:
        raise ProfileError(f"{path}: not valid YAML: {err}") from None


@cache
def builtin_profiles() -> dict[str, ModbusProfile | MqttProfile]:
    out: dict[str, ModbusProfile | MqttProfile] = {}
    for f in sorted(PROFILE_DIR.glob("*.yaml")):
        p = load_profile_file(f)
        if p.id != f.stem:
            raise ProfileError(f"{f}: profile id {p.id!r} must equal the file name {f.stem!r}")
        out[p.id] = p
    return out
