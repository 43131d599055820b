"""What a hazard record is: its states, classes and sources, the refusals, the workflow's settings, a due clock."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from telemetry.yamlnum import Int
from telemetry.zones import iana_zone

NS = 1_000_000_000

Status = Literal["found", "confirmed", "dismissed", "rectifying", "submitted", "closed", "reopened"]
HazardClass = Literal["general", "major"]
HazardSource = Literal["self_check", "inspection"]
Origin = Literal["alarm", "manual"]
ListingLevel = Literal["none", "county", "city"]
ClockKind = Literal["rectify_deadline", "listing_deadline", "report_same_day"]


class HazardError(Exception):
    """A refused hazard operation: wrong state (the message says which states allow it) or a missing field."""


class HazardBadRequest(ValueError, HazardError):
    """Input that is never valid (a missing or malformed field), as opposed to a state that forbids the action:
    the API answers 422 for these (ValueError first in the bases) and 409 for the rest."""


class HazardConfig(BaseModel):
    """Per-jurisdiction settings of the hazard workflow and the header of the exported forms."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # seed 004 [P]: 重大隐患"市级60日、县级30日"闭环整改; local campaign rules, so configurable per jurisdiction
    county_listing_days: Int = Field(default=30, ge=1)
    city_listing_days: Int = Field(default=60, ge=1)
    timezone: str = "Asia/Shanghai"  # "same day" and deadline dates are local days
    region_prefecture: str | None = None  # 地（州、市）
    region_county: str | None = None  # 县（市、区）
    sector: str = "房屋市政工程施工"  # 行业领域
    reporting_unit: str | None = None  # 报送单位
    contact: str | None = None  # 联系人
    contact_phone: str | None = None  # 联系方式

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        iana_zone(v)
        return v


@dataclass(frozen=True, slots=True)
class DueClock:
    """A running hazard clock; `overdue` once `now >= due_ns` (due_ns is the first instant past the deadline)."""

    hazard_id: int
    kind: ClockKind
    due_ns: int
    overdue: bool


def need(value: str | None, name: str) -> str:
    if value is None or not value.strip():
        raise HazardBadRequest(f"{name} is required")
    return value.strip()
