"""Site YAML sections of the alarm engine: state file, escalation (people, duty roster, channels, policies), users."""

from __future__ import annotations

from datetime import time as dtime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from alerting.notifiers.config import ChannelConfig
from alerting.roles import Role
from alerting.rules import Source, default_rules
from telemetry.kinds import DeviceKind
from telemetry.yamlnum import Float, Int

_ID = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"
_ENV = r"^[A-Z_][A-Z0-9_]*$"


class _B(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)  # `.inf`, `.nan`: refused


class AlarmsConfig(_B):
    """Where alarm, escalation and hazard state lives, and lifecycle tuning."""

    state_file: Path = Path("var/state/sitegw.db")
    # how often, after writes, a worker thread copies the state file's log into it (alerting/checkpoint.py)
    checkpoint_s: Float = Field(default=1.0, gt=0, le=3600)
    # how often what the evaluator remembers (windows, daily values, counts in a row) is saved (alerting/memory.py)
    memory_s: Float = Field(default=60.0, gt=0, le=3600)
    # ISA-18.2 chattering alarm: raised 3 or more times in 60 s (the usual rule of thumb of EEMUA 191 / ISA-18.2)
    chatter_count: Int = Field(default=3, ge=2)
    chatter_window_s: Float = Field(default=60.0, gt=0)
    max_shelve_s: Float = Field(default=8 * 3600, gt=0)  # one shift; a shelved alarm always comes back
    console_url: str | None = Field(default=None, pattern=r"^https?://")  # put into messages as the ack link


class PersonConfig(_B):
    id: str = Field(pattern=_ID)
    name: str = Field(min_length=1)
    title: str = ""  # e.g. 安全员, 项目经理
    mobile: str | None = Field(default=None, pattern=r"^\+?[0-9]{5,15}$")
    email: str | None = Field(default=None, pattern=r"^[^@\s]+@[^@\s]+$")


_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class DutyConfig(_B):
    """Who holds a duty role when. A shift may run past midnight (start 20:00, end 08:00)."""

    role: str = Field(pattern=r"^[a-z][a-z0-9_]*$")  # e.g. safety_officer, project_manager, safety_director
    people: list[str] = Field(min_length=1)
    # at least one: an empty list covered no day, silently
    days: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] = Field(
        default=["mon", "tue", "wed", "thu", "fri", "sat", "sun"], min_length=1
    )
    start: dtime = dtime(0, 0)
    end: dtime = dtime(0, 0)  # equal to start: the whole day

    @field_validator("start", "end", mode="before")
    @classmethod
    def _a_time(cls, v: object) -> object:
        # a number would be read as seconds after midnight, in UTC (1900 -> 00:31:40+00:00): never what was meant
        if isinstance(v, int | float):
            raise ValueError(f'{v!r} is a number: write the time as "HH:MM", e.g. "19:00"')
        return v

    def covers(self, weekday: int, t: dtime) -> bool:
        """weekday: 0 = Monday, in the site's time zone."""
        if self.start == self.end:
            return _DAYS[weekday] in self.days
        if self.start < self.end:
            return _DAYS[weekday] in self.days and self.start <= t < self.end
        # overnight: the shift belongs to the day it starts on
        if t >= self.start:
            return _DAYS[weekday] in self.days
        return t < self.end and _DAYS[(weekday - 1) % 7] in self.days


class TierConfig(_B):
    """One escalation step: after `after_s` without acknowledgement, tell these roles on these channels."""

    after_s: Float = Field(default=0.0, ge=0)
    min_level: Int = Field(default=1, ge=1, le=3)  # 1 预警, 2 报警, 3 危险: the tier applies from this level
    roles: list[str] = Field(min_length=1)
    channels: list[str] = Field(min_length=1)
    repeat_every_s: Float | None = Field(default=None, gt=0)  # repeat while unacknowledged ...
    repeats: Int = Field(default=0, ge=0, le=20)  # ... this many more times
    # open a hazard record (found, class proposed from the rule's 判定依据) when this tier fires: domain.md §6.3,
    # an alarm still unacknowledged at the enterprise tier becomes a proposed 重大隐患 that a person confirms
    propose_hazard: bool = False

    @model_validator(mode="after")
    def _repeats(self) -> TierConfig:
        if self.repeats and self.repeat_every_s is None:
            raise ValueError(f"repeats: {self.repeats} needs repeat_every_s: without it no repeat is sent")
        if self.repeat_every_s is not None and not self.repeats:
            raise ValueError(
                f"repeat_every_s: {self.repeat_every_s:g} needs repeats (how many more times, 1 to 20): repeats is 0 "
                "by default, and no repeat was sent"
            )
        return self


