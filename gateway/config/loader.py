"""Reading a site YAML: every problem at once, each named by its YAML path and line."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from drivers.modbus.config import ModbusRtuLine
from drivers.profile import (
    ProfileError,
)
from gateway.config.site import SiteConfig
from gateway.siteplan import check_image
from telemetry.yamltext import UniqueKeys, yaml12_numbers

# a cross-field check names its YAML path at the start of its message, before a colon: `devices[3] (PIT-1).topic: `,
# `hazards.timezone: `, `devices[4] (PIT-ZL).warning_values.strut_force: ` (the id after an index is for the reader)
_CROSS = re.compile(r"^(?P<path>[a-z_]+(?:\[\d+\](?: \([^)]*\))?|\.[A-Za-z0-9_]+)*)(?::|$)")
_PART = re.compile(r"\[(\d+)\](?: \([^)]*\))?|([A-Za-z0-9_]+)")


class ConfigError(Exception):
    """A site config that cannot be used; the message names the file, YAML path and line."""


class _Strict(UniqueKeys):
    """A scalar its tag cannot build (2027-02-30, `!!int abc`) and a key given twice (telemetry/yamltext.py) are YAML
    errors with their line, not a Python one or the last value."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)  # type: ignore[misc]
        # PyYAML's constructors fail this way on `!!int ''` (IndexError), `!!bool x` (KeyError), `!!timestamp x`
        except (ValueError, LookupError, TypeError, AttributeError) as err:
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read as {node.tag}: {err}", node.start_mark
            ) from None


class _SafeLoader(_Strict, yaml.SafeLoader):
    """yaml.safe_load in Python, strict: its errors show the line they are on, and it composes the line index."""


yaml12_numbers(_SafeLoader)  # 010 is ten, 19:00 a time (telemetry/yamltext.py), in both loaders


# libyaml's scanner and parser, where PyYAML was built with it, read a site file first: the pure-Python ones make an
# object per token, event and mark. A 2 000-device site (220 kB) took 1.1 s to read and left the process 2 MB larger
# at idle; now 0.2 s. Its messages lack the excerpt of the line, so a file it refuses is read again the Python way
# for the message, and the line index (composed in Python) is made only for a file with problems to name.
_FastLoader: type = (
    yaml12_numbers(type("_FastLoader", (_Strict, yaml.CSafeLoader), {}))
    if hasattr(yaml, "CSafeLoader")
    else _SafeLoader
)


