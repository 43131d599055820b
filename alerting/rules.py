"""Alarm rules as data: levels (预警 / 报警 / 危险), thresholds with provenance, deadband and delays; default packs."""

from __future__ import annotations

from enum import IntEnum, StrEnum
from functools import cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from telemetry import quantities, yamltext
from telemetry.yamlnum import Float, Int, NoBool

PACK_DIR = Path(__file__).parent / "packs"


class Level(IntEnum):
    """Alarm levels used on Chinese sites; NORMAL is the absence of an alarm."""

    NORMAL = 0
    PREWARNING = 1  # 预警
    ALARM = 2  # 报警
    DANGER = 3  # 危险 (危险报警 / 控制值)

    @property
    def zh(self) -> str:
        return ("正常", "预警", "报警", "危险")[self]


class Confidence(StrEnum):
    """How sure `domain.md` is of a number (its tags)."""

    PRIMARY = "P"  # seen in the official text
    SECONDARY_PLUS = "S+"  # two or more consistent secondary sources
    SECONDARY = "S"
    RECOLLECTION = "R"  # not confirmed: verify before relying on it
    RECOMMENDATION = "rec"  # an engineering recommendation of domain.md, not a standard
    UNKNOWN = "U"  # no source: the project must set the value


class RuleKind(StrEnum):
    """The device kinds of `telemetry.kinds.DeviceKind` plus ANY, for device-health rules that fit every kind.

    A StrEnum with the same values: `rule.kind == "gas"`, `rule.kind.value` and `rule.applies_to(device_kind)`
    work as with DeviceKind (a test keeps the member list in step with DeviceKind)."""

    TOWER_CRANE = "tower_crane"
    CONSTRUCTION_ELEVATOR = "construction_elevator"
    EXCAVATION = "excavation"
    FORMWORK = "formwork"
    GAS = "gas"
    ENVIRONMENT = "environment"
    ANY = "any"


Measure = Literal[
    "value",  # the reading itself
    "percent_of_design",  # value / device.design_values[quantity] x 100; no design value: inactive on that device
    "change_from_baseline",  # value - the point's stored baseline (初始值); no baseline: inactive until one is set
    # day-normalised rate in unit/d: the least-squares slope over the trailing window_s (default 1 day) when the
    # window holds 3 or more readings (automated gauges), else the change since the previous valid reading divided
    # by the days between them (surveys: GB 50497 practice, domain.md §2.4)
    "rate_per_day",
    # excavation points (GB 50497-2019 §8.0.3): the change from the point's baseline, and its rate (as rate_per_day),
    # as a % of the point's design 预警值 (`devices[].warning_values`); no 预警值: inactive on that device
    "percent_of_warning",
    "rate_percent_of_warning",
    "window_mean",  # time-weighted mean over window_s (PC-TWA 8 h = 28800 s, PC-STEL 15 min = 900 s)
    "frozen",  # health: how many consecutive samples were identical while the device is up (threshold = count)
    "calendar",  # health: days past the device's calibration_due, evaluated by Evaluator.tick
    # health, quantity "*": 1 while a measured point's readings are BAD (the device's status code, a sentinel, NaN),
    # 0 again on its next valid reading; one condition per point (ISA-18.2: bad quality is a fault, not a value)
    "point_fault",
]
ANY_POINT = "*"  # the quantity of point_fault rules: every measured (non-state) quantity of the device
CALENDAR_QUANTITY = "calibration_due"  # the pseudo-quantity of calendar rules (not a measured quantity)


