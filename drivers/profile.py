"""Device models as data: register maps and payload maps loaded from drivers/profiles/*.yaml."""

from __future__ import annotations

from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from drivers.payload_map import PayloadMap
from drivers.quality import QualityMap, QualityName, sentinel_table
from drivers.registers import WIDTH, DataType, Order, sentinel_value
from drivers.timefmt import RegisterClock, TimestampFormat, TimestampSpec
from telemetry import quantities, yamltext
from telemetry.kinds import DeviceKind
from telemetry.yamlnum import Float, Int, Scale

__all__ = ["TimestampFormat", "TimestampSpec"]  # re-exported: profiles and simulators name them from here

PROFILE_DIR = Path(__file__).parent / "profiles"


class Table(StrEnum):
    """Modbus data tables and the read function code for each."""

    COIL = "coil"  # FC1
    DISCRETE = "discrete"  # FC2
    HOLDING = "holding"  # FC3
    INPUT = "input"  # FC4

    @property
    def function_code(self) -> int:
        return _FUNCTION_CODE[self]

    @property
    def is_bit(self) -> bool:
        return self in _BIT_TABLES


# (looked up per request and per block: a dict built per call and the members looked up on the class were not free)
_FUNCTION_CODE = {Table.COIL: 1, Table.DISCRETE: 2, Table.HOLDING: 3, Table.INPUT: 4}
_BIT_TABLES = frozenset({Table.COIL, Table.DISCRETE})


class AddressBase(StrEnum):
    PDU = "pdu"  # 0-based address as sent on the wire; `table` required
    ONE_BASED = "one_based"  # register numbers from 1 (manuals that say "register 1"); wire address = n - 1
    MODICON = "modicon"  # 1-based 5-digit notation: 00001 coil, 10001 discrete, 30001 input, 40001 holding


_Strict = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)  # `.inf`, `.nan`: refused


class _Base(BaseModel):
    model_config = _Strict


class AuxQuantity(_Base):
    """A quantity this device model reports beyond the catalog (uptime, counters, battery, RSSI, raw status words,
    firmware version), stored in InfluxDB beside the catalog quantities under its own name."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,47}$")
    unit: str = Field(min_length=1, max_length=16)  # as stored: 's', '%', 'dBm', 'count', 'raw' ...
    low: Float = -1e15
    high: Float = 1e15
    title_zh: str = ""
    title_en: str = ""
    # a counter that wraps (uint32 uptime): its plausible range is 0 .. wrap - 1 and a decrease is a wrap, not a fault
    counter_wrap: Int | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _check(self) -> AuxQuantity:
        if self.name.endswith("_q") or self.name == "up":
            raise ValueError(f"{self.name!r} is reserved (quality fields end in _q; `up` is liveness)")
        if self.low > self.high:
            raise ValueError("low must not exceed high")
        return self

    def quantity(self) -> quantities.Quantity:
        low, high = (0.0, float(self.counter_wrap - 1)) if self.counter_wrap else (self.low, self.high)
        return quantities.Quantity(
            self.name, self.unit, low, high, self.title_zh or self.name, self.title_en or self.name
        )


class _Quantities:
    """The catalog plus one profile's auxiliary quantities, for checks while the profile loads."""

    def __init__(self, aux: list[AuxQuantity]) -> None:
        self.aux = {a.name: a.quantity() for a in aux}

    def lookup(self, name: str) -> quantities.Quantity:
        if name in self.aux:
            return self.aux[name]
        return quantities.lookup(name)  # KeyError names the unknown quantity

    def check(self, where: str, quantity: str, unit: str | None) -> None:
        """The quantity exists and the device's unit converts to its unit; found at load time, not per message."""
        try:
            target = self.lookup(quantity).unit
        except KeyError as err:
            raise ValueError(f"{where}: {err.args[0]} (or declare it under 'auxiliary')") from None
        if unit is None or target == "state" or unit == target:
            return
        if quantity in self.aux:
            raise ValueError(f"{where}: unit {unit!r} differs from the auxiliary quantity's unit {target!r}")
        try:
            quantities.converter(unit, target)
        except ValueError:
            raise ValueError(
                f"{where}: {quantity}: unit {unit!r} does not convert to the catalog unit {target!r}"
            ) from None