def _line_index(
    node: yaml.Node, path: tuple[Any, ...], out: dict[tuple[Any, ...], int], seen: set[int] | None = None
) -> None:
    # an alias repeats a node already indexed at its anchor (and `&a [*a]` is a cycle): index each node once
    seen = set() if seen is None else seen
    if id(node) in seen:
        return
    seen.add(id(node))
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode):
                _line_index(v, (*path, k.value), out, seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            _line_index(v, (*path, i), out, seen)


_PLAIN_KEY = re.compile(r"[\w\-\[\]]+")  # field names and pydantic's `[key]`; any other key is quoted


def _fmt_loc(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for x in loc:
        if isinstance(x, int):
            parts.append(f"[{x}]")
        elif not _PLAIN_KEY.fullmatch(str(x)):  # a key with a newline, a dot or ': ' would garble the path
            parts.append(f"[{str(x)!r}]")
        else:
            parts.append(("." if parts else "") + str(x))
    return "".join(parts) or "(top level)"


def _clean_loc(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    # pydantic puts the union tag (e.g. 'modbus_tcp') into the path of discriminated unions: drop it
    tags = {"modbus_tcp", "modbus_rtu", "modbus_rtu_over_tcp", "influxdb_v1", "influxdb_v2"}
    return tuple(x for x in loc if not (isinstance(x, str) and x in tags))


def _load_slow(path: Path, text: str) -> Any:
    try:
        return yaml.load(text, Loader=_SafeLoader)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    except RecursionError:  # the parser recurses once per level of nesting
        raise ConfigError(f"{path}: not valid YAML: nested too deeply") from None


def _lines(text: str) -> dict[tuple[Any, ...], int]:
    """Each YAML path's line, for a file with problems to name (composed again: a valid file never needs it)."""
    index: dict[tuple[Any, ...], int] = {}
    try:
        node = yaml.compose(text, Loader=_SafeLoader)
    except (yaml.YAMLError, RecursionError):  # libyaml read it; nested past Python's limit: the problems go unlined
        return index
    if node is not None:
        _line_index(node, (), index)
    return index


def load_config(path: str | Path) -> SiteConfig:
    """Load and validate a site YAML. Raises ConfigError with every problem, each with its YAML path and line."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:  # (GBK from a Chinese Windows editor, most often): where, not a traceback
        at = raw.count(b"\n", 0, err.start) + 1
        raise ConfigError(
            f"{path}: not UTF-8: byte {raw[err.start]:#04x} at line {at} (save the file as UTF-8)"
        ) from None
    try:
        data = yaml.load(text, Loader=_FastLoader)
    except (yaml.YAMLError, RecursionError):
        data = _load_slow(path, text)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with 'site', 'devices', 'sink', ...")
    base = path.resolve().parent
    if isinstance(data.get("profile_dirs"), list):
        data["profile_dirs"] = [
            str(base / p) if isinstance(p, str) and not p.startswith("/") else p for p in data["profile_dirs"]
        ]
    for b in data["brokers"] if isinstance(data.get("brokers"), list) else []:
        tls = b.get("tls") if isinstance(b, dict) else None
        if isinstance(tls, dict):
            for k in ("ca_file", "cert_file", "key_file"):
                if isinstance(tls.get(k), str) and not tls[k].startswith("/"):
                    tls[k] = str(base / tls[k])
    up = data.get("uplink")
    if isinstance(up, dict):
        for k in ("ca_file", "cert_file", "key_file"):
            if isinstance(up.get(k), str) and not up[k].startswith("/"):
                up[k] = str(base / up[k])
    try:
        cfg = SiteConfig.model_validate(data)
    except ValidationError as err:
        msgs, index = [f"{path}: {err.error_count()} problem(s)"], _lines(text)
        for e in err.errors():
            loc = _clean_loc(tuple(e["loc"]))
            msg = e["msg"].removeprefix("Value error, ")
            m = _CROSS.match(msg)
            if not loc and m:  # cross-field checks name their path at the start of the message
                loc = tuple(int(i) if i else name for i, name in _PART.findall(m["path"]))
                msg = msg[m.end() :].lstrip()
            line = None
            for n in range(len(loc), -1, -1):
                if loc[:n] in index:
                    line = index[loc[:n]]
                    break
            where = f"{_fmt_loc(loc)} (line {line})" if line else _fmt_loc(loc)
            if e["type"] == "extra_forbidden":
                msg = "unknown field (check the spelling; see README, configuration reference)"
            elif e["type"] == "missing":
                msg = "required field is missing"
            got = e.get("input")
            if e["type"] not in ("missing", "extra_forbidden") and not isinstance(got, (dict, list)):
                msg += f"; got {got!r}"
            if e["type"] != "value_error":  # pydantic quotes some inputs (a union tag) with their newlines raw
                msg = msg.replace("\r", "\\r").replace("\n", "\\n")
            msgs.append(f"  {where}: {msg}")
        raise ConfigError("\n".join(msgs)) from None
    except ProfileError as err:
        raise ConfigError(str(err)) from None
    # relative paths are relative to the config file, so a site folder can move as a whole
    updates: dict[str, Any] = {}
    if not cfg.spool.dir.is_absolute():
        updates["spool"] = cfg.spool.model_copy(update={"dir": base / cfg.spool.dir})
    second = cfg.second_sink
    if second is not None:
        dir2 = second.spool.dir if second.spool.dir.is_absolute() else base / second.spool.dir
        first = cfg.spool.dir if cfg.spool.dir.is_absolute() else base / cfg.spool.dir
        if dir2.resolve() == first.resolve():  # as written they may differ and still be one folder
            raise _one(
                path, text, ("second_sink", "spool", "dir"), f"{dir2} is spool.dir's folder; each sink has its own"
            )
        updates["second_sink"] = second.model_copy(update={"spool": second.spool.model_copy(update={"dir": dir2})})
    if not cfg.alarms.state_file.is_absolute():
        updates["alarms"] = cfg.alarms.model_copy(update={"state_file": base / cfg.alarms.state_file})
    new_lines = []
    for ln in cfg.lines:
        if isinstance(ln, ModbusRtuLine) and not ln.port.startswith("/"):
            ln = ln.model_copy(update={"port": str(base / ln.port)})
        new_lines.append(ln)
    updates["lines"] = new_lines
    plan = cfg.site.plan
    if plan is not None and plan.image is not None and not plan.image.is_absolute():
        plan = plan.model_copy(update={"image": base / plan.image})
        updates["site"] = cfg.site.model_copy(update={"plan": plan})
    try:
        check_image(plan)
    except ValueError as err:
        raise _one(path, text, ("site", "plan", "image"), str(err).partition(": ")[2]) from None
    return cfg.model_copy(update=updates)


def _one(path: Path, text: str, loc: tuple[Any, ...], what: str) -> ConfigError:
    """A problem found after the models' checks, worded like theirs: the file, the YAML path and line, what is wrong."""
    line = _lines(text).get(loc)
    return ConfigError(f"{path}: 1 problem(s)\n  {_fmt_loc(loc)}{f' (line {line})' if line else ''}: {what}")