class Source(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    standard: str
    clause: str | None = None
    confidence: Confidence
    note: str | None = None

    def cite(self) -> str:
        clause = f" {self.clause}" if self.clause else ""
        return f"{self.standard}{clause} [{self.confidence.value}]"


class Threshold(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    level: Level
    value: float | None  # None: no default exists; the project must supply it (check-config says so)
    source: Source
    # a Device field (only wind_limit_ms): the effective threshold is the stricter of `value` and the device's own
    # value when the device has one (a crane manual's working-limit wind speed below the standard's figure)
    stricter_of_device: Literal["wind_limit_ms"] | None = None
    # the level is entered only when this many consecutive evaluations (readings, surveys) reach the threshold
    # ("rate above 70 % of the 预警值 on 3 consecutive surveys"); holding the level needs no run
    consecutive: int = Field(default=1, ge=1, le=100)
    consecutive_source: Source | None = None  # where the count comes from (required when consecutive > 1)
    # entered at the value (true), or only beyond it (false) where the source's limit is strict: O2 deficiency is
    # < 19.5 % and a reading of 19.5 % is compliant (domain.md §4.2)
    inclusive: bool = True

    @model_validator(mode="after")
    def _check(self) -> Threshold:
        if self.level is Level.NORMAL:
            raise ValueError("a threshold needs a level above NORMAL")
        if self.value is None and self.source.confidence is not Confidence.UNKNOWN:
            raise ValueError("a threshold without a value must be tagged confidence U (project value required)")
        if self.consecutive > 1 and self.consecutive_source is None:
            raise ValueError("a consecutive count needs its consecutive_source (every number has a source)")
        return self


class HazardBasis(BaseModel):
    """The 重大事故隐患判定标准 article an alarm of this rule may point to. A person confirms it (domain.md §5)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal["2024", "2022"]  # 2024 = 建质规〔2024〕5号 (current); 2022 = 建质规〔2022〕2号 (repealed)
    article: str  # e.g. "8(四)"
    text_zh: str  # a short paraphrase of the article (domain.md §5), not a quotation
    note: str | None = None  # why this article / item was chosen


class Condition(BaseModel):
    """A gate on the device's latest reading of another quantity: `quantity op value`."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)  # `x >= nan` is never true

    quantity: str
    op: Literal["<=", ">=", "=="]
    value: Float
    source: Source | None = None  # where the gate value comes from (packs always say; overrides carry their own)

    @model_validator(mode="after")
    def _check(self) -> Condition:
        _known_quantity(self.quantity)
        return self

    def holds(self, v: float) -> bool:
        if self.op == "<=":
            return v <= self.value
        if self.op == ">=":
            return v >= self.value
        return v == self.value


class ConsecutiveDays(BaseModel):
    """Rate rules: `level` is also reached while each of `days` site days in a row had a rate above `fraction` x that
    level's threshold (alerting/measures.py `days_run`; a day without data breaks the run). GB 50497-2009's table
    note: a rate above 70 % of its 预警值 on 3 consecutive days warns as reaching the 预警值 does (domain.md §2.3 [R],
    a placeholder the project sets)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    days: Int = Field(ge=1, le=30)
    fraction: Float = Field(gt=0, le=1)
    # the level the run reaches (报警: what reaching the 预警值 raises, §8.0.8)
    level: Annotated[Level, NoBool] = Level.ALARM
    inclusive: bool = False  # "exceeds" 70 %: at it is not above it; true for a plan that says "reaches"
    source: Source | None = None


def _known_quantity(name: str) -> None:
    try:
        quantities.lookup(name)
    except KeyError as err:
        raise ValueError(str(err.args[0])) from None


class Rule(BaseModel):
    """A threshold rule on one quantity of one device kind. `high`: alarm at or above; `low`: at or below.

    What is compared with the thresholds is the rule's `measure` of the reading (see `Measure`), in
    `measured_unit`; deadband and thresholds are in that unit too. A per-device override keeps the rule id.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z0-9_.]+$")
    title_zh: str
    title_en: str
    kind: RuleKind
    quantity: str
    direction: Literal["high", "low", "abs"]  # abs: |value| against the thresholds (tilt either way)
    thresholds: list[Threshold] = Field(min_length=1)
    measure: Measure = "value"
    window_s: float | None = Field(default=None, gt=0)  # rate_per_day (default 86400) and window_mean (required)
    consecutive_days: ConsecutiveDays | None = None  # rate rules only
    # evaluated only while every condition holds on the device's latest readings; while closed the level is kept
    when: list[Condition] = []
    deadband: float = Field(default=0.0, ge=0)  # in measured_unit: how far back a value must come to clear
    on_delay_s: float = Field(default=0.0, ge=0)  # the condition must hold this long before the level is raised
    off_delay_s: float = Field(default=0.0, ge=0)  # ... and be gone this long before it is lowered
    # value: a physical-value alarm (suppressed while the device is offline or out of service);
    # health: the monitoring device itself (stale, frozen, fault flag, calibration, limiter bypass)
    category: Literal["value", "health"] = "value"
    latch: bool = False  # stays latched after the condition clears until someone resets it after an inspection
    # value alarms are suppressed by design while their device is offline or out of service; a danger a person
    # found on inspection is not (the device being silent says nothing against it)
    suppress_by_design: bool = True
    hazard_basis: HazardBasis | None = None  # proposed 判定依据 when the alarm becomes a hazard record

    @model_validator(mode="after")
    def _check(self) -> Rule:
        if self.measure == "calendar":
            if self.quantity != CALENDAR_QUANTITY:
                raise ValueError(f"a calendar rule has quantity {CALENDAR_QUANTITY!r}")
        elif self.measure == "point_fault":
            if self.quantity != ANY_POINT:
                raise ValueError(f"a point_fault rule has quantity {ANY_POINT!r} (it watches every measured point)")
        else:
            _known_quantity(self.quantity)
        if self.measure in ("frozen", "calendar", "point_fault") and self.category != "health":
            raise ValueError(f"a {self.measure} rule is a device-health rule (category: health)")
        if self.measure == "window_mean" and self.window_s is None:
            raise ValueError("a window_mean rule needs window_s (PC-TWA 28800, PC-STEL 900)")
        if self.window_s is not None and self.measure not in ("rate_per_day", "window_mean", "rate_percent_of_warning"):
            raise ValueError("window_s applies to rate_per_day, rate_percent_of_warning and window_mean rules only")
        cd = self.consecutive_days
        if cd is not None:
            if self.measure not in ("rate_per_day", "rate_percent_of_warning") or self.direction != "abs":
                # the daily rates are compared by magnitude (|rate|), which only an abs rule means
                raise ValueError("consecutive_days applies to rate rules with direction abs only")
            if cd.level not in {t.level for t in self.thresholds}:
                raise ValueError(f"consecutive_days.level {int(cd.level)}: the rule has no threshold at that level")
        levels = [t.level for t in self.thresholds]
        if levels != sorted(set(levels)):
            raise ValueError("thresholds must be listed once per level, lowest level first")
        values = [t.value for t in self.thresholds if t.value is not None]
        ordered = sorted(values, reverse=self.direction == "low")
        if values != ordered:
            raise ValueError(
                f"threshold values must get {'lower' if self.direction == 'low' else 'higher'} with the level: {values}"
            )
        return self

    @property
    def unit(self) -> str:
        """The unit of the rule's quantity ("d" for calendar rules)."""
        if self.measure == "calendar":
            return "d"
        if self.measure == "point_fault":
            return "state"
        return quantities.lookup(self.quantity).unit

    @property
    def measured_unit(self) -> str:
        """The unit of what is compared with the thresholds (and of Transition.value)."""
        if self.measure in ("percent_of_design", "percent_of_warning", "rate_percent_of_warning"):
            return "%"
        if self.measure == "rate_per_day":
            return f"{self.unit}/d"
        if self.measure == "frozen":
            return "samples"
        return self.unit

    @property
    def window(self) -> float:
        """The trailing window of rate and window_mean rules, in seconds."""
        return self.window_s if self.window_s is not None else 86400.0

    def applies_to(self, kind: str) -> bool:
        return self.kind is RuleKind.ANY or self.kind == kind

    def needs_project_values(self) -> list[Level]:
        return [t.level for t in self.thresholds if t.value is None]


class _Pack(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: RuleKind
    rules: list[Rule]


class PackError(ValueError):
    """A rule pack that does not load; the message names the file and the rule."""


def load_pack(path: Path) -> list[Rule]:
    try:
        pack = _Pack.model_validate(yamltext.safe_load(path.read_text(encoding="utf-8")))
    except ValidationError as err:
        lines = [f"{path}: invalid rule pack"]
        lines += [f"  {'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in err.errors()]
        raise PackError("\n".join(lines)) from None
    for r in pack.rules:
        if r.kind != pack.kind:
            raise PackError(f"{path}: rule {r.id} is for {r.kind}, the pack for {pack.kind}")
    return pack.rules


@cache
def default_rules() -> dict[str, Rule]:
    """Every rule of the default packs, by id."""
    out: dict[str, Rule] = {}
    for f in sorted(PACK_DIR.glob("*.yaml")):
        for r in load_pack(f):
            if r.id in out:
                raise PackError(f"{f}: rule id {r.id} is already defined")
            out[r.id] = r
    return out
