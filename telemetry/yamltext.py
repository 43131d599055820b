"""YAML as people write it: a number with leading zeros is decimal (00010 is ten), as YAML 1.2 reads it."""

from __future__ import annotations

import re
from typing import Any, TypeVar, cast

import yaml

# YAML 1.1, which PyYAML implements, reads 0[0-7]+ as octal: a Modicon coil written as manuals print it (00010, coil
# 10) became 8 and the wrong coil was polled, unsaid (00009, not octal, stayed a string and read right). YAML 1.2's
# core schema reads such a number as decimal, and so does every person writing a register, unit id or port.
_OCTAL_1_1 = re.compile(r"[-+]?0[0-7_]+")


def construct_int(loader: yaml.constructor.SafeConstructor, node: yaml.ScalarNode) -> int:
    """`tag:yaml.org,2002:int` with 0[0-7]+ read as decimal; everything else (0x, 0b, 1_000, 1:30) as PyYAML does."""
    text = loader.construct_scalar(node)
    if isinstance(text, str) and _OCTAL_1_1.fullmatch(text):
        return int(text.replace("_", ""), 10)
    value: int = yaml.constructor.SafeConstructor.construct_yaml_int(loader, node)
    return value


_Loader = TypeVar("_Loader", bound=type)


def decimal_ints(loader: _Loader) -> _Loader:
    """`loader` (a SafeLoader class of one's own) with leading-zero integers read as decimal; returned for chaining."""
    cast(Any, loader).add_constructor(
        "tag:yaml.org,2002:int", construct_int
    )  # (on this class only: PyYAML copies the table)
    return loader


class SafeLoader(yaml.CSafeLoader if hasattr(yaml, "CSafeLoader") else yaml.SafeLoader):  # type: ignore[misc]
    """yaml.safe_load's loader (libyaml's parser where PyYAML has it) with decimal leading-zero integers."""


decimal_ints(SafeLoader)


def safe_load(text: str) -> Any:
    """`yaml.safe_load(text)`, a leading-zero integer read as decimal."""
    return yaml.load(text, Loader=SafeLoader)