def _check_maps(where: str, name: str | None, maps: dict[str, QualityMap]) -> None:
    if name is not None and name not in maps:
        known = ", ".join(maps) or "none"
        raise ValueError(f"{where}: quality map {name!r} is not defined under quality_maps ({known})")


class RegisterPoint(_Base):
    """One quantity read from a register (or bit) of the device."""

    quantity: str
    address: Int = Field(ge=0, le=65536)  # PDU 0..65535, one-based 1..65536 (_check_end); Modicon 00001..49999
    table: Table | None = None
    type: DataType = DataType.UINT16
    order: Order | None = None
    bit: Int | None = Field(default=None, ge=0, le=15)
    bit_count: Int = Field(default=1, ge=1, le=16)  # type bit: a field of this many bits from `bit` up (a state enum)
    scale: Scale = 1.0
    offset: Float = 0.0
    unit: str | None = None  # the device's unit; converted to the catalog unit at the edge
    # raw values (before scale) that mean "no value": {0x7FFF: bad, 0xFFFF: bad, -32768: not_ready}
    invalid: dict[str, QualityName] = {}
    # quality from another point of the same device (a per-channel status register or bit) through a quality map
    status: str | None = None
    quality: str | None = None

    _invalid = field_validator("invalid", mode="before")(lambda cls, v: sentinel_table(v))

    @model_validator(mode="after")
    def _check(self) -> RegisterPoint:
        if (self.status is None) != (self.quality is None):
            raise ValueError("'status' (the status point's quantity) and 'quality' (a quality map) go together")
        if self.type is DataType.BIT and self.bit is None:
            raise ValueError("type 'bit' needs 'bit' (0..15)")
        if self.type is not DataType.BIT and self.bit is not None:
            raise ValueError("'bit' is only valid with type 'bit'")
        if self.bit_count > 1 and (self.type is not DataType.BIT or (self.bit or 0) + self.bit_count > 16):
            raise ValueError("'bit_count' takes type 'bit' and must end within the register (bit + bit_count <= 16)")
        return self


class _ProfileHead(_Base):
    """What every profile carries whatever its transport."""

    id: str
    kind: DeviceKind
    title: str
    sources: list[str] = []  # where the map comes from (manual, open-source driver), for the reader
    auxiliary: list[AuxQuantity] = []
    quality_maps: dict[str, QualityMap] = {}


