"""Fuzzing the config loader: random YAML and mutated demo sites give a SiteConfig or a ConfigError naming where."""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from gateway.cli import check_config, sample_problems
from gateway.config import ConfigError, SiteConfig, load_config

DEMO_FILE = Path(__file__).parents[2] / "simulators" / "sites" / "demo.yaml"
DEMO = yaml.safe_load(DEMO_FILE.read_text(encoding="utf-8"))
DEMO["site"]["plan"]["image"] = str(DEMO_FILE.parent / DEMO["site"]["plan"]["image"])  # the copies live elsewhere
DEMO_TEXT = DEMO_FILE.read_text(encoding="utf-8").replace(
    "image: demo-plan.png", f"image: {DEMO_FILE.parent / 'demo-plan.png'}"
)
# YAML parsing is pure Python and takes ~50-200 ms for the demo site on a loaded machine: few, rich examples
FUZZ = settings(derandomize=True, database=None, deadline=None, max_examples=60)
Loc = tuple[str | int, ...]


@pytest.fixture(scope="module")
def site_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield tmp_path_factory.mktemp("fuzz_config") / "site.yaml"


def load(path: Path, text: str) -> SiteConfig | str:
    """The verdict of `sitegw check-config`: a config whose plan prints, or the ConfigError message. Any other
    exception fails the test (the whole file: devices, rules, escalation, hazards, auth)."""
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        cfg = load_config(path)
    except ConfigError as err:
        msg = str(err)
        assert_names_where(msg, path)
        return msg
    assert check_config(cfg, path).startswith(f"{path}: OK")  # the resolved plan prints, rules included
    sample_problems(cfg)
    return cfg


_PROBLEM = re.compile(r"^  (?P<where>\(top level\)|[^\s(].*?)(?: \(line (?P<line>\d+)\))?: (?P<msg>.*)$")
_NAMED = re.compile(r"^(lines|brokers|devices|[^:]+\.yaml): ")  # what a cross-field check without an index names


def assert_names_where(msg: str, path: Path) -> None:
    """A ConfigError names the file and, for every problem, the YAML path (or the YAML error's line)."""
    assert msg.startswith(f"{path}: "), msg
    rest = msg[len(f"{path}: ") :]
    if rest.startswith("not valid YAML: "):
        assert re.search(r"line \d+|position \d+", rest) or rest.endswith("nested too deeply"), msg
        return
    if rest.startswith("expected a mapping with 'site'"):
        return  # the document root is not a mapping: the place is the whole file
    head, _, body = rest.partition("\n")
    n = re.fullmatch(r"(\d+) problem\(s\)", head)
    assert n, msg
    lines = body.split("\n")
    if "invalid profile" in lines[0]:
        lines = lines[:1]  # a site profile file's own problems follow, each on its own line
    else:
        assert len(lines) == int(n[1]), msg  # one problem per line
    for line in lines:
        m = _PROBLEM.match(line)
        assert m, (line, msg)
        assert m["where"] != "(top level)" or _NAMED.match(m["msg"]), (line, msg)


# ---------------------------------------------------------------- random YAML documents

KEYS = [*sorted(SiteConfig.model_fields), "id", "name", "type", "host", "port", "profile", "line", "unit_id"]
KEYS += ["broker", "topic", "timezone", "dir", "max_bytes", "url", "database", "tls", "ca_file", "users", "devices"]
KEYS += ["device_clock", "max_ahead_s", "max_age_s", "timestamp", "format", "pattern", "zone"]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(),
    st.text(max_size=12),
    st.dates(),
    st.sampled_from(["Asia/Shanghai", "Asia", "tower_crane_tcp_v1", "modbus_tcp", "influxdb_v1", "http://x", "5"]),
)
trees = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6) | st.integers(), inner, max_size=4)
    ),
    max_leaves=25,
)


@FUZZ
@given(doc=trees)
def test_random_yaml_documents(site_file: Path, doc: Any) -> None:
    load(site_file, yaml.safe_dump(doc, allow_unicode=True))


TOKENS = [": ", "- ", "\n", "\n  ", "\n    ", "{", "}", "[", "]", ", ", "&a ", "*a", "!!int ", "!!float ", "!!binary "]
TOKENS += ["!!timestamp ", "!!set ", "!!python/object ", "? ", "'", '"', "#", "|", ">", "%YAML 1.1\n", "---\n", "...\n"]
TOKENS += ["site", "devices", "lines", "brokers", "sink", "id", "1", "2027-02-30", "0x1G", ".inf", "~", "\t", "é"]


