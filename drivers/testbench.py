"""Profile test bench (Telegraf `--test` style): decode sample payloads and register dumps, check golden samples."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from drivers.errors import ProtocolError
from drivers.modbus.driver import PollResult, decode_poll
from drivers.modbus.plan import Block, plan_device
from drivers.mqtt.payloads import PayloadDecoder
from drivers.profile import (
    PROFILE_DIR,
    AnyProfile,
    ModbusProfile,
    MqttProfile,
    RegisterPoint,
    SurveyProfile,
    Table,
    resolve_address,
)
from drivers.quality import QualityName
from drivers.timefmt import parse_zone
from telemetry import quantities
from telemetry.reading import Quality, Reading

SAMPLES = "samples"  # the folder beside a profile folder that holds <profile id>.yaml golden samples
_Q = {Quality.GOOD: "good", Quality.UNCERTAIN: "uncertain", Quality.BAD: "bad", Quality.NOT_READY: "not_ready"}


@dataclass
class Decoded:
    """What one payload or register dump decodes to."""

    label: str
    readings: list[Reading] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    heartbeat: bool = False  # the device's heartbeat: heard, nothing stored (PayloadMap.heartbeat)


# ---- decoding -------------------------------------------------------------------------------------------------


def split_payloads(text: bytes) -> list[bytes]:
    """One payload, or JSON lines / one HJ 212 frame per line."""
    stripped = text.strip()
    try:
        json.loads(stripped)
        return [stripped]
    except ValueError:
        return [ln.strip() for ln in stripped.splitlines() if ln.strip()]


def decode_payloads(
    profile: MqttProfile, payloads: list[bytes], topic: str, site_tz: str, receive_ns: int
) -> list[Decoded]:
    dec = PayloadDecoder(profile, site_tz)
    out: list[Decoded] = []
    for i, payload in enumerate(payloads):
        d = Decoded(f"payload {i + 1}")
        try:
            doc = dec.parse(payload)
            key = dec.device_key(topic, doc)
            if dec.has_heartbeats and dec.heartbeat(doc):  # as the session takes it (drivers/mqtt/session.py)
                d.heartbeat = True
                out.append(d)
                continue
            ts = dec.timestamp_ns(doc, receive_ns + i)
            d.readings, errors = dec.readings(key, doc, ts)
            d.errors = [str(e) for e in errors]
            if not d.readings and not d.errors:  # the gateway dead-letters it: said here too, not an empty result
                d.errors.append(dec.none_of_fields(key))
        except ProtocolError as err:
            d.errors.append(str(err))
        out.append(d)
    return out


_DUMP_LINE = re.compile(r"^\s*(?:(?P<table>coil|discrete|holding|input)\s+)?(?P<addr>\d+)\s*:\s*(?P<words>.*)$")


def parse_dump(profile: ModbusProfile, text: str) -> dict[tuple[Table, int], int]:
    """`holding 0: 4120 0000 ...` (addresses as the profile writes them: PDU, one-based, or `40001:` Modicon);
    coils and discrete inputs as 0/1. Returns (table, PDU address) -> word or bit."""
    image: dict[tuple[Table, int], int] = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = _DUMP_LINE.match(line)
        if not m:
            raise ValueError(f"line {n}: expected '<table> <address>: <hex words>', got {line[:40]!r}")
        table = Table(m["table"]) if m["table"] else None
        probe = RegisterPoint(quantity="up", address=int(m["addr"]), table=table)
        try:
            t, start = resolve_address(profile.address_base, probe, n)
        except ValueError as err:
            raise ValueError(f"line {n}: {str(err).split(': ', 1)[-1]}") from None
        for k, w in enumerate(m["words"].split()):
            try:
                v = int(w, 2 if t.is_bit else 16)
            except ValueError:
                raise ValueError(f"line {n}: {w!r} is not a {'bit' if t.is_bit else 'hex word'}") from None
            if not 0 <= v <= (1 if t.is_bit else 0xFFFF):
                raise ValueError(f"line {n}: {w!r} is out of range")
            image[(t, start + k)] = v
    return image


def decode_registers(profile: ModbusProfile, text: str, site_tz: str, receive_ns: int) -> Decoded:
    d = Decoded("registers")
    try:
        image = parse_dump(profile, text)
    except ValueError as err:
        d.errors.append(str(err))
        return d
    plan = plan_device(profile)
    got: list[tuple[Block, list[int] | list[bool]]] = []
    for b in plan.blocks:
        missing = [a for a in range(b.address, b.address + b.count) if (b.table, a) not in image]
        if missing:
            names = ", ".join("device clock" if p.quantity.startswith("@") else p.quantity for p in b.points)
            d.errors.append(f"{b.table.value} {missing[0]} (PDU) is not in the dump: {names} not decoded")
            continue
        words = [image[(b.table, a)] for a in range(b.address, b.address + b.count)]
        got.append((b, [bool(w) for w in words] if b.table.is_bit else words))
    res = PollResult()
    zone = parse_zone(profile.clock.zone, site_tz) if profile.clock else None
    if got:
        decode_poll("DUT", plan, got, receive_ns, res, zone)
    d.readings = res.readings
    d.errors += [str(e) for e in res.errors]
    return d


def decode_survey(profile: SurveyProfile, data: bytes, filename: str, site_tz: str) -> Decoded:
    """A surveyor's file as the profile's points would take it (no site: any point id, the row's item)."""
    from drivers.survey import in_catalog_unit, item_quantity, parse_survey
    from drivers.timefmt import parse_zone

    d = Decoded("survey")
    try:
        parsed = parse_survey(data, filename, parse_zone("site", site_tz))
    except ValueError as err:
        d.errors.append(str(err))
        return d
    d.errors += [str(p) for p in parsed.problems]
    for r in parsed.rows:
        try:  # the same item and unit rules as an import (gateway/surveys.py), without a site
            if r.item is None and len(profile.quantities) != 1:
                raise ValueError("no item column (监测项目) and the profile reports several quantities")
            q = item_quantity(r.item, profile.quantities) if r.item else profile.quantities[0]
            value = in_catalog_unit(r.value, r.unit, q)
        except ValueError as err:
            d.errors.append(f"row {r.row}: {err}")
            continue
        d.readings.append(Reading(r.point, q, value, r.ts_ns))
    return d


def describe(d: Decoded, site_tz: str) -> list[str]:
    """Readings with unit, quality and time (UTC and site time), then every error."""
    zone = ZoneInfo(site_tz)
    out = [f"{d.label}:"] + (["  heartbeat: the device is heard, nothing is stored"] if d.heartbeat else [])
    for r in d.readings:
        q = quantities.lookup(r.quantity)
        t = datetime.fromtimestamp(r.ts_ns / 1e9, UTC)
        local = t.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
        value = "—" if math.isnan(r.value) else f"{r.value:.6g}"
        out.append(
            f"  {r.quantity:<26} {value:>12} {q.unit:<8} {_Q[r.quality]:<10} "
            f"{t.strftime('%Y-%m-%dT%H:%M:%S.%f')[:-3]}Z  ({local} {site_tz})"
        )
    out.extend(f"  ERROR {e}" for e in d.errors)
    return out


# ---- golden samples -------------------------------------------------------------------------------------------

_Strict = ConfigDict(extra="forbid", frozen=True)


class Expected(BaseModel):
    model_config = _Strict

    quantity: str
    value: float | None = None  # None: no value (a sentinel, NaN): only the quality is stored
    quality: QualityName = QualityName.GOOD
    time: datetime | None = None  # when given, the reading's timestamp (with zone)


class Case(BaseModel):
    model_config = _Strict

    name: str
    topic: str = "sample/DEVICE"
    payload: str | None = None  # text as the device sends it (JSON, an HJ 212 frame)
    registers: str | None = None  # a register dump, as `sitegw test-profile --registers` reads it
    survey: str | None = None  # a surveyor's report as CSV text (survey profiles)
    expect: list[Expected] = []
    errors: list[str] = []  # substrings, one per expected error, in order
    heartbeat: bool = False  # the payload is its device's heartbeat (no readings, no error)

    @model_validator(mode="after")
    def _one(self) -> Case:
        if sum(x is not None for x in (self.payload, self.registers, self.survey)) != 1:
            raise ValueError("a case has one of 'payload', 'registers' or 'survey'")
        return self


class SampleFile(BaseModel):
    model_config = _Strict

    profile: str
    source: str = ""  # where the sample comes from (a manual's example, an open-source driver's test)
    timezone: str = "Asia/Shanghai"
    receive_at: datetime = datetime(2026, 1, 1, tzinfo=UTC)  # the gateway's clock for receive-time stamps
    cases: list[Case] = Field(min_length=1)


def samples_path(profile_id: str, folder: Path = PROFILE_DIR) -> Path:
    return folder / SAMPLES / f"{profile_id}.yaml"


def load_samples(path: Path) -> SampleFile:
    try:
        return SampleFile.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    except ValidationError as err:
        lines = [f"{path}: invalid sample file"] + [
            f"  {'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in err.errors()
        ]
        raise ValueError("\n".join(lines)) from None
    except (OSError, yaml.YAMLError) as err:
        raise ValueError(f"{path}: {err}") from None


def run_case(profile: AnyProfile, case: Case, sf: SampleFile) -> Decoded:
    receive_ns = int(sf.receive_at.timestamp()) * 1_000_000_000
    if case.survey is not None:
        if not isinstance(profile, SurveyProfile):
            return Decoded(case.name, errors=["a survey file needs a survey profile"])
        d = decode_survey(profile, case.survey.encode("utf-8"), "sample.csv", sf.timezone)
    elif case.registers is not None:
        if not isinstance(profile, ModbusProfile):
            return Decoded(case.name, errors=["a register dump needs a Modbus profile"])
        d = decode_registers(profile, case.registers, sf.timezone, receive_ns)
    else:
        assert case.payload is not None
        if not isinstance(profile, MqttProfile):
            return Decoded(case.name, errors=["a payload needs an MQTT profile"])
        (d,) = decode_payloads(profile, [case.payload.strip().encode()], case.topic, sf.timezone, receive_ns)
    d.label = case.name
    return d


def check_case(d: Decoded, case: Case) -> list[str]:
    """Differences between what a case decoded to and what it must decode to."""
    problems: list[str] = []
    if d.heartbeat != case.heartbeat:
        problems.append("decoded as a heartbeat, not expected" if d.heartbeat else "expected a heartbeat")
    got = {r.quantity: r for r in d.readings}
    if len(got) != len(d.readings):
        problems.append("a quantity appears twice in one message")
    want = {e.quantity: e for e in case.expect}
    for q in sorted(set(want) - set(got)):
        problems.append(f"{q}: expected, not decoded")
    for q in sorted(set(got) - set(want)):
        problems.append(f"{q}: decoded ({got[q].value!r}), not expected")
    for q in sorted(set(want) & set(got)):
        e, r = want[q], got[q]
        if e.value is None:
            if not math.isnan(r.value):
                problems.append(f"{q}: expected no value, got {r.value!r}")
        elif not math.isclose(r.value, e.value, rel_tol=1e-9, abs_tol=1e-9):
            problems.append(f"{q}: expected {e.value!r}, got {r.value!r}")
        if _Q[r.quality] != e.quality.value:
            problems.append(f"{q}: expected quality {e.quality.value}, got {_Q[r.quality]}")
        if e.time is not None:
            want_ns = int(e.time.timestamp()) * 1_000_000_000 + e.time.microsecond * 1000
            if r.ts_ns != want_ns:
                got_t = datetime.fromtimestamp(r.ts_ns / 1e9, UTC).isoformat()
                problems.append(f"{q}: expected time {e.time.isoformat()}, got {got_t}")
    if len(d.errors) != len(case.errors):
        problems.append(f"expected {len(case.errors)} error(s), got {len(d.errors)}: {d.errors}")
    else:
        for want_err, got_err in zip(case.errors, d.errors, strict=True):
            if want_err not in got_err:
                problems.append(f"expected an error containing {want_err!r}, got {got_err!r}")
    return problems


def check_samples(profile: AnyProfile, sf: SampleFile) -> list[str]:
    """Every mismatch of every case, each line naming its case; empty when all match."""
    if sf.profile != profile.id:
        return [f"the samples are for {sf.profile!r}, not {profile.id!r}"]
    out: list[str] = []
    for case in sf.cases:
        out += [f"case {case.name!r}: {p}" for p in check_case(run_case(profile, case, sf), case)]
    return out


def profile_samples(profile_id: str, folders: list[Path]) -> Path | None:
    """The golden samples of a profile: in the `samples/` folder beside the profile (site folders first)."""
    for folder in [*folders, PROFILE_DIR]:
        p = samples_path(profile_id, folder)
        if p.is_file():
            return p
    return None