class ModbusProfile(_ProfileHead):
    transport: Literal["modbus"]
    address_base: AddressBase
    order: Order = Order.ABCD  # default for multi-register values
    clock: RegisterClock | None = None  # the device's own clock in registers: readings carry its time
    points: list[RegisterPoint] = Field(min_length=1)

    @model_validator(mode="after")
    def _resolve(self) -> ModbusProfile:
        seen: dict[tuple[Table, int], str] = {}
        floats: dict[tuple[Table, int], RegisterPoint] = {}  # the registers of float values (a bit there is refused)
        bits: list[tuple[int, RegisterPoint, tuple[Table, int]]] = []
        names: set[str] = set()
        qs = _Quantities(self.auxiliary)
        for i, p in enumerate(self.points):
            where = f"points[{i}] ({p.quantity})"
            qs.check(where, p.quantity, p.unit)
            _check_maps(where, p.quality, self.quality_maps)
            for k in p.invalid:
                try:
                    raw = sentinel_value(k, p.type)
                except ValueError as err:
                    raise ValueError(f"{where}.invalid: {k!r}: {err}") from None
                if p.type is DataType.BOOL:  # (never compared: a coil is 0 or 1, both of them values)
                    raise ValueError(f"{where}.invalid: a coil or discrete input has no 'no value' sentinel")
                if p.type is DataType.BIT and not 0 <= raw < 1 << (p.bit_count or 1):  # (one that can never match)
                    raise ValueError(f"{where}.invalid: {k!r}: does not fit {p.bit_count or 1} bit(s)")
            table, addr = resolve_address(self.address_base, p, i)
            _check_end(where, table, addr, WIDTH[p.type])
            if p.type is DataType.BOOL and not table.is_bit:
                raise ValueError(f"points[{i}] ({p.quantity}): type 'bool' needs table coil or discrete")
            if table.is_bit and p.type is not DataType.BOOL:
                raise ValueError(f"points[{i}] ({p.quantity}): coils/discrete inputs hold type 'bool'")
            if p.quantity in names:
                raise ValueError(f"points[{i}]: quantity {p.quantity!r} appears twice")
            names.add(p.quantity)
            if p.type is DataType.BIT:
                bits.append((i, p, (table, addr)))
            for off in range(WIDTH[p.type]):
                key = (table, addr + off)
                if key in seen and p.type is not DataType.BIT:
                    raise ValueError(f"points[{i}] ({p.quantity}) overlaps {seen[key]} at {table} {addr + off}")
                if p.type is not DataType.BIT:
                    seen[key] = p.quantity
                    if p.type in (DataType.FLOAT32, DataType.FLOAT64):
                        floats[key] = p
        # a bit point may share its register with other bits (a status word read as a whole and as fields: the
        # Honeywell Midas map does both) and with an integer value (a uint32 of flags), not with a float: a float's
        # bits are no flags
        for i, p, key in bits:
            if (other := floats.get(key)) is not None:
                raise ValueError(
                    f"points[{i}] ({p.quantity}) is a bit of {key[0]} {key[1]}, a register of the "
                    f"{other.type} {other.quantity}: a float's bits are no flags"
                )
        for i, p in enumerate(self.points):
            if p.status is not None and p.status not in names:
                raise ValueError(f"points[{i}] ({p.quantity}).status: no point reads {p.status!r}")
            if p.status == p.quantity:
                raise ValueError(f"points[{i}] ({p.quantity}).status: a point cannot be its own status")
        if self.clock is not None:
            ct, caddr = self.clock_address()
            _check_end("clock", ct, caddr, self.clock.count)
            for off in range(self.clock.count):
                if (ct, caddr + off) in seen:
                    raise ValueError(f"clock overlaps {seen[(ct, caddr + off)]} at {ct} {caddr + off}")
        return self

    def clock_address(self) -> tuple[Table, int]:
        """(table, 0-based PDU address) of the register clock."""
        assert self.clock is not None
        table = Table(self.clock.table)
        probe = RegisterPoint(quantity="up", address=self.clock.address, table=table)
        return resolve_address(self.address_base, probe, -1)

    def quantity_names(self) -> list[str]:
        return [p.quantity for p in self.points]

    def resolved(self) -> list[tuple[RegisterPoint, Table, int, Order]]:
        """(point, table, 0-based PDU address, order) for every point."""
        return [
            (p, *resolve_address(self.address_base, p, i), p.order or self.order) for i, p in enumerate(self.points)
        ]


def _check_end(where: str, table: Table, addr: int, width: int) -> None:
    # addresses are 0x0000..0xFFFF (Modbus Application Protocol V1.1b3 §4.4): a value past the last one is a
    # request no device answers (exception 02), or a block the planner cannot make
    if addr + width > 65536:
        raise ValueError(
            f"{where}: {table} {addr}..{addr + width - 1} ({width} registers) runs past the last address 65535"
        )


