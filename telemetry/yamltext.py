"""YAML as people write it, numbers as YAML 1.2 reads them: 00010 is ten, and 19:00 is text (a time), not 1140."""

from __future__ import annotations

import re
from typing import Any, TypeVar, cast

import yaml

# YAML 1.1, which PyYAML implements, reads 0[0-7]+ as octal: a Modicon coil written as manuals print it (00010, coil
# 10) became 8 and the wrong coil was polled, unsaid (00009, not octal, stayed a string and read right). It reads
# 19:00 as base 60 too (1140): a duty shift's `start: 19:00` became the time 00:19. YAML 1.2's core schema reads the
# first as decimal and the second as text, and so does every person writing a register, a unit id or a time.
_OCTAL_1_1 = re.compile(r"[-+]?0[0-7_]+")


def construct_int(loader: yaml.constructor.SafeConstructor, node: yaml.ScalarNode) -> int | str:
    """`tag:yaml.org,2002:int`: 0[0-7]+ as decimal, base 60 as its text; 0x, 0b, 1_000 as PyYAML reads them."""
    text = loader.construct_scalar(node)
    if isinstance(text, str) and ":" in text:
        return text
    if isinstance(text, str) and _OCTAL_1_1.fullmatch(text):
        return int(text.replace("_", ""), 10)
    value: int = yaml.constructor.SafeConstructor.construct_yaml_int(loader, node)
    return value


def construct_float(loader: yaml.constructor.SafeConstructor, node: yaml.ScalarNode) -> float | str:
    """`tag:yaml.org,2002:float`: base 60 (1:30.5) as its text; everything else as PyYAML reads it."""
    text = loader.construct_scalar(node)
    if isinstance(text, str) and ":" in text:
        return text
    value: float = yaml.constructor.SafeConstructor.construct_yaml_float(loader, node)
    return value


class UniqueKeys:
    """A loader mixin (before PyYAML's loader in the bases): a mapping key given twice is a YAML error at its line.

    YAML requires the keys of a mapping to be unique (1.2 §3.2.1.1), and PyYAML kept the last one silently: a second
    `devices:` block replaced the first one's devices, a flow mapping's second `unit_id` the first. Merge keys (`<<`)
    are not counted: a key of the mapping itself overrides a merged one, as YAML's merge says."""

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        # checked here, once per node, before PyYAML splices merged keys into it: a node merged elsewhere first (an
        # anchor that itself merges, `&t4 {<<: *plan, clause: 表4}`) holds its merged keys by the time it is built
        checked: set[int] = self.__dict__.setdefault("_unique_keys_checked", set())
        if id(node) not in checked:
            checked.add(id(node))
            seen: dict[Any, yaml.Node] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = cast(Any, self).construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(key, key_node)
                except TypeError:  # an unhashable key: PyYAML's own error names it
                    continue
                if first is not key_node:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping",
                        node.start_mark,
                        f"found key {key!r} twice (first on line {first.start_mark.line + 1}): give each key once",
                        key_node.start_mark,
                    )
        super().flatten_mapping(node)  # type: ignore[misc]


_Loader = TypeVar("_Loader", bound=type)


def yaml12_numbers(loader: _Loader) -> _Loader:
    """`loader` (a SafeLoader class of one's own) reading numbers as above; returned for chaining."""
    add = cast(Any, loader).add_constructor  # (on this class only: PyYAML copies the table)
    add("tag:yaml.org,2002:int", construct_int)
    add("tag:yaml.org,2002:float", construct_float)
    return loader


class SafeLoader(UniqueKeys, yaml.CSafeLoader if hasattr(yaml, "CSafeLoader") else yaml.SafeLoader):  # type: ignore[misc]
    """yaml.safe_load's loader (libyaml's parser where PyYAML has it) reading numbers as YAML 1.2 does, keys once."""


yaml12_numbers(SafeLoader)


def safe_load(text: str) -> Any:
    """`yaml.safe_load(text)`, numbers read as YAML 1.2 reads them; a key given twice in a mapping is an error."""
    return yaml.load(text, Loader=SafeLoader)