class PolicyMatch(_B):
    kinds: list[str] | None = None  # device kinds (tower_crane, excavation, formwork, gas); None = all
    categories: list[Literal["value", "health"]] | None = None
    rules: list[str] | None = None  # rule ids; None = all
    min_level: Int = Field(default=1, ge=1, le=3)

    # an empty list matched no alarm, and an unknown kind or rule id (`crane`, `gas.lell`) none of its own: the
    # policy never applied, unsaid
    @field_validator("kinds", "categories", "rules")
    @classmethod
    def _not_empty(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and not v:
            raise ValueError("an empty list matches no alarm: leave it out to match every one")
        return v

    @field_validator("kinds")
    @classmethod
    def _known_kinds(cls, v: list[str] | None) -> list[str] | None:
        for k in v or ():
            if k not in DeviceKind.__members__.values():
                raise ValueError(f"unknown device kind {k!r}; kinds: {', '.join(DeviceKind)}")
        return v

    @field_validator("rules")
    @classmethod
    def _known_rules(cls, v: list[str] | None) -> list[str] | None:
        known = default_rules()
        for rid in v or ():
            if rid not in known:
                near = sorted(r for r in known if r.split(".")[0] == rid.split(".")[0])
                hint = (
                    f"rules of that family: {', '.join(near)}"
                    if near
                    else "rule ids start with tc. exc. fw. gas. health."
                )
                raise ValueError(f"unknown rule {rid!r}; {hint}")  # (as rules.overrides says it)
        return v


class PolicyConfig(_B):
    id: str = Field(pattern=_ID)
    match: PolicyMatch = PolicyMatch()
    tiers: list[TierConfig] = Field(min_length=1)


class HazardNoticeConfig(_B):
    """Who hears about overdue hazard clocks (rectification deadline, 挂牌督办 deadline, same-day report)."""

    roles: list[str] = Field(min_length=1)
    channels: list[str] = Field(min_length=1)


class EscalationConfig(_B):
    people: list[PersonConfig] = []
    duty: list[DutyConfig] = []
    channels: list[ChannelConfig] = []
    policies: list[PolicyConfig] = []  # the first policy whose match fits an alarm applies
    # A flood of alarms must not flood phones: after a message to a channel + recipients, further messages to the
    # same pair within group_window_s are sent as one digest when the window ends.
    group_window_s: Float = Field(default=60.0, ge=0)
    max_attempts: Int = Field(default=8, ge=1, le=50)  # retryable failures, with exponential backoff
    retry_base_s: Float = Field(default=5.0, gt=0)
    retry_max_s: Float = Field(default=300.0, gt=0)
    hazard_notices: HazardNoticeConfig | None = None

    @model_validator(mode="after")
    def _refs(self) -> EscalationConfig:
        people = {p.id for p in self.people}
        if len(people) != len(self.people):
            raise ValueError("escalation.people: duplicate person id")
        chans = [c.id for c in self.channels]
        if len(set(chans)) != len(chans):
            raise ValueError("escalation.channels: duplicate channel id")
        roles = {d.role for d in self.duty}
        for i, d in enumerate(self.duty):
            for p in d.people:
                if p not in people:
                    raise ValueError(f"escalation.duty[{i}].people: unknown person {p!r}")
        targets: list[tuple[str, list[str], list[str]]] = [
            (f"escalation.policies[{i}].tiers[{j}]", t.roles, t.channels)
            for i, pol in enumerate(self.policies)
            for j, t in enumerate(pol.tiers)
        ]
        if self.hazard_notices:
            targets.append(("escalation.hazard_notices", self.hazard_notices.roles, self.hazard_notices.channels))
        for at, rs, cs in targets:
            for r in rs:
                if r not in roles:
                    raise ValueError(f"{at}.roles: no duty entry for role {r!r}; roles on the roster: {sorted(roles)}")
            for c in cs:
                if c not in chans:
                    raise ValueError(f"{at}.channels: unknown channel {c!r}; defined: {chans}")
            # an email reaches only the addresses it names: someone on duty without one would hear nothing from a
            # tier of emails only (a siren, a webhook or a group robot beside it reaches the site or the group)
            reach = [ch for ch in self.channels if ch.id in cs]
            for mail in (ch.id for ch in reach if ch.type == "email" and all(c.addresses_people for c in reach)):
                for duty in (d for d in self.duty if d.role in rs):
                    for who in (x for x in self.people if x.id in duty.people and not x.email):
                        raise ValueError(
                            f"{at}.channels: {mail!r} is an email channel and {who.id!r} ({who.name}), on duty as "
                            f"{duty.role!r}, has no email: give them one, or the role a channel that reaches them"
                        )
        ids = [p.id for p in self.policies]
        if len(set(ids)) != len(ids):
            raise ValueError("escalation.policies: duplicate policy id")
        return self


class UserConfig(_B):
    """A login of the HTTP API / console. The password comes from an environment variable, never the YAML."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")
    role: Literal["viewer", "officer", "manager", "admin"]
    password_env: str = Field(pattern=_ENV)
    display_name: str = ""

    @property
    def role_enum(self) -> Role:
        return Role.parse(self.role)


class ApiTokenConfig(_B):
    """A machine client (a platform pulling alarms, a script): a long random token from the environment, sent as
    `Authorization: Bearer <token>`; it never expires, so rotate it by changing the variable and restarting."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")
    role: Literal["viewer", "officer", "manager", "admin"]
    token_env: str = Field(pattern=_ENV)

    @property
    def role_enum(self) -> Role:
        return Role.parse(self.role)