def resolve_address(base: AddressBase, p: RegisterPoint, index: int) -> tuple[Table, int]:
    if base is AddressBase.PDU:
        if p.table is None:
            raise ValueError(f"points[{index}] ({p.quantity}): address_base 'pdu' needs 'table'")
        return p.table, p.address
    if base is AddressBase.ONE_BASED:
        if p.table is None:
            raise ValueError(f"points[{index}] ({p.quantity}): address_base 'one_based' needs 'table'")
        if p.address < 1:
            raise ValueError(f"points[{index}] ({p.quantity}): register numbers start at 1 with address_base one_based")
        return p.table, p.address - 1
    prefix, rest = divmod(p.address, 10000)
    if rest == 0 or p.address > 49999:
        raise ValueError(f"points[{index}] ({p.quantity}): {p.address:05d} is not a Modicon address (00001..49999)")
    table = {0: Table.COIL, 1: Table.DISCRETE, 3: Table.INPUT, 4: Table.HOLDING}.get(prefix)
    if table is None:
        raise ValueError(f"points[{index}] ({p.quantity}): {p.address:05d} has no table (2xxxx is unused)")
    if p.table is not None and p.table is not table:
        raise ValueError(f"points[{index}] ({p.quantity}): {p.address:05d} is a {table} address, not {p.table}")
    return table, rest - 1


class MqttProfile(_ProfileHead):
    transport: Literal["mqtt"]
    payload: PayloadMap

    @model_validator(mode="after")
    def _check(self) -> MqttProfile:
        qs = _Quantities(self.auxiliary)
        for i, f in enumerate(self.payload.fields):
            qs.check(f"payload.fields[{i}] ({f.path})", f.quantity, f.unit)
            _check_maps(f"payload.fields[{i}] ({f.path})", f.quality, self.quality_maps)
        if self.payload.points:
            for name, q in self.payload.points.names.items():
                qs.check(f"payload.points.names.{name}", q, None)
            _check_maps("payload.points", self.payload.points.quality, self.quality_maps)
        return self

    def quantity_names(self) -> list[str]:
        names = [f.quantity for f in self.payload.fields]
        if self.payload.points:
            names += list(self.payload.points.names.values())
        return names


class SurveyProfile(_ProfileHead):
    """A point whose readings come from surveys brought in as files (人工监测, a third-party firm's daily report),
    through `sitegw import`, the API or the console: no driver polls it."""

    transport: Literal["survey"]
    quantities: list[str] = Field(min_length=1)  # what its surveys may report (a file's item column picks one)

    @model_validator(mode="after")
    def _check(self) -> SurveyProfile:
        qs = _Quantities(self.auxiliary)
        for i, q in enumerate(self.quantities):
            qs.check(f"quantities[{i}]", q, None)
        return self

    def quantity_names(self) -> list[str]:
        return list(self.quantities)


AnyProfile = ModbusProfile | MqttProfile | SurveyProfile
Profile = Annotated[AnyProfile, Field(discriminator="transport")]


class _ProfileFile(_Base):
    profile: Profile


class ProfileError(ValueError):
    """A profile file that does not load; the message names the file and the field."""


def load_profile_file(path: Path) -> AnyProfile:
    from pydantic import ValidationError

    try:
        data = yamltext.safe_load(path.read_text(encoding="utf-8"))
        profile = _ProfileFile.model_validate({"profile": data}).profile
        for aux in profile.auxiliary:
            quantities.register_auxiliary(aux.quantity())
        return profile
    except ValueError as err:
        if not isinstance(err, ValidationError):  # an auxiliary quantity that clashes with another profile's
            raise ProfileError(f"{path}: {err}") from None
        lines = [f"{path}: invalid profile"]
        for e in err.errors():
            loc = ".".join(str(x) for x in e["loc"][2:])  # drop 'profile' and the union tag
            lines.append(f"  {loc or '(top)'}: {e['msg']}")
        raise ProfileError("\n".join(lines)) from None
    except OSError as err:
        raise ProfileError(f"{path}: cannot read: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise ProfileError(f"{path}: not valid YAML: {err}") from None


@cache
def builtin_profiles() -> dict[str, AnyProfile]:
    out: dict[str, AnyProfile] = {}
    for f in sorted(PROFILE_DIR.glob("*.yaml")):
        p = load_profile_file(f)
        if p.id != f.stem:
            raise ProfileError(f"{f}: profile id {p.id!r} must equal the file name {f.stem!r}")
        out[p.id] = p
    return out
