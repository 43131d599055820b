"""Site configuration: strict, frozen pydantic models for one site YAML; errors name the YAML path and line."""

from __future__ import annotations

import functools
import re
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from alerting.config import AlarmsConfig, AuthConfig, EscalationConfig, WarningValues
from alerting.derived import DeviceContext, WarningLimit, provides
from alerting.hazards import HazardConfig
from alerting.notifiers.config import MqttChannel
from alerting.overrides import RulesConfig, resolve_rules
from alerting.rules import default_rules
from alerting.setup import AlarmSetup
from drivers.modbus.config import Line, ModbusOptions, ModbusRtuLine
from drivers.mqtt.config import Broker
from drivers.profile import (
    AnyProfile,
    ModbusProfile,
    ProfileError,
    SurveyProfile,
    builtin_profiles,
    load_profile_file,
)
from drivers.timefmt import TimestampFormat, TimestampOverride
from gateway.siteplan import PlanPosition, SitePlan, check_image, check_positions
from telemetry import quantities
from telemetry.kinds import DeviceKind

_Strict = ConfigDict(extra="forbid", frozen=True)
_ID = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"
_NO_CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # newlines and tabs cannot be stored in InfluxDB tags


class _Base(BaseModel):
    model_config = _Strict


def _size(v: Any) -> Any:
    """Accept byte sizes as integers or '256MiB' / '64KiB' / '1GiB' strings."""
    if isinstance(v, str):
        m = re.fullmatch(r"\s*(\d+)\s*(B|KiB|MiB|GiB)?\s*", v)
        if not m:
            raise ValueError("expected a size such as 268435456, '256MiB' or '64KiB'")
        return int(m[1]) * {"B": 1, None: 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}[m[2]]
    return v


class Site(_Base):
    id: str = Field(pattern=_ID)
    name: str = Field(min_length=1)
    timezone: str = "Asia/Shanghai"
    plan: SitePlan | None = None  # the site drawing the console places devices on (gateway/siteplan.py)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: 'Asia' is a folder, a name too long
            raise ValueError(f"unknown IANA time zone {v!r} (e.g. 'Asia/Shanghai')") from None
        return v

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if _NO_CONTROL.search(v):
            raise ValueError("must not contain control characters (newline, tab)")
        return v


class ClockLimits(_Base):
    """How far a device's clock may be from the gateway's before its readings are flagged (quality uncertain,
    counted, `health.clock_skew`). Engineering defaults, not from a standard: 5 minutes ahead covers RTC drift
    over months; 7 days behind lets a detector back-fill its buffer after a week without a link."""

    max_ahead_s: float = Field(default=300.0, gt=0, le=10 * 365 * 86400)
    max_age_s: float = Field(default=7 * 86400.0, gt=0, le=10 * 365 * 86400)


class LoadChartPoint(_Base):
    radius_m: float = Field(gt=0)
    rated_load_t: float = Field(gt=0)


