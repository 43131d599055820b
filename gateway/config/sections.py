"""The site file's sections as strict, frozen models: site, devices, spool, sink, HTTP."""

from __future__ import annotations

import re
from datetime import date
from datetime import time as dtime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from alerting.config import WarningValues
from drivers.timefmt import TimestampOverride
from gateway.siteplan import PlanPosition, SitePlan
from telemetry.secrets import nats_login
from telemetry.yamlnum import Float, Int
from telemetry.zones import iana_zone

# allow_inf_nan: `.inf` and `.nan` are YAML floats, and no bound refuses them where a field has no upper one
_Strict = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
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
        iana_zone(v, "name the site's, e.g. 'Asia/Shanghai'")
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

    max_ahead_s: Float = Field(default=300.0, gt=0, le=10 * 365 * 86400)
    max_age_s: Float = Field(default=7 * 86400.0, gt=0, le=10 * 365 * 86400)


class LoadChartPoint(_Base):
    radius_m: Float = Field(gt=0)
    rated_load_t: Float = Field(gt=0)


_FIELDS_SET: dict[frozenset[str], set[str]] = {}


class Device(_Base):
    id: str = Field(pattern=_ID)
    name: str = ""
    profile: str
    zone: str = ""
    # Modbus
    line: str | None = None
    # 0-255 on a Modbus TCP line (a server addressed by its IP takes 255 or 0); 1-247 on a serial bus, where 0 is
    # broadcast: checked with the line (drivers/modbus/config.py)
    unit_id: Int | None = Field(default=None, ge=0, le=255)
    poll_interval_s: Float = Field(default=1.0, gt=0, le=86400)
    timeout_s: Float = Field(default=0.5, gt=0, le=60)
    retries: Int = Field(default=1, ge=0, le=5)
    # MQTT
    broker: str | None = None
    topic: str | None = None
    match: str | None = None  # the id the device uses for itself in topic/payload (default: `id`)
    # Liveness: `up` drops to 0 after this long without a good reading (default 3 x the expected interval)
    expected_interval_s: Float | None = Field(default=None, gt=0)
    stale_factor: Float = Field(default=3.0, ge=1.0, le=100)
    # Tower crane: the manufacturer's load chart, for simulators and %-of-rated rules
    load_chart: list[LoadChartPoint] | None = None
    # Tower crane: the manufacturer's working-limit wind speed (工作极限风速, from the manual); the wind alarm uses
    # the stricter of it and the standard's stop-lifting value
    wind_limit_ms: Float | None = Field(default=None, gt=0, le=75)
    # Design values for %-of-design rules, by quantity (e.g. strut_force: 3000 kN, axial_force: 40 kN): positive (0
    # read as "not given" and a negative one made a high rule unreachable)
    design_values: dict[str, Annotated[Float, Field(gt=0)]] = {}
    # Date the device's calibration (标定/检定) falls due; after it a health alarm "calibration overdue" is raised
    calibration_due: date | None = None
    # A point surveyed at night: the local time its survey day starts ("12:00"), so a night's survey after midnight
    # counts for that night in a run of days (consecutive_days); calendar days when not given
    survey_day_starts: dtime | None = None
    # Excavation points: the design 预警值 per monitored quantity (base name: deep_displacement covers every depth)
    # and the excavation depth h for 预警值 given as % of h
    warning_values: dict[str, WarningValues] = {}
    excavation_depth_m: Float | None = Field(default=None, gt=0, le=200)
    # MQTT: this device writes its time differently from its model (another zone, format or pattern)
    timestamp: TimestampOverride | None = None
    # limits of this device's clock (default: the site's `device_clock`)
    device_clock: ClockLimits | None = None
    # where it stands on the site plan (site.plan), and a tower crane's jib as drawn (default: its chart's radius)
    position: PlanPosition | None = None
    jib_length_m: Float | None = Field(default=None, gt=0, le=120)

    @field_validator("name", "zone")
    @classmethod
    def _printable(cls, v: str) -> str:
        if _NO_CONTROL.search(v):
            raise ValueError("must not contain control characters (newline, tab)")
        if "\\" in v:
            raise ValueError("must not contain a backslash (InfluxDB 1.x cannot store it reliably in a tag)")
        return v

    @field_validator("calibration_due", mode="before")
    @classmethod
    def _a_date(cls, v: Any) -> Any:
        # a number was taken for seconds since 1970: 0 was 1970-01-01 (calibration overdue for ever), and 20270630
        # got an error about datetimes that have a time
        if isinstance(v, int | float) or (isinstance(v, str) and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", v)):
            raise ValueError("write the date as YYYY-MM-DD, e.g. 2027-06-30")
        return v

    @field_validator("survey_day_starts", mode="before")
    @classmethod
    def _a_time(cls, v: Any) -> Any:
        """ "HH:MM" or "H:MM" in the site's zone; anything else is refused saying how to write it."""
        if v is None:
            return v
        if isinstance(v, bool):
            raise ValueError(f'{v!r} is a YAML boolean: write the time as "HH:MM", e.g. "12:00"')
        if isinstance(v, int | float):  # (seconds after midnight to pydantic: 12 was 00:00:12)
            raise ValueError(f'{v!r} is a number: write the time as "HH:MM", e.g. "12:00"')
        m = re.fullmatch(r"(\d{1,2}):(\d{2})", str(v).strip())
        if m is None:
            zone = "; a time of day in the site's zone, without one" if re.search(r"[+Zz]|-\d\d:?\d\d$", str(v)) else ""
            raise ValueError(f'write the time as "HH:MM", e.g. "12:00" (a whole minute){zone}; got {v!r}')
        if int(m[1]) > 23 or int(m[2]) > 59:
            raise ValueError(f'{v!r} is no time of day: "00:00" to "23:59"')
        return dtime(int(m[1]), int(m[2]))

    def model_post_init(self, context: Any, /) -> None:
        # The devices of a site file set the same few fields: one set of their names serves them all (pydantic kept
        # a 728-byte set for each of 2 000 devices, 1.4 MB). Safe to share: the model is frozen, and model_copy
        # copies the set before it changes it.
        fields = self.__pydantic_fields_set__
        object.__setattr__(self, "__pydantic_fields_set__", _FIELDS_SET.setdefault(frozenset(fields), fields))

    @property
    def key(self) -> str:
        return self.match or self.id

    @property
    def stale_after_s(self) -> float:
        return (self.expected_interval_s or self.poll_interval_s) * self.stale_factor


class SpoolConfig(_Base):
    dir: Path = Path("var/spool")
    max_bytes: Annotated[Int, Field(ge=64 * 1024)] = 256 * 1024**2
    segment_bytes: Annotated[Int, Field(ge=4096)] = 4 * 1024**2
    replay_lines_per_s: Float = Field(default=20000, gt=0)
    batch_lines: Int = Field(default=5000, ge=1, le=100000)
    sync_interval_s: Float = Field(default=1.0, ge=0, le=60)
    # lines nobody delivers again (Modbus polls) go to the spool file with their fsync: docs/configuration.md
    write_polls_at_fsync: bool = True
    write_linger_s: Float = Field(default=1.0, ge=0, le=10)
    ack_linger_s: Float = Field(default=0.1, ge=0, le=1)
    # MQTT 3.1.1: below the broker's in-flight window for the gateway (20 on Mosquitto); MQTT 5: half the window the
    # gateway announces (brokers[].receive_maximum) instead: docs/configuration.md
    ack_linger_messages: Int = Field(default=10, ge=1, le=10000)

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
    timeout_s: Float = Field(default=10.0, gt=0)

    @field_validator("password_env")
    @classmethod
    def _with_user(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is not None and "username" in info.data and info.data["username"] is None:
            # the writer sends basic auth only with a user name: the password was read, then never sent
            raise ValueError("a password is sent only with a user name (HTTP basic auth): give `username` too")
        return v


class InfluxV2Sink(_Base):
    """InfluxDB 2.x / 3.x (or anything with /api/v2/write) through influxdb-client."""

    type: Literal["influxdb_v2"]
    url: str = Field(pattern=r"^https?://")
    org: str
    bucket: str
    token_env: str | None = Field(default=None, pattern=r"^[A-Z_][A-Z0-9_]*$")
    timeout_s: Float = Field(default=10.0, gt=0)


Sink = Annotated[InfluxV1Sink | InfluxV2Sink, Field(discriminator="type")]


class SecondSinkConfig(_Base):
    """A second database for the same readings (a region's central VictoriaMetrics or InfluxDB), behind its own
    spool: an outage of either fills only its own bound, and each catches up on its own."""

    sink: Sink
    spool: SpoolConfig  # its own dir (required: never the first sink's)


class UplinkConfig(_Base):
    """Alarm events and hazard changes to a regional hub's NATS JetStream cluster (store-and-forward, in order)."""

    servers: list[Annotated[str, Field(pattern=r"^(nats|tls)://[^\s/]+$")]] = Field(min_length=1)
    # events go to <subject_prefix>.<site id>.events; the hub's stream must take that subject
    subject_prefix: str = Field(default="sitegw", pattern=r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
    user: str | None = None
    password_env: str | None = Field(default=None, pattern=r"^[A-Z_][A-Z0-9_]*$")
    timeout_s: Float = Field(default=5.0, gt=0, le=60)  # for each publish's acknowledgement
    # /health says `uplink_behind` while the oldest unsent event is older than this
    behind_after_s: Float = Field(default=60.0, gt=0)
    # the site's status (health, devices online, backlog) to <subject_prefix>.<site id>.status this often; the hub
    # shows a site offline when none came for its offline_after_s
    status_s: Float = Field(default=30.0, ge=1, le=3600)
    # TLS (with tls:// servers): the CA that signed the cluster's certificates (default: the system's), and this
    # site's own certificate and key where the cluster asks for client certificates
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    @model_validator(mode="after")
    def _login(self) -> UplinkConfig:
        nats_login(self.user, self.password_env)
        return self

    @model_validator(mode="after")
    def _tls(self) -> UplinkConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together (this site's client certificate)")
        if any(f is not None for f in (self.ca_file, self.cert_file)) and not all(
            s.startswith("tls://") for s in self.servers
        ):
            raise ValueError("ca_file / cert_file are for tls:// servers; every server must then be tls://")
        return self


class HttpConfig(_Base):
    """The gateway's own HTTP endpoint: /healthz, /metrics (Prometheus), /api/latest. Loopback by default."""

    host: str = "127.0.0.1"
    port: Int = Field(default=8780, ge=1, le=65535)
    # request bodies are refused (413) over these sizes before they are read; a body stalled mid-way gets 408
    max_body_bytes: Annotated[Int, Field(ge=1024, le=64 * 1024**2)] = 1024**2
    max_login_body_bytes: Annotated[Int, Field(ge=256, le=64 * 1024)] = 4096
    max_upload_bytes: Annotated[Int, Field(ge=1024, le=256 * 1024**2)] = 16 * 1024**2  # survey files, base64
    body_timeout_s: Float = Field(default=30.0, gt=0, le=600)
    # origins besides the gateway's own (its Host header) whose pages may change things, e.g. the public URL of a
    # TLS reverse proxy in front of it: "https://gw.site.example"
    allowed_origins: list[str] = []
    # live streams (/api/stream) open at once, of all users: each holds a connection and a queue of up to 256
    # events, so this bounds what consoles can cost; a site's users and wall screens need a few dozen at most
    max_streams: Int = Field(default=64, ge=1, le=4096)

    @field_validator("max_body_bytes", "max_login_body_bytes", "max_upload_bytes", mode="before")
    @classmethod
    def _sizes(cls, v: Any) -> Any:
        return _size(v)
