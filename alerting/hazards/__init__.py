"""Hazard (隐患) records: the model, citing the criteria, the records in SQLite, their clocks and the workflow."""

from alerting.hazards.citation import CRITERIA_2024_ISSUED, CRITERIA_DOC, basis_citation, normalize_article
from alerting.hazards.model import (
    ClockKind,
    DueClock,
    HazardBadRequest,
    HazardClass,
    HazardConfig,
    HazardError,
    HazardSource,
    ListingLevel,
    Origin,
    Status,
)
from alerting.hazards.workflow import Hazards

__all__ = [
    "CRITERIA_2024_ISSUED", "CRITERIA_DOC", "ClockKind", "DueClock", "HazardBadRequest", "HazardClass",
    "HazardConfig", "HazardError", "HazardSource", "Hazards", "ListingLevel", "Origin", "Status", "basis_citation",
    "normalize_article",
]  # fmt: skip
