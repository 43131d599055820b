"""The whole site file: its sections together, checked against each other and the profiles."""

from __future__ import annotations

import functools
from datetime import time
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from alerting.config import AlarmsConfig, AuthConfig, EscalationConfig
from alerting.derived import DeviceContext, WarningLimit, gate_quantities, provides
from alerting.hazards import HazardConfig
from alerting.measures import SURVEYED_S
from alerting.notifiers.config import MqttChannel
from alerting.overrides import RulesConfig, resolve_rules, values_read
from alerting.rules import default_rules
from alerting.setup import AlarmSetup
from drivers.config import Claims
from drivers.modbus.config import Line, ModbusOptions, check_lines
from drivers.mqtt.config import Broker, check_brokers, topic_problem
from drivers.profile import AnyProfile, builtin_profiles, load_profile_file
from drivers.registry import driver_of
from gateway.config.devices import check_device_fields
from gateway.config.sections import (
    ClockLimits,
    Device,
    HttpConfig,
    SecondSinkConfig,
    Sink,
    Site,
    SpoolConfig,
    UplinkConfig,
)
from gateway.siteplan import check_positions
from telemetry import quantities
from telemetry.kinds import DeviceKind


def _folder(d: Path) -> Path:
    # a profile folder that is not there left its profiles out, unsaid (one replacing a built-in one too)
    if not d.is_dir():
        raise ValueError(
            "not a folder" if d.exists() else "no such folder (a relative one is relative to the site file)"
        )
    return d


class SiteConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    site: Site
    lines: list[Line] = []
    brokers: list[Broker] = []
    devices: list[Device] = Field(min_length=1)
    sink: Sink
    spool: SpoolConfig = SpoolConfig()
    modbus: ModbusOptions = ModbusOptions()
    http: HttpConfig | None = None
    device_clock: ClockLimits = ClockLimits()
    profile_dirs: list[Annotated[Path, AfterValidator(_folder)]] = []  # extra profile folders (site device models)
    # the alarm engine (see README "Alarms, escalation and hazards")
    alarms: AlarmsConfig = AlarmsConfig()
    rules: RulesConfig = RulesConfig()
    escalation: EscalationConfig = EscalationConfig()
    hazards: HazardConfig = HazardConfig()
    auth: AuthConfig = AuthConfig()
    uplink: UplinkConfig | None = None  # to a regional hub; none: the site stands alone
    second_sink: SecondSinkConfig | None = None  # the same readings to a central database, with its own spool

    @model_validator(mode="after")
    def _cross(self) -> SiteConfig:
        if self.second_sink is not None and self.second_sink.spool.dir == self.spool.dir:
            raise ValueError("second_sink.spool.dir: must differ from spool.dir (each sink has a spool of its own)")
        if "timezone" in self.hazards.model_fields_set and self.hazards.timezone != self.site.timezone:
            # the hazard clocks' local days and the ledger's date range (the site's) would disagree
            raise ValueError(
                f"hazards.timezone: {self.hazards.timezone!r} differs from site.timezone {self.site.timezone!r}; "
                "leave it out: the hazard workflow's days are the site's"
            )
        _unique("lines", [x.id for x in self.lines])
        _unique("brokers", [x.id for x in self.brokers])
        check_brokers(self.brokers, self.site.id)  # two entries of one session take each other over
        _unique("devices", [x.id for x in self.devices])
        profiles = self.profiles()
        # each device is checked by the driver its profile names (drivers/registry.py)
        scope = check_lines(self.lines)  # two lines on one bus: two masters
        claims = Claims(
            lines=tuple(x.id for x in self.lines),
            brokers=tuple(x.id for x in self.brokers),
            line_types={x.id: x.type for x in self.lines},
            unit_scope=scope,
        )
        for i, d in enumerate(self.devices):
            at = f"devices[{i}] ({d.id})"
            prof = profiles.get(d.profile)
            if prof is None:
                raise ValueError(f"{at}.profile: unknown profile {d.profile!r}; known: {', '.join(sorted(profiles))}")
            driver_of(prof).check_device(at, d, prof, claims)
            check_device_fields(at, d, prof)
        check_positions(self.site.plan, self.devices)
        for i, ch in enumerate(self.escalation.channels):
            if not isinstance(ch, MqttChannel):
                continue
            if ch.broker not in claims.brokers:
                raise ValueError(f"escalation.channels[{i}].broker: unknown broker {ch.broker!r}")
            problem = topic_problem(ch.topic, wildcards=False)
            if problem:  # (a control character: the broker closed the channel's connection at every alarm)
                raise ValueError(f"escalation.channels[{i}].topic: {ch.topic!r} is no topic to publish to: {problem}")
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
                if w.cumulative_percent_h is not None:
                    unit = quantities.lookup(q).unit
                    if quantities.linear_factor("m", unit) is None:  # (it failed later, as "(top level)")
                        raise ValueError(
                            f"{at}.{q}.cumulative_percent_h: {q} is in {unit}, not a length: a % of the excavation "
                            "depth h is a limit for displacements and levels (give `cumulative`)"
                        )
                    if dv.excavation_depth_m is None:
                        raise ValueError(f"{at}.{q}.cumulative_percent_h: needs excavation_depth_m (h) on the device")
        self._check_rules()
        return self

    def _check_rules(self) -> None:
        """The `rules:` block against the default packs and the devices, at load time: `check-config` and `run`
        refuse a bad override alike, naming its YAML path (a level the rule lacks, an unknown rule or device); and
        each device's design values and 预警值 against its rules: one that no rule reads did nothing, unsaid."""
        contexts = self.device_contexts()
        for i, d in enumerate(self.devices):
            design, warning = values_read(default_rules(), contexts[d.id])
            for name, given, read in (
                ("design_values", d.design_values, design),
                ("warning_values", d.warning_values, warning),
            ):
                for q in given:
                    if q not in read:
                        raise ValueError(
                            f"devices[{i}] ({d.id}).{name}.{q}: no rule of this device reads it (its profile "
                            f"{d.profile}); the {name} its rules read: {', '.join(sorted(read)) or 'none'}"
                        )
        rules = resolve_rules(default_rules(), self.rules, contexts)
        for i, d in enumerate(self.devices):
            if d.survey_day_starts is None:
                continue
            every = contexts[d.id].expected_interval_s or 0.0
            at = f"devices[{i}] ({d.id}).survey_day_starts"
            if every < SURVEYED_S:  # (it would move the day of a gauge's run, judged once the day is over)
                raise ValueError(
                    f"{at}: only for a point surveyed every {SURVEYED_S // 3600} h or less often; this one reports "
                    f"every {every:g} s: its days are calendar days, each judged once it is over"
                )
            if not any(r.consecutive_days is not None for r in rules.get(d.id, ())):
                raise ValueError(f"{at}: no rule of this device counts a run of days (consecutive_days)")

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
                survey_day_starts=d.survey_day_starts or time(0),
                # Modbus devices are polled: their poll interval is the interval readings are expected at
                expected_interval_s=d.expected_interval_s or d.poll_interval_s,
                provides=provides(self.profile_of(d).quantity_names()),
                gates=gate_quantities(self.profile_of(d).quantity_names()),
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
            hazards=self.hazards.model_copy(update={"timezone": self.site.timezone}),
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
            if d.device_clock is None and driver_of(self.profile_of(d)).late_data:
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
    seen: dict[str, int] = {}
    for j, i in enumerate(ids):
        first = seen.setdefault(i, j)
        if first != j:  # named by its entry, so that the loader finds its line
            raise ValueError(f"{what}[{j}].id: duplicate id {i!r}, already {what}[{first}]")