@FUZZ
@given(text=st.lists(st.sampled_from(TOKENS) | st.text(max_size=4), max_size=40).map("".join))
@example(text="site: 2027-02-30\n")  # ValueError from PyYAML's date constructor
@example(text="site: !!int abc\n")  # ValueError from int()
@example(text="site: !!float abc\n")
@example(text="a: &x [*x]\n")  # a cycle: RecursionError in the line index
# RecursionError in the YAML parser ("[" * 5000 too, but PyYAML's scanner takes seconds over deep flow sequences)
@example(text="a: " + "{b: " * 3000 + "1" + "}" * 3000)
@example(text="brokers: 5\n")  # TypeError: 'int' object is not iterable
@example(text="site: !!int ''\n")  # IndexError in PyYAML's int constructor
@example(text="site: !!bool x\n")  # KeyError
@example(text="site: !!timestamp x\n")  # AttributeError
def test_random_yaml_text(site_file: Path, text: str) -> None:
    load(site_file, text)


# ---------------------------------------------------------------- mutations of the demo site


def _places(doc: Any, loc: Loc = ()) -> list[Loc]:
    """Every key and list element of the document."""
    out: list[Loc] = [loc] if loc else []
    if isinstance(doc, dict):
        out += [p for k, v in doc.items() for p in _places(v, (*loc, k))]
    elif isinstance(doc, list):
        out += [p for i, v in enumerate(doc) for p in _places(v, (*loc, i))]
    return out


def _at(doc: Any, loc: Loc) -> Any:
    for k in loc:
        doc = doc[k]
    return doc


replacement = st.one_of(
    scalars,
    st.text(min_size=1, max_size=30),  # random strings, unicode included
    st.integers() | st.floats(),  # random numbers, huge and non-finite included
    st.lists(scalars, max_size=3),
    st.dictionaries(st.text(max_size=5), scalars, max_size=3),
)


@st.composite
def mutated_demo(draw: st.DrawFn) -> dict[str, Any]:
    doc = copy.deepcopy(DEMO)
    for _ in range(draw(st.integers(1, 4))):
        places = _places(doc)
        loc = draw(st.sampled_from(places))
        parent, key = _at(doc, loc[:-1]), loc[-1]
        op = draw(st.sampled_from(["drop", "retype", "unknown_key", "known_key_elsewhere"]))
        if op == "drop":
            del parent[key]  # a dict key or a list element
        elif op == "retype":
            parent[key] = draw(replacement)
        else:
            target = _at(doc, loc) if isinstance(_at(doc, loc), dict) else parent
            if isinstance(target, dict):
                name = draw(st.sampled_from(KEYS) if op == "known_key_elsewhere" else st.text(max_size=8))
                target[name] = draw(replacement)
    return doc


SECTIONS = ("rules", "escalation", "alarms", "hazards", "auth")


@st.composite
def mutated_alarm_sections(draw: st.DrawFn) -> dict[str, Any]:
    """Mutations inside `rules:`, `escalation:`, `alarms:`, `hazards:` and `auth:` only (the alarm engine's part)."""
    doc = copy.deepcopy(DEMO)
    for _ in range(draw(st.integers(1, 3))):
        places = [p for p in _places(doc) if p[0] in SECTIONS]
        loc = draw(st.sampled_from(places))
        parent, key = _at(doc, loc[:-1]), loc[-1]
        op = draw(st.sampled_from(["drop", "retype", "level", "known_key"]))
        if op == "drop":
            del parent[key]
        elif op == "retype":
            parent[key] = draw(replacement | st.sampled_from(["exc.nope", "gas.lel", "tc.wind", "zhang", "siren"]))
        elif op == "level":
            parent[key] = draw(st.dictionaries(st.integers(-1, 5), st.floats(-100, 100), max_size=3))
        elif isinstance(parent, dict):
            parent[draw(st.sampled_from(ALARM_KEYS))] = draw(replacement)
    return doc


ALARM_KEYS = ["rule", "devices", "thresholds", "source", "deadband", "on_delay_s", "off_delay_s", "window_s"]
ALARM_KEYS += ["consecutive_days", "when", "disabled", "overrides", "policies", "tiers", "channels", "people"]
ALARM_KEYS += ["duty", "match", "after_s", "roles", "min_level", "repeat_every_s", "repeats", "users", "role"]