class Device(_Base):
    id: str = Field(pattern=_ID)
    name: str = ""
    profile: str
    zone: str = ""
    # Modbus
    line: str | None = None
    unit_id: int | None = Field(default=None, ge=1, le=247)  # 0 is broadcast: no unit answers it
    poll_interval_s: float = Field(default=1.0, gt=0, le=86400)
    timeout_s: float = Field(default=0.5, gt=0, le=60)
    retries: int = Field(default=1, ge=0, le=5)
    # MQTT
    broker: str | None = None
    topic: str | None = None
    match: str | None = None  # the id the device uses for itself in topic/payload (default: `id`)
    # Liveness: `up` drops to 0 after this long without a good reading (default 3 x the expected interval)
    expected_interval_s: float | None = Field(default=None, gt=0)
    stale_factor: float = Field(default=3.0, ge=1.0, le=100)
    # Tower crane: the manufacturer's load chart, for simulators and %-of-rated rules
    load_chart: list[LoadChartPoint] | None = None
    # Tower crane: the manufacturer's working-limit wind speed (工作极限风速, from the manual); the wind alarm uses
    # the stricter of it and the standard's stop-lifting value
    wind_limit_ms: float | None = Field(default=None, gt=0, le=75)
    # Design values for %-of-design rules, by quantity (e.g. strut_force: 3000 kN, axial_force: 40 kN)
    design_values: dict[str, float] = {}
    # Date the device's calibration (标定/检定) falls due; after it a health alarm "calibration overdue" is raised
    calibration_due: date | None = None
    # Excavation points: the design 预警值 per monitored quantity (base name: deep_displacement covers every depth)
    # and the excavation depth h for 预警值 given as % of h
    warning_values: dict[str, WarningValues] = {}
    excavation_depth_m: float | None = Field(default=None, gt=0, le=200)
    # MQTT: this device writes its time differently from its model (another zone, format or pattern)
    timestamp: TimestampOverride | None = None
    # limits of this device's clock (default: the site's `device_clock`)
    device_clock: ClockLimits | None = None
    # where it stands on the site plan (site.plan), and a tower crane's jib as drawn (default: its chart's radius)
    position: PlanPosition | None = None
    jib_length_m: float | None = Field(default=None, gt=0, le=120)

    @field_validator("name", "zone")
    @classmethod
    def _printable(cls, v: str) -> str:
        if _NO_CONTROL.search(v):
            raise ValueError("must not contain control characters (newline, tab)")
        if "\\" in v:
            raise ValueError("must not contain a backslash (InfluxDB 1.x cannot store it reliably in a tag)")
        return v

    @property
    def key(self) -> str:
        return self.match or self.id

    @property
    def stale_after_s(self) -> float:
        return (self.expected_interval_s or self.poll_interval_s) * self.stale_factor


class SpoolConfig(_Base):
    dir: Path = Path("var/spool")
    max_bytes: Annotated[int, Field(ge=64 * 1024)] = 256 * 1024**2
    segment_bytes: Annotated[int, Field(ge=4096)] = 4 * 1024**2
    replay_lines_per_s: float = Field(default=20000, gt=0)
    batch_lines: int = Field(default=5000, ge=1, le=100000)
    sync_interval_s: float = Field(default=1.0, ge=0, le=60)

    @field_validator("max_bytes", "segment_bytes", mode="before")
    @classmethod
    def _sizes(cls, v: Any) -> Any:
        return _size(v)

    @model_validator(mode="after")
    def _check(self) -> SpoolConfig:
        if self.segment_bytes * 2 > self.max_bytes:
            raise ValueError("segment_bytes must be at most half of max_bytes")
        return self


class InfluxV1Sink(_Base):
    """InfluxDB 1.x through its /write endpoint (raw line protocol), read with InfluxQL."""

    type: Literal["influxdb_v1"]
    url: str = Field(pattern=r"^https?://")
    database: str = Field(min_length=1)
    retention_policy: str | None = None
    username: str | None = None
    password_env: str | None = Field(default=None, pattern=r"^[A-Z_][A-Z0-9_]*$")
    create_database: bool = True
    timeout_s: float = Field(default=10.0, gt=0)


class InfluxV2Sink(_Base):
    """InfluxDB 2.x / 3.x (or anything with /api/v2/write) through influxdb-client."""

    type: Literal["influxdb_v2"]
    url: str = Field(pattern=r"^https?://")
    org: str
    bucket: str
    token_env: str | None = Field(default=None, pattern=r"^[A-Z_][A-Z0-9_]*$")
    timeout_s: float = Field(default=10.0, gt=0)


Sink = Annotated[InfluxV1Sink | InfluxV2Sink, Field(discriminator="type")]


class HttpConfig(_Base):
    """The gateway's own HTTP endpoint: /healthz, /metrics (Prometheus), /api/latest. Loopback by default."""

    host: str = "127.0.0.1"
    port: int = Field(default=8780, ge=1, le=65535)
    # request bodies are refused (413) over these sizes before they are read; a body stalled mid-way gets 408
    max_body_bytes: Annotated[int, Field(ge=1024, le=64 * 1024**2)] = 1024**2
    max_login_body_bytes: Annotated[int, Field(ge=256, le=64 * 1024)] = 4096
    max_upload_bytes: Annotated[int, Field(ge=1024, le=256 * 1024**2)] = 16 * 1024**2  # survey files, base64
    body_timeout_s: float = Field(default=30.0, gt=0, le=600)
    # origins besides the gateway's own (its Host header) whose pages may change things, e.g. the public URL of a
    # TLS reverse proxy in front of it: "https://gw.site.example"
    allowed_origins: list[str] = []

    @field_validator("max_body_bytes", "max_login_body_bytes", "max_upload_bytes", mode="before")
    @classmethod
    def _sizes(cls, v: Any) -> Any:
        return _size(v)