class AuthConfig(_B):
    users: list[UserConfig] = []
    tokens: list[ApiTokenConfig] = []
    session_ttl_s: Float = Field(default=12 * 3600, gt=0)  # absolute: a shift plus handover, however active
    # idle: a session no request used for this long ends (an open console polls, so only abandoned ones end)
    session_idle_s: Float = Field(default=30 * 60, gt=0)
    max_failed_logins: Int = Field(default=5, ge=1)  # per user per 15 min, then refused until the window passes

    @field_validator("users")
    @classmethod
    def _unique(cls, v: list[UserConfig]) -> list[UserConfig]:
        names = [u.name for u in v]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"duplicate user name(s): {sorted(dup)}")
        return v

    @model_validator(mode="after")
    def _distinct(self) -> AuthConfig:
        names = [u.name for u in self.users] + [t.name for t in self.tokens]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"auth: a name is used twice (users and tokens share names): {sorted(dup)}")
        return self


class WarningValues(_B):
    """The design 预警值 of one monitored quantity of an excavation point, from the monitoring plan (GB 50497-2019
    §8.0.1: the designer sets them; §8.0.3: a cumulative value AND a rate, either one triggers).

    Values are in the quantity's catalog unit (mm for displacements, m for groundwater level). With both
    `cumulative` and `cumulative_percent_h`, the smaller governs (domain.md §2.3: min(absolute, %h x h)).
    """

    cumulative: Float | None = Field(default=None, gt=0)  # 累计变化量 预警值
    cumulative_percent_h: Float | None = Field(default=None, gt=0, le=100)  # as % of the excavation depth h
    rate_per_day: Float | None = Field(default=None, gt=0)  # 变化速率 预警值, per day
    source: Source  # the monitoring plan: "XX基坑监测方案 表3", confidence P

    @model_validator(mode="after")
    def _some(self) -> WarningValues:
        if self.cumulative is None and self.cumulative_percent_h is None and self.rate_per_day is None:
            raise ValueError("give at least one of cumulative, cumulative_percent_h, rate_per_day")
        return self