@settings(FUZZ, max_examples=80)
@given(doc=mutated_alarm_sections())
@example(doc={**DEMO, "rules": {"overrides": [{**DEMO["rules"]["overrides"][0], "thresholds": {2: 21, 3: 30}}]}})
@example(doc={**DEMO, "rules": {"overrides": [{**DEMO["rules"]["overrides"][0], "rule": "exc.nope"}]}})
def test_mutated_rules_and_escalation(site_file: Path, doc: dict[str, Any]) -> None:
    load(site_file, yaml.safe_dump(doc, allow_unicode=True, sort_keys=False))


@settings(FUZZ, max_examples=20)  # 1 to 4 mutations each
@given(doc=mutated_demo())
@example(doc={**DEMO, "site": {**DEMO["site"], "timezone": "Asia"}})  # IsADirectoryError from ZoneInfo
@example(doc={**DEMO, "site": {**DEMO["site"], "timezone": "a" * 300}})  # OSError: file name too long
@example(doc={**DEMO, "brokers": 5})
def test_mutated_demo_site(site_file: Path, doc: dict[str, Any]) -> None:
    load(site_file, yaml.safe_dump(doc, allow_unicode=True, sort_keys=False))


PROFILE_DIR = Path(__file__).parents[2] / "drivers" / "profiles"
# profiles that use the language's newer parts: quality maps, status points and fields, bit fields, register
# sentinels, auxiliary quantities, two-field dates, HJ 212, one-based addresses
PROFILE_DOCS = {
    pid: yaml.safe_load((PROFILE_DIR / f"{pid}.yaml").read_text(encoding="utf-8"))
    for pid in (
        "honeywell_midas_modbus_v1",
        "deye_elevator_json_v1",
        "hj212_dust_noise_v1",
        "siemens_qsa2700_pm_modbus_v1",
        "yunzhu_tower_crane_json_v1",
    )
}
PROFILE_KEYS = ["auxiliary", "quality_maps", "codes", "other", "status", "quality", "status_key", "sentinels"]
PROFILE_KEYS += ["bits_as", "bit", "bit_count", "invalid", "clock", "encoding", "packing", "fields", "zone", "pattern"]
PROFILE_KEYS += ["address_base", "one_based", "counter_wrap", "numeric_strings", "not_ready_when", "format", "path"]


@st.composite
def mutated_profile(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    pid = draw(st.sampled_from(sorted(PROFILE_DOCS)))
    doc = copy.deepcopy(PROFILE_DOCS[pid])
    doc["id"] = "fuzzed_profile"
    for _ in range(draw(st.integers(1, 3))):
        loc = draw(st.sampled_from(_places(doc)))
        parent, key = _at(doc, loc[:-1]), loc[-1]
        op = draw(st.sampled_from(["drop", "retype", "known_key"]))
        if op == "drop":
            del parent[key]
        elif op == "retype":
            parent[key] = draw(replacement | st.sampled_from(["bad", "not_ready", "bcd", "binary_string", "site"]))
        elif isinstance(parent, dict):
            parent[draw(st.sampled_from(PROFILE_KEYS))] = draw(replacement)
    return pid, doc


@settings(FUZZ, max_examples=40)
@given(case=mutated_profile())
def test_mutated_third_party_profiles(tmp_path_factory: pytest.TempPathFactory, case: tuple[str, Any]) -> None:
    """A site profile that uses the newer profile fields, mutated: the site loads, or a ConfigError names where."""
    pid, doc = case
    folder = tmp_path_factory.mktemp("fuzz_profile")
    (folder / "profiles").mkdir()
    (folder / "profiles" / "fuzzed_profile.yaml").write_text(yaml.safe_dump(doc, allow_unicode=True), "utf-8")
    modbus = PROFILE_DOCS[pid].get("transport") == "modbus"
    device = (
        {"id": "D", "profile": "fuzzed_profile", "line": "l", "unit_id": 1}
        if modbus
        else {"id": "D", "profile": "fuzzed_profile", "broker": "b", "topic": "t/+", "expected_interval_s": 1}
    )
    site = {
        "site": {"id": "s", "name": "s"},
        "profile_dirs": ["profiles"],
        "lines": [{"id": "l", "type": "modbus_tcp", "host": "127.0.0.1"}],
        "brokers": [{"id": "b", "host": "127.0.0.1"}],
        "devices": [device],
        "sink": {"type": "influxdb_v1", "url": "http://127.0.0.1:8086", "database": "x"},
    }
    from gateway.config import _profiles

    _profiles.cache_clear()
    load(folder / "site.yaml", yaml.safe_dump(site))


@FUZZ
@given(
    override=st.dictionaries(
        st.sampled_from(["format", "pattern", "zone", "path", "x"]),
        st.sampled_from(["pattern", "iso8601", "epoch_us", "receive", "yyyyMMddHHmmss", "%Y", "site", "+08:00", "Mars"])
        | scalars,
        max_size=3,
    ),
    clock=st.dictionaries(st.sampled_from(["max_ahead_s", "max_age_s", "x"]), scalars, max_size=2),
)
def test_device_time_overrides_and_clock_limits(site_file: Path, override: dict[str, Any], clock: Any) -> None:
    doc = copy.deepcopy(DEMO)
    gas = next(d for d in doc["devices"] if d["profile"] == "gas_4in1_mqtt_v1")
    gas["timestamp"] = override
    gas["device_clock"] = clock
    doc["device_clock"] = clock
    load(site_file, yaml.safe_dump(doc, allow_unicode=True, sort_keys=False))


# ---------------------------------------------------------------- regressions found by the fuzzing, spelled out


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({"thresholds": {2: 21, 3: 30}}, "rules.overrides[0].thresholds (line "),  # a level the rule does not have
        ({"rule": "exc.horizontal_displacment"}, "rules.overrides[0].rule (line "),  # a misspelt rule id
        ({"devices": ["NOPE"]}, "rules.overrides[0].devices (line "),
    ],
)
def test_check_config_on_a_broken_rules_block_exits_2_with_the_path(
    site_file: Path, override: dict[str, Any], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from gateway.cli import main

    doc = copy.deepcopy(DEMO)
    doc["rules"]["overrides"][0].update(override)
    site_file.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), encoding="utf-8")
    assert main(["check-config", str(site_file)]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err


def test_demo_site_loads_through_the_fuzz_harness(site_file: Path) -> None:
    assert isinstance(load(site_file, DEMO_TEXT), SiteConfig)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("site: {calibration_due: 2027-02-30}\n", 'day is out of range for month\n  in "<unicode string>", line 1'),
        ("a: 1\nb: !!int abc\n", "line 2, column 4"),
        ("a: &x [*x]\n", "problem(s)"),
        ("a: " + "{b: " * 3000 + "1" + "}" * 3000, "nested too deeply"),
    ],
)
def test_yaml_that_pyyaml_cannot_build_is_a_config_error(site_file: Path, text: str, expected: str) -> None:
    msg = load(site_file, text)
    assert isinstance(msg, str) and expected in msg


