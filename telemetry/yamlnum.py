"""YAML numbers: a YAML boolean (yes, on, true) for a number is refused, never read as 1; a scale is not 0."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator

# pydantic takes True for 1 and False for 0 in an int or float field, and YAML 1.1 (PyYAML) reads yes, no, on, off,
# true and false as booleans: `unit_id: yes` polled unit 1 and `thresholds: {2: yes}` put gas.lel's 报警 at 1 %LEL.
# A quoted number ('2') is still read as the number.


def not_a_bool(v: Any) -> Any:
    """`v` unchanged unless it is a boolean (raises ValueError)."""
    if isinstance(v, bool):
        raise ValueError("a YAML boolean (yes, no, on, off, true, false) is not a number: write the number")
    return v


NoBool = BeforeValidator(not_a_bool)
Int = Annotated[int, NoBool]
Float = Annotated[float, NoBool]


def not_zero(v: float) -> float:
    """A scale: 0 made every value of the point 0 (a strut force that never alarms)."""
    if v == 0:
        raise ValueError("a scale of 0 makes every value 0: give the value's resolution (e.g. 0.1 or 0.01)")
    return v


Scale = Annotated[float, NoBool, AfterValidator(not_zero)]
