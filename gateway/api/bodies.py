"""Every request body of the API, one pydantic model each (the hazard actions too); unknown fields are refused."""

from datetime import date
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from alerting.hazards import HazardClass, HazardSource, Origin
from alerting.rules import HazardBasis, Level
from gateway.api.deps import INT64_MAX, LAST_DAY

# What SQLite's 64-bit integers and int64 ns can hold, as the paths' ids and the queries' dates are bounded (deps.py):
# beyond them a body is refused naming the field (422), not a 500 from SQLite's OverflowError or from a deadline's
# end of day in ns. A time is not before 1970 (nothing is recorded there; range_ns starts the same day).
Ns = Annotated[int, Field(ge=0, le=INT64_MAX)]
RowRef = Annotated[int, Field(ge=1, le=INT64_MAX)]
Day = Annotated[date, Field(le=LAST_DAY)]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoginBody(Body):
    # bounded: the name goes into the audit table and the failure counter, the password through scrypt
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class AckBody(Body):
    comment: str | None = None


class ShelveBody(Body):
    reason: str = Field(min_length=1)
    duration_s: float = Field(gt=0)


class TextBody(Body):
    text: str = Field(min_length=1)


class ResetBody(Body):
    comment: str = Field(min_length=1)


class SuppressBody(Body):
    reason: str = Field(pattern=r"^[a-z_]{1,32}$")  # e.g. out_of_service, maintenance


class BaselineBody(Body):
    value: float | None = None  # None: the latest reading of the point
    why: str = Field(min_length=1)


class ReasonBody(Body):
    why: str = Field(min_length=1)


class PlanImage(Body):
    filename: str = Field(min_length=1, max_length=200)  # for the audit log
    content_b64: str = Field(min_length=4)


# ---- hazard records: the fields of each operation of alerting.hazards.Hazards (actor and role come from the login).
# Blank texts are refused by the operation itself, with the field's name in its own words.


class ReportHazard(Body):
    unit_name: str
    description: str
    source: HazardSource
    origin: Origin = "manual"
    found_ns: Ns | None = None
    prefecture: str | None = None
    county: str | None = None
    sector: str | None = None
    device: str | None = None
    point: str | None = None
    alarm_id: RowRef | None = None
    alarm_level: Level | None = None
    value: float | None = Field(default=None, allow_inf_nan=False)  # (JSON's NaN and Infinity are read by Python)
    threshold: float | None = Field(default=None, allow_inf_nan=False)
    value_unit: str | None = None
    provenance: str | None = None
    proposed_class: HazardClass | None = None
    proposed_basis: HazardBasis | None = None


class ConfirmHazard(Body):
    klass: HazardClass
    basis: HazardBasis | None = None
    why: str | None = None


class DismissHazard(Body):
    reason: str


class AssignHazard(Body):
    responsible: str
    measures: str
    deadline: Day
    funds: float | None = Field(default=None, allow_inf_nan=False)  # NaN passed "required" and "not negative"
    emergency_plan: str | None = None


class ListHazard(Body):
    level: Literal["county", "city"]
    why: str | None = None


class MarkReported(Body):
    to: str
    reference: str | None = None
    reported_ns: Ns | None = None


class SubmitHazard(Body):
    evidence: str


class AcceptHazard(Body):
    completed_on: Day | None = None
    why: str | None = None
    active_alarm_reason: str | None = None


class RejectHazard(Body):
    reason: str


class ReopenHazard(Body):
    reason: str


# ---- people's field input

MAX_FILE_BYTES = 10 * 1024 * 1024  # a month of daily results for a few hundred points is well under 1 MB


class SurveyUpload(Body):
    filename: str = Field(min_length=1, max_length=200)
    content_b64: str = Field(min_length=4, max_length=MAX_FILE_BYTES * 4 // 3 + 4)
    quantity: str | None = Field(default=None, max_length=64)  # for files without an item column (监测项目)


class Inspection(Body):
    """A danger condition found on inspection at a monitored point (GB 50497-2019 §8.0.9), or its all-clear."""

    device: str = Field(min_length=1, max_length=64)
    finding: str = Field(min_length=1, max_length=500)  # what the inspector saw: shown with the alarm
    danger: bool = True  # false: the condition is gone (the alarm clears)
