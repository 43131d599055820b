"""The whole site file: its sections together, checked against each other and the profiles."""

from __future__ import annotations

import functools
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from alerting.config import AlarmsConfig, AuthConfig, EscalationConfig
from alerting.derived import DeviceContext, WarningLimit, provides
from alerting.hazards import HazardConfig
from alerting.notifiers.config import MqttChannel
from alerting.overrides import RulesConfig, resolve_rules
from alerting.rules import default_rules
from alerting.setup import AlarmSetup
from drivers.modbus.config import Line, ModbusOptions
from drivers.mqtt.config import Broker
from drivers.profile import (
    AnyProfile,
    ModbusProfile,
    SurveyProfile,
    builtin_profiles,
    load_profile_file,
)
from drivers.timefmt import TimestampFormat
from gateway.config.sections import (
    ClockLimits,
    Device,
    HttpConfig,
    Sink,
    Site,
    SpoolConfig,
)
from gateway.siteplan import check_positions
from telemetry import quantities
from telemetry.kinds import DeviceKind


class SiteConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

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