@pytest.mark.parametrize("zone", ["Asia", "a" * 300])
def test_time_zone_that_is_a_folder_or_too_long_is_a_config_error(site_file: Path, zone: str) -> None:
    doc = {**DEMO, "site": {**DEMO["site"], "timezone": zone}}
    msg = load(site_file, yaml.safe_dump(doc, allow_unicode=True))
    assert isinstance(msg, str) and "site.timezone (line" in msg and "unknown IANA time zone" in msg


def test_brokers_that_is_not_a_list_is_a_config_error(site_file: Path) -> None:
    msg = load(site_file, yaml.safe_dump({**DEMO, "brokers": 5}, allow_unicode=True))
    assert isinstance(msg, str) and "brokers (line" in msg and "valid list" in msg


def test_calibration_due_date_type_survives_the_loader(site_file: Path) -> None:
    cfg = load(site_file, DEMO_TEXT)
    assert isinstance(cfg, SiteConfig)
    assert [d.calibration_due for d in cfg.devices if d.calibration_due] == [date(2027, 6, 30)]


@pytest.mark.parametrize("value", ["!!int ''", "!!float _", "!!bool x", "!!timestamp x", "!!int 0b"])
def test_scalar_its_tag_cannot_build_is_a_yaml_error_with_its_line(site_file: Path, value: str) -> None:
    msg = load(site_file, f"site:\n  id: {value}\n")
    assert isinstance(msg, str) and "not valid YAML: cannot read as tag:yaml.org,2002:" in msg and "line 2" in msg


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('site: {"a\\nb": 1}\n', "  site['a\\nb'] (line 1): unknown field"),
        ('site: {"a: b.c": 1}\n', "  site['a: b.c'] (line 1): unknown field"),
        ('lines: [{type: "a\\nb"}]\n', "  lines[0] (line 1): Input tag 'a\\nb' found using 'type'"),
    ],
)
def test_odd_keys_and_inputs_keep_one_problem_per_line(site_file: Path, text: str, expected: str) -> None:
    msg = load(site_file, text)  # a key with a newline used to split its problem over two lines
    assert isinstance(msg, str) and any(line.startswith(expected) for line in msg.split("\n")), msg