class SiteConfig(_Base):
    site: Site
    lines: list[Line] = []
    brokers: list[Broker] = []
    devices: list[Device] = Field(min_length=1)
    sink: Sink
    spool: SpoolConfig = SpoolConfig()
    modbus: ModbusOptions = ModbusOptions()
    http: HttpConfig | None = None
    device_clock: ClockLimits = ClockLimits()
    profile_dirs: list[Path] = []  # extra profile folders (site-specific device models)
    # the alarm engine (see README "Alarms, escalation and hazards")
    alarms: AlarmsConfig = AlarmsConfig()
    rules: RulesConfig = RulesConfig()
    escalation: EscalationConfig = EscalationConfig()
    hazards: HazardConfig = HazardConfig()
    auth: AuthConfig = AuthConfig()

    @model_validator(mode="after")
    def _cross(self) -> SiteConfig:
        _unique("lines", [x.id for x in self.lines])
        _unique("brokers", [x.id for x in self.brokers])
        _unique("devices", [x.id for x in self.devices])
        lines = {x.id: x for x in self.lines}
        brokers = {x.id for x in self.brokers}
        profiles = self.profiles()
        units: dict[tuple[str, int], str] = {}
        keys: dict[tuple[str, str], str] = {}
        filters: dict[tuple[str, str], str] = {}
        survey_keys: dict[str, str] = {}  # the point id a surveyor's file uses -> device id
        for i, d in enumerate(self.devices):
            at = f"devices[{i}] ({d.id})"
            prof = profiles.get(d.profile)
            if prof is None:
                raise ValueError(f"{at}.profile: unknown profile {d.profile!r}; known: {', '.join(sorted(profiles))}")
            if isinstance(prof, ModbusProfile):
                if d.line is None or d.unit_id is None:
                    raise ValueError(f"{at}: a Modbus device needs 'line' and 'unit_id'")
                if d.broker or d.topic:
                    raise ValueError(f"{at}: a Modbus device takes no 'broker'/'topic'")
                if d.timestamp is not None:
                    raise ValueError(f"{at}.timestamp: a Modbus device's time is its profile's register clock")
                if d.line not in lines:
                    raise ValueError(f"{at}.line: unknown line {d.line!r}; defined: {', '.join(lines) or 'none'}")
                if d.timeout_s >= d.poll_interval_s:
                    raise ValueError(
                        f"{at}.timeout_s: {d.timeout_s:g} s must be below poll_interval_s = {d.poll_interval_s:g} s"
                    )
                if (d.line, d.unit_id) in units:
                    raise ValueError(
                        f"{at}.unit_id: {d.unit_id} on line {d.line} is already {units[(d.line, d.unit_id)]}"
                    )
                units[(d.line, d.unit_id)] = d.id
            elif isinstance(prof, SurveyProfile):
                if d.line or d.unit_id is not None or d.broker or d.topic:
                    raise ValueError(f"{at}: a survey point takes no 'line'/'unit_id'/'broker'/'topic'")
                if d.expected_interval_s is None:
                    raise ValueError(
                        f"{at}.expected_interval_s: required for a survey point (how often it is surveyed; "
                        f"`up` drops to 0 after stale_factor x this without a survey)"
                    )
                if d.timestamp is not None:
                    raise ValueError(f"{at}.timestamp: a survey point's time is each row's survey time")
                other_key = survey_keys.setdefault(d.key, d.id)
                if other_key != d.id:
                    raise ValueError(f"{at}: survey point id {d.key!r} is already {other_key}")
            else:
                if d.broker is None or d.topic is None:
                    raise ValueError(f"{at}: an MQTT device needs 'broker' and 'topic'")
                if d.line or d.unit_id is not None:
                    raise ValueError(f"{at}: an MQTT device takes no 'line'/'unit_id'")
                if d.broker not in brokers:
                    raise ValueError(f"{at}.broker: unknown broker {d.broker!r}")
                if d.expected_interval_s is None:
                    raise ValueError(
                        f"{at}.expected_interval_s: required for an MQTT device (how often it publishes; "
                        f"`up` drops to 0 after stale_factor x this without a message)"
                    )
                other = filters.setdefault((d.broker, d.topic), prof.id)
                if other != prof.id:
                    raise ValueError(
                        f"{at}.topic: {d.topic!r} is already used by a {other} device; one profile per topic filter"
                    )
                seg = prof.payload.device_key.segment
                if seg is not None:
                    levels = d.topic.split("/")
                    if seg >= len(levels) or levels[seg] not in ("+", d.key):
                        raise ValueError(
                            f"{at}.topic: profile {prof.id} takes the device id from topic level {seg} (0-based), "
                            f"but level {seg} of {d.topic!r} is neither '+' nor {d.key!r}"
                        )
                if d.timestamp is not None:
                    try:
                        spec = d.timestamp.apply(prof.payload.timestamp)
                    except ValueError as err:
                        msg = str(err).splitlines()[-1].strip().removeprefix("Value error, ")
                        raise ValueError(f"{at}.timestamp: {msg}") from None
                    if spec.format is not TimestampFormat.RECEIVE and prof.payload.timestamp.path is None:
                        raise ValueError(f"{at}.timestamp: profile {prof.id} has no time field to read")
                if (d.broker, d.key) in keys:
                    raise ValueError(
                        f"{at}: device key {d.key!r} on broker {d.broker} is already {keys[(d.broker, d.key)]}"
                    )
                keys[(d.broker, d.key)] = d.id
        check_positions(self.site.plan, self.devices)
        for i, ch in enumerate(self.escalation.channels):
            if isinstance(ch, MqttChannel) and ch.broker not in brokers:
                raise ValueError(f"escalation.channels[{i}].broker: unknown broker {ch.broker!r}")
        for i, dv in enumerate(self.devices):
            for q in dv.design_values:
                try:
                    quantities.lookup(q)
                except KeyError:
                    raise ValueError(f"devices[{i}] ({dv.id}).design_values: unknown quantity {q!r}") from None
            for q, w in dv.warning_values.items():
                at = f"devices[{i}] ({dv.id}).warning_values"
                try:
                    base = quantities.lookup(q).name
                except KeyError:
                    raise ValueError(f"{at}: unknown quantity {q!r}") from None
                if base != q:
                    raise ValueError(f"{at}: {q!r}: give the base quantity {base!r} (it covers every depth)")
                if w.cumulative_percent_h is not None and dv.excavation_depth_m is None:
                    raise ValueError(f"{at}: {q}.cumulative_percent_h needs excavation_depth_m (h) on the device")
        self._check_rules()
        return self

    def _check_rules(self) -> None:
        """The `rules:` block against the default packs and the devices, at load time: `check-config` and `run`
        refuse a bad override alike, naming its YAML path (a level the rule lacks, an unknown rule or device)."""
        resolve_rules(default_rules(), self.rules, self.device_contexts())

    def device_contexts(self) -> dict[str, DeviceContext]:
        """Device id -> what its rules and the deriver need of it (kind, chart, design values, what it reports)."""
        out: dict[str, DeviceContext] = {}
        for d in self.devices:
            out[d.id] = DeviceContext(
                kind=self.kind_of(d).value,
                load_chart=tuple(sorted((p.radius_m, p.rated_load_t) for p in d.load_chart or ())),
                wind_limit_ms=d.wind_limit_ms,
                design_values=dict(d.design_values),
                calibration_due=d.calibration_due,
                # Modbus devices are polled: their poll interval is the interval readings are expected at
                expected_interval_s=d.expected_interval_s or d.poll_interval_s,
                provides=provides(self.profile_of(d).quantity_names()),
                warning_values={
                    q: WarningLimit.resolve(q, w, d.excavation_depth_m) for q, w in d.warning_values.items()
                },
            )
        return out

    def alarm_setup(self) -> AlarmSetup:
        """What the alarm engine is given of this site."""
        return AlarmSetup(
            site_id=self.site.id,
            site_name=self.site.name,
            timezone=self.site.timezone,
            devices=self.device_contexts(),
            device_names={d.id: (d.name or d.id) + (f" ({d.zone})" if d.zone else "") for d in self.devices},
            alarms=self.alarms,
            rules=self.rules,
            escalation=self.escalation,
            hazards=self.hazards,
        )

    def profiles(self) -> dict[str, AnyProfile]:
        return _profiles(tuple(self.profile_dirs))

    def profile_of(self, device: Device) -> AnyProfile:
        return self.profiles()[device.profile]

    def kind_of(self, device: Device) -> DeviceKind:
        return self.profile_of(device).kind

    def clock_limits(self) -> dict[str, tuple[float, float]]:
        """Device id -> (max_ahead_s, max_age_s) of its clock."""
        out = {}
        for d in self.devices:
            lim = d.device_clock or self.device_clock
            age = lim.max_age_s
            if d.device_clock is None and isinstance(self.profile_of(d), SurveyProfile):
                age = 10 * 365 * 86400.0  # a survey brought in weeks later is late, not a clock that is off
            out[d.id] = (lim.max_ahead_s, age)
        return out


