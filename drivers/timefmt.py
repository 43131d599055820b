"""Device time as devices write it: zoned ISO 8601, zone-less local strings, patterns, epoch units, register clocks."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from enum import StrEnum
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from drivers.errors import ProtocolError
from telemetry.yamlnum import Int
from telemetry.zones import iana_zone

_Strict = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

# a time outside these years is a misconfigured unit or a reset clock, never a reading (InfluxDB's int64 ns ends 2262)
LOW_NS = 946_684_800 * 10**9  # 2000-01-01
HIGH_NS = 4_102_444_800 * 10**9  # 2100-01-01


class TimestampFormat(StrEnum):
    EPOCH_S = "epoch_s"
    EPOCH_MS = "epoch_ms"
    EPOCH_US = "epoch_us"
    EPOCH_NS = "epoch_ns"
    ISO8601 = "iso8601"  # with its zone (Z, +08:00); a zone-less one needs `zone`
    PATTERN = "pattern"  # `pattern` (strptime, or yyyyMMddHHmmss style), in `zone`
    RECEIVE = "receive"  # the gateway's receive time, one per message, in arrival order


_EPOCH_NS = {
    TimestampFormat.EPOCH_S: 10**9,
    TimestampFormat.EPOCH_MS: 10**6,
    TimestampFormat.EPOCH_US: 10**3,
    TimestampFormat.EPOCH_NS: 1,
}

# Java / .NET / HJ 212 style tokens, longest first, and what strptime calls them
_TOKENS = [("yyyy", "%Y"), ("yy", "%y"), ("MM", "%m"), ("dd", "%d"), ("HH", "%H"), ("mm", "%M"), ("ss", "%S")]
_FRACTION = re.compile(r"(?<=%S)[.,]?(S{1,9})")


def strptime_pattern(pattern: str) -> str:
    """`yyyy-MM-dd HH:mm:ss.SSS` or `yyyyMMddHHmmss` -> strptime; a pattern with `%` is taken as strptime already."""
    if "%" in pattern:
        return pattern
    out = pattern
    for token, directive in _TOKENS:
        out = out.replace(token, directive)
    m = _FRACTION.search(out)
    if m:  # any run of S is the fraction of a second; strptime's %f takes 1..6 digits
        out = out[: m.start(1)] + "%f" + out[m.end(1) :]
    if "%" not in out:
        raise ValueError(f"pattern {pattern!r} has no date or time field (yyyy MM dd HH mm ss, or strptime %Y ...)")
    return out


def parse_zone(zone: str, site_tz: str) -> tzinfo:
    """`site` (the site's timezone), `UTC`, a fixed offset `+08:00`, or an IANA name (`iana_zone`)."""
    if zone == "site":
        return ZoneInfo(site_tz)
    if zone.upper() in ("UTC", "Z"):
        return UTC
    m = re.fullmatch(r"([+-])(\d{2}):?(\d{2})", zone)
    if m:
        # the world's offsets run from -12:00 to +14:00; `+08:60` or `+24:00` is a typing error, not a zone
        if int(m[3]) >= 60 or int(m[2]) * 60 + int(m[3]) > (14 if m[1] == "+" else 12) * 60:
            raise ValueError(f"zone {zone!r}: an offset runs from -12:00 to +14:00, its minutes below 60")
        sign = 1 if m[1] == "+" else -1
        return timezone(sign * timedelta(hours=int(m[2]), minutes=int(m[3])))
    return iana_zone(zone, "use 'site', 'UTC', '+08:00' or an IANA name")


def _zone_text(v: Any) -> Any:
    # an unquoted offset is a YAML number (zone: +0700 is 700), and "a valid string" said nothing of why
    if isinstance(v, int | float) and not isinstance(v, bool):
        raise ValueError(f"{v!r} is a number: write the zone as text, an offset in quotes ('+07:00')")
    return v


Zone = Annotated[str, BeforeValidator(_zone_text)]


class TimestampSpec(BaseModel):
    """Where a message's time is and how the device writes it."""

    model_config = _Strict

    path: str | None = None
    format: TimestampFormat = TimestampFormat.RECEIVE
    pattern: str | None = None
    # zone of a zone-less time: 'site' (site.timezone), 'UTC', '+08:00', 'Asia/Shanghai'. A string that carries its
    # own zone (ISO 8601 with Z or an offset) keeps it.
    zone: Zone | None = None

    @model_validator(mode="after")
    def _check(self) -> TimestampSpec:
        if self.format is not TimestampFormat.RECEIVE and not self.path:
            raise ValueError(f"timestamp format {self.format} needs 'path'")
        if self.format is TimestampFormat.PATTERN:
            if not self.pattern:
                raise ValueError("timestamp format 'pattern' needs 'pattern' (e.g. 'yyyy-MM-dd HH:mm:ss')")
            strptime_pattern(self.pattern)
            if self.zone is None:
                raise ValueError("a pattern time has no zone of its own: set 'zone' (e.g. 'site')")
        elif self.pattern is not None:
            raise ValueError("'pattern' applies to format 'pattern' only")
        if self.zone is not None:
            parse_zone(self.zone, "UTC")
        return self


class TimestampOverride(BaseModel):
    """A device whose clock differs from its model's (another zone, a firmware that writes another pattern)."""

    model_config = _Strict

    format: TimestampFormat | None = None
    pattern: str | None = None
    zone: Zone | None = None

    def apply(self, spec: TimestampSpec) -> TimestampSpec:
        data = spec.model_dump()
        data.update({k: v for k, v in self.model_dump().items() if v is not None})
        return TimestampSpec.model_validate(data)


class ClockField(StrEnum):
    YEAR = "year"
    MONTH = "month"
    DAY = "day"
    HOUR = "hour"
    MINUTE = "minute"
    SECOND = "second"
    MILLISECOND = "millisecond"


class RegisterClock(BaseModel):
    """A device clock in registers: one field per register, or two per register (high byte first); binary or BCD."""

    model_config = _Strict

    table: Literal["holding", "input"] = "holding"
    address: Int = Field(ge=0, le=65535)  # in the profile's address_base
    encoding: Literal["binary", "bcd"] = "binary"
    packing: Literal["register", "byte"] = "register"
    fields: list[ClockField] = [
        ClockField.YEAR,
        ClockField.MONTH,
        ClockField.DAY,
        ClockField.HOUR,
        ClockField.MINUTE,
        ClockField.SECOND,
    ]
    year_base: Int = Field(default=2000, ge=1900, le=2100)  # added to a two-digit year (< 100)
    zone: Zone = "site"

    @field_validator("fields")
    @classmethod
    def _fields(cls, v: list[ClockField]) -> list[ClockField]:
        for need in (ClockField.YEAR, ClockField.MONTH, ClockField.DAY, ClockField.HOUR, ClockField.MINUTE):
            if need not in v:
                raise ValueError(f"a register clock needs the field {need.value!r}")
        if len(set(v)) != len(v):
            raise ValueError("a clock field appears twice")
        return v

    @model_validator(mode="after")
    def _zone(self) -> RegisterClock:
        parse_zone(self.zone, "UTC")
        return self

    @property
    def count(self) -> int:
        """Registers the clock spans."""
        return len(self.fields) if self.packing == "register" else (len(self.fields) + 1) // 2


def _bcd(v: int, where: str) -> int:
    out = 0
    for shift in range(12, -4, -4):
        digit = (v >> shift) & 0xF
        if digit > 9:
            raise ProtocolError(f"{where}: {v:#06x} is not BCD")
        out = out * 10 + digit
    return out


def decode_register_clock(clock: RegisterClock, words: list[int], tz: tzinfo, where: str) -> int:
    """ns UTC from the clock's registers; ProtocolError names the register content when it is not a date."""
    if clock.packing == "register":
        raw = list(words[: len(clock.fields)])
        vals = [_bcd(w, where) if clock.encoding == "bcd" else w for w in raw]
    else:
        octets = [b for w in words for b in (w >> 8, w & 0xFF)][: len(clock.fields)]
        vals = [(b >> 4) * 10 + (b & 0xF) if clock.encoding == "bcd" else b for b in octets]
        if clock.encoding == "bcd" and any((b >> 4) > 9 or (b & 0xF) > 9 for b in octets):
            raise ProtocolError(f"{where}: {' '.join(f'{w:04X}' for w in words)} is not BCD")
    f = dict(zip(clock.fields, vals, strict=True))
    year = f[ClockField.YEAR]
    if year < 100:
        year += clock.year_base
    try:
        dt = datetime(
            year,
            f[ClockField.MONTH],
            f[ClockField.DAY],
            f[ClockField.HOUR],
            f[ClockField.MINUTE],
            f.get(ClockField.SECOND, 0),
            f.get(ClockField.MILLISECOND, 0) * 1000,
            tzinfo=tz,
        )
    except ValueError as err:
        shown = " ".join(f"{w:04X}" for w in words)
        raise ProtocolError(f"{where}: registers {shown} are not a date ({err})") from None
    return check_range(_ns(dt), where, dt.isoformat())


def _ns(dt: datetime) -> int:
    return int(dt.timestamp()) * 1_000_000_000 + dt.microsecond * 1000


def check_range(ns: int, where: str, shown: Any, what: str = "") -> int:
    if not LOW_NS <= ns <= HIGH_NS:
        raise ProtocolError(f"{where}: {shown!r:.40} is not a plausible {what + ' ' if what else ''}time (2000..2100)")
    return ns


SEEN_TIMES = 512  # time strings a parser remembers (see TimeParser.parse), each at most SEEN_CHARS long
SEEN_CHARS = 64


class TimeParser:
    """Parses one spec's time values to ns UTC; built once per (profile, device override, site zone)."""

    def __init__(self, spec: TimestampSpec, site_tz: str) -> None:
        self.spec = spec
        self.format = spec.format
        self.zone: tzinfo | None = parse_zone(spec.zone, site_tz) if spec.zone else None
        self._pattern = strptime_pattern(spec.pattern) if spec.pattern else None
        self.where = f"timestamp {spec.path!r}"
        self.ns_per_unit: int | None = _EPOCH_NS.get(self.format)  # an epoch format's unit in ns; None for others
        # time strings already parsed: a site's devices send the same second many times over (every device, every
        # message of that second), and strptime costs ~7 µs a message. Bounded; failures are never kept.
        self._seen: dict[str, int] = {}

    def parse(self, v: Any) -> int:
        fmt = self.format
        if fmt is TimestampFormat.ISO8601 or fmt is TimestampFormat.PATTERN:
            if not isinstance(v, str):
                raise ProtocolError(f"{self.where}: expected a time string, got {v!r:.40}")
            ns = self._seen.get(v)
            if ns is None:
                ns = self._parse_text(v)
                if len(v) <= SEEN_CHARS:  # padded ones parse too, and are not worth their memory
                    if len(self._seen) >= SEEN_TIMES:
                        self._seen.clear()
                    self._seen[v] = ns
            return ns
        return self._parse_epoch(v)

    def _parse_text(self, v: str) -> int:
        where = self.where
        try:
            if self._pattern is not None:
                dt = datetime.strptime(v.strip(), self._pattern)
            else:
                dt = datetime.fromisoformat(v.strip())
        except ValueError:
            if self._pattern is None:
                raise ProtocolError(f"{where}: not ISO 8601: {v!r:.40}") from None
            raise ProtocolError(f"{where}: {v!r:.40} does not match the pattern {self.spec.pattern!r}") from None
        if dt.tzinfo is None:
            if self.zone is None:
                raise ProtocolError(f"{where}: {v!r} has no zone (add Z or +08:00, or set the profile's zone)")
            dt = dt.replace(tzinfo=self.zone)
        return check_range(_ns(dt), where, v, self.format.value)

    def _parse_epoch(self, v: Any) -> int:
        where, fmt = self.where, self.format
        if isinstance(v, bool) or not isinstance(v, (int, float, str)):
            raise ProtocolError(f"{where}: expected an epoch number, got {v!r:.40}")
        if isinstance(v, str):  # some devices quote their epoch: "1732152902000"
            try:
                v = int(v) if v.strip().lstrip("-").isdigit() else float(v)
            except ValueError:
                raise ProtocolError(f"{where}: {v!r:.40} is not an epoch number") from None
        mult = _EPOCH_NS[fmt]
        if isinstance(v, int):
            ns = v * mult
        else:
            # floats to the microsecond (a float ns value would lose its last digits); NaN / 1e308: out of range
            us = v * mult / 1000
            ns = round(us) * 1000 if math.isfinite(us) else 0
        # a time in the wrong unit is a classic DTU misconfiguration: refuse rather than store year 50000 (checked
        # here, not by check_range: the format's name, an enum's .value, is a descriptor call on 3.11 per message)
        ns = int(ns)
        if not LOW_NS <= ns <= HIGH_NS:
            check_range(ns, where, v, fmt.value)
        return ns
