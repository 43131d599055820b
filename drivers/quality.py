"""Quality per point from the device's own words: status codes, sentinel values, fault and warm-up flags."""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

from telemetry.reading import Quality

_Strict = ConfigDict(extra="forbid", frozen=True)


class QualityName(StrEnum):
    GOOD = "good"
    UNCERTAIN = "uncertain"
    BAD = "bad"  # a fault: the value is invalid and the point's sensor needs attention
    NOT_READY = "not_ready"  # warming up (预热), calibrating (标定), maintenance: invalid, but no fault

    @property
    def quality(self) -> Quality:
        return _Q[self]


_Q = {
    QualityName.GOOD: Quality.GOOD,
    QualityName.UNCERTAIN: Quality.UNCERTAIN,
    QualityName.BAD: Quality.BAD,
    QualityName.NOT_READY: Quality.NOT_READY,
}


def code_key(v: Any) -> str | None:
    """A status code as the profile writes it: 2, 2.0 and "2" are "2"; "N" stays "N"; anything else is None."""
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return str(int(v)) if math.isfinite(v) and v == int(v) else repr(v)
    if isinstance(v, str):
        return v.strip()
    return None


class QualityMap(BaseModel):
    """Status codes of a device -> quality of the point they describe; a code not listed gets `other`."""

    model_config = _Strict

    codes: dict[str, QualityName]
    other: QualityName = QualityName.BAD  # an undocumented code is not trusted

    @field_validator("codes", mode="before")
    @classmethod
    def _keys(cls, v: Any) -> Any:
        # YAML reads `0: good` with an integer key; keep every key as the code's text
        if isinstance(v, dict):
            _no_bool_keys(v, "status code")
            return {code_key(k) if not isinstance(k, str) else k: q for k, q in v.items()}
        return v

    def quality_of(self, code: Any) -> Quality:
        key = code_key(code)
        name = self.codes.get(key) if key is not None else None
        return (name or self.other).quality


class Sentinels:
    """Values that mean "no value" (`--`, `ERR`, -9999, 0x7FFF): matched on the raw value before any scaling."""

    def __init__(self, table: dict[str, QualityName]) -> None:
        self.text = {k: q.quality for k, q in table.items()}
        self.numbers: dict[float, Quality] = {}
        for k, q in table.items():
            try:
                x = float(k)
            except ValueError:
                continue
            if math.isfinite(x):
                self.numbers[x] = q.quality

    def __bool__(self) -> bool:
        return bool(self.text)

    def match(self, v: Any) -> Quality | None:
        if isinstance(v, str):
            return self.text.get(v.strip())
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return self.numbers.get(v)
        return None


def sentinel_table(v: Any) -> Any:
    """Pydantic before-validator: YAML number keys (0x7FFF, -9999) become their text."""
    if isinstance(v, dict):
        _no_bool_keys(v, "sentinel")
        return {(k if isinstance(k, str) else repr(k) if isinstance(k, float) else str(k)): q for k, q in v.items()}
    return v


def _no_bool_keys(table: dict[Any, Any], what: str) -> None:
    # PyYAML (YAML 1.1) reads on, off, yes, no, true, false as booleans: `{on: good}` became the code "1" (or the
    # text "True"), and a device that sends "on" matched nothing
    for k in table:
        if isinstance(k, bool):
            raise ValueError(
                f"{k!r} as a {what} is a YAML boolean (on, off, yes, no, true, false): quote what the device sends, "
                "e.g. 'on', or write the number"
            )
