"""Alarm rules as data: levels (预警 / 报警 / 危险), thresholds with provenance, deadband and delays; default packs."""

from __future__ import annotations

from enum import IntEnum, StrEnum
from functools import cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from drivers.profile import DeviceKind
from gateway import quantities

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

    @model_validator(mode="after")
    def _check(self) -> Threshold:
        if self.level is Level.NORMAL:
            raise ValueError("a threshold needs a level above NORMAL")
        if self.value is None and self.source.confidence is not Confidence.UNKNOWN:
            raise ValueError("a threshold without a value must be tagged confidence U (project value required)")
        return self


class HazardBasis(BaseModel):
    """The 重大事故隐患判定标准 article an alarm of this rule may point to. A person confirms it (domain.md §5)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal["2024", "2022"]  # 2024 = 建质规〔2024〕5号 (current); 2022 = 建质规〔2022〕2号 (repealed)
    article: str  # e.g. "8(四)"
    text_zh: str


class Rule(BaseModel):
    """A threshold rule on one quantity of one device kind. `high`: alarm at or above; `low`: at or below."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z0-9_.]+$")
    title_zh: str
    title_en: str
    kind: DeviceKind
    quantity: str
    direction: Literal["high", "low", "abs"]  # abs: |value| against the thresholds (tilt either way)
    thresholds: list[Threshold] = Field(min_length=1)
    deadband: float = Field(default=0.0, ge=0)  # in the quantity's unit: how far back a value must come to clear
    on_delay_s: float = Field(default=0.0, ge=0)  # the condition must hold this long before the level is raised
    off_delay_s: float = Field(default=0.0, ge=0)  # ... and be gone this long before it is lowered
    # value: a physical-value alarm (suppressed while the device is offline or out of service);
    # health: the monitoring device itself (stale, frozen, fault flag, calibration, limiter bypass)
    category: Literal["value", "health"] = "value"
    latch: bool = False  # stays latched after the condition clears until someone resets it after an inspection
    hazard_basis: HazardBasis | None = None  # proposed 判定依据 when the alarm becomes a hazard record

    @model_validator(mode="after")
    def _check(self) -> Rule:
        try:
            quantities.lookup(self.quantity)
        except KeyError as err:
            raise ValueError(str(err.args[0])) from None
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
        return quantities.lookup(self.quantity).unit

    def needs_project_values(self) -> list[Level]:
        return [t.level for t in self.thresholds if t.value is None]


class _Pack(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: DeviceKind
    rules: list[Rule]


class PackError(ValueError):
    """A rule pack that does not load; the message names the file and the rule."""


def load_pack(path: Path) -> list[Rule]:
    try:
        pack = _Pack.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    except ValidationError as err:
        lines = [f"{path}: invalid rule pack"]
        lines += [f"  {'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in err.errors()]
        raise PackError("\n".join(lines)) from None
    for r in pack.rules:
        if r.kind is not pack.kind:
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