@functools.cache
def _profiles(dirs: tuple[Path, ...]) -> dict[str, AnyProfile]:
    """Built-in profiles plus those of the site's folders, read once per set of folders."""
    out = dict(builtin_profiles())
    for folder in dirs:
        for f in sorted(Path(folder).glob("*.yaml")):
            p = load_profile_file(f)
            out[p.id] = p
    return out


def _unique(what: str, ids: list[str]) -> None:
    seen: set[str] = set()
    for i in ids:
        if i in seen:
            raise ValueError(f"{what}: duplicate id {i!r}")
        seen.add(i)


_CROSS = re.compile(r"^(?P<coll>[a-z_.]+)\[(?P<idx>\d+)\](?: \([^)]*\))?(?:\.(?P<field>[a-z_]+))?")


class ConfigError(Exception):
    """A site config that cannot be used; the message names the file, YAML path and line."""


class _SafeLoader(yaml.SafeLoader):
    """yaml.safe_load, but a scalar its tag cannot build (2027-02-30, `!!int abc`) is a YAML error with its line."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        # PyYAML's constructors fail this way on `!!int ''` (IndexError), `!!bool x` (KeyError), `!!timestamp x`
        except (ValueError, LookupError, TypeError, AttributeError) as err:
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read as {node.tag}: {err}", node.start_mark
            ) from None


def _line_index(
    node: yaml.Node, path: tuple[Any, ...], out: dict[tuple[Any, ...], int], seen: set[int] | None = None
) -> None:
    # an alias repeats a node already indexed at its anchor (and `&a [*a]` is a cycle): index each node once
    seen = set() if seen is None else seen
    if id(node) in seen:
        return
    seen.add(id(node))
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode):
                _line_index(v, (*path, k.value), out, seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            _line_index(v, (*path, i), out, seen)


_PLAIN_KEY = re.compile(r"[\w\-\[\]]+")  # field names and pydantic's `[key]`; any other key is quoted


def _fmt_loc(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for x in loc:
        if isinstance(x, int):
            parts.append(f"[{x}]")
        elif not _PLAIN_KEY.fullmatch(str(x)):  # a key with a newline, a dot or ': ' would garble the path
            parts.append(f"[{str(x)!r}]")
        else:
            parts.append(("." if parts else "") + str(x))
    return "".join(parts) or "(top level)"


def _clean_loc(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    # pydantic puts the union tag (e.g. 'modbus_tcp') into the path of discriminated unions: drop it
    tags = {"modbus_tcp", "modbus_rtu", "modbus_rtu_over_tcp", "influxdb_v1", "influxdb_v2"}
    return tuple(x for x in loc if not (isinstance(x, str) and x in tags))


def load_config(path: str | Path) -> SiteConfig:
    """Load and validate a site YAML. Raises ConfigError with every problem, each with its YAML path and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror}") from None
    try:
        node = yaml.compose(text)
        data = yaml.load(text, Loader=_SafeLoader)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    except RecursionError:  # the parser recurses once per level of nesting
        raise ConfigError(f"{path}: not valid YAML: nested too deeply") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with 'site', 'devices', 'sink', ...")
    base = path.resolve().parent
    if isinstance(data.get("profile_dirs"), list):
        data["profile_dirs"] = [
            str(base / p) if isinstance(p, str) and not p.startswith("/") else p for p in data["profile_dirs"]
        ]
    for b in data["brokers"] if isinstance(data.get("brokers"), list) else []:
        tls = b.get("tls") if isinstance(b, dict) else None
        if isinstance(tls, dict):
            for k in ("ca_file", "cert_file", "key_file"):
                if isinstance(tls.get(k), str) and not tls[k].startswith("/"):
                    tls[k] = str(base / tls[k])
    index: dict[tuple[Any, ...], int] = {}
    if node is not None:
        _line_index(node, (), index)
    try:
        cfg = SiteConfig.model_validate(data)
    except ValidationError as err:
        msgs = [f"{path}: {err.error_count()} problem(s)"]
        for e in err.errors():
            loc = _clean_loc(tuple(e["loc"]))
            msg = e["msg"].removeprefix("Value error, ")
            m = _CROSS.match(msg)
            if not loc and m:  # cross-field checks name their path at the start of the message
                loc = (*m["coll"].split("."), int(m["idx"])) + ((m["field"],) if m["field"] else ())
                msg = msg[m.end() :].lstrip(": ")
            line = None
            for n in range(len(loc), -1, -1):
                if loc[:n] in index:
                    line = index[loc[:n]]
                    break
            where = f"{_fmt_loc(loc)} (line {line})" if line else _fmt_loc(loc)
            if e["type"] == "extra_forbidden":
                msg = "unknown field (check the spelling; see README, configuration reference)"
            elif e["type"] == "missing":
                msg = "required field is missing"
            got = e.get("input")
            if e["type"] not in ("missing", "extra_forbidden") and not isinstance(got, (dict, list)):
                msg += f"; got {got!r}"
            if e["type"] != "value_error":  # pydantic quotes some inputs (a union tag) with their newlines raw
                msg = msg.replace("\r", "\\r").replace("\n", "\\n")
            msgs.append(f"  {where}: {msg}")
        raise ConfigError("\n".join(msgs)) from None
    except ProfileError as err:
        raise ConfigError(str(err)) from None
    # relative paths are relative to the config file, so a site folder can move as a whole
    updates: dict[str, Any] = {}
    if not cfg.spool.dir.is_absolute():
        updates["spool"] = cfg.spool.model_copy(update={"dir": base / cfg.spool.dir})
    if not cfg.alarms.state_file.is_absolute():
        updates["alarms"] = cfg.alarms.model_copy(update={"state_file": base / cfg.alarms.state_file})
    new_lines = []
    for ln in cfg.lines:
        if isinstance(ln, ModbusRtuLine) and not ln.port.startswith("/"):
            ln = ln.model_copy(update={"port": str(base / ln.port)})
        new_lines.append(ln)
    updates["lines"] = new_lines
    plan = cfg.site.plan
    if plan is not None and plan.image is not None and not plan.image.is_absolute():
        plan = plan.model_copy(update={"image": base / plan.image})
        updates["site"] = cfg.site.model_copy(update={"plan": plan})
    try:
        check_image(plan)
    except ValueError as err:  # worded like the problems above: the file, then the YAML path and what is wrong
        where, _, what = str(err).partition(": ")
        line = index.get(("site", "plan", "image"))
        raise ConfigError(f"{path}: 1 problem(s)\n  {where}{f' (line {line})' if line else ''}: {what}") from None
    return cfg.model_copy(update=updates)
