"""The stricter site file against valid files a review found it refused (merges) and a refusal that read wrongly."""

from __future__ import annotations

from pathlib import Path

import yaml

from gateway.config import ConfigError, load_config
from telemetry import yamltext
from tests.unit.test_config_strict import BASE, ESCALATION

# PIT-1 in block style, its two 预警值 citing one monitoring plan: the second source is the first one's with another
# clause (a merge key and a key of its own), and a rules override cites that second source with its own clause.
MERGED_SOURCES = (
    BASE.replace(
        "  - {id: PIT-1, profile: excavation_displacement_rtu_v1, line: l1, unit_id: 2, poll_interval_s: 2}\n",
        """\
  - id: PIT-1
    profile: excavation_displacement_rtu_v1
    line: l1
    unit_id: 2
    poll_interval_s: 2
    warning_values:
      horizontal_displacement:
        cumulative: 30
        rate_per_day: 3
        source: &plan {standard: 某基坑监测方案, clause: 表3, confidence: P}
      vertical_displacement:
        cumulative: 20
        rate_per_day: 2
        source: &plan_t4 {<<: *plan, clause: 表4}
""",
    )
    + """\
rules:
  overrides:
    - rule: exc.vertical_displacement
      devices: [PIT-1]
      thresholds: {1: 80}
      source: {<<: *plan_t4, clause: 表4 注1}
"""
)


def test_merge_of_an_anchor_that_itself_merges_is_not_a_key_given_twice(tmp_path: Path) -> None:
    # docs/configuration.md, Ground rules: merge keys (`<<: *anchor`) are left out, a key of the mapping itself
    # overrides a merged one. PyYAML flattens &plan_t4 (prepending &plan's keys) when the shallower override source
    # merges it, before &plan_t4 itself is built: checked when built, its keys were `clause` twice (a review);
    # they are checked before any merge now (telemetry/yamltext.py UniqueKeys.flatten_mapping)
    p = tmp_path / "site.yaml"
    p.write_text(MERGED_SOURCES, encoding="utf-8")
    try:
        cfg = load_config(p)
    except ConfigError as err:
        raise AssertionError(f"a valid merge refused:\n{err}") from None
    wv = next(d for d in cfg.devices if d.id == "PIT-1").warning_values
    assert wv["vertical_displacement"].source.clause == "表4"
    assert cfg.rules.overrides[0].source.clause == "表4 注1"


def test_yamltext_merge_of_an_anchor_that_itself_merges() -> None:
    # the same in telemetry/yamltext.py's SafeLoader (profiles, rule packs, the hub's config)
    doc = "a:\n  b:\n    c: &C {x: 1, z: 0}\n    d: &D {<<: *C, x: 2}\ne: {<<: *D, y: 3}\n"
    # (it said "found key 'x' twice (first on line 3)"); yaml.safe_load reads it (d is {x: 2, z: 0})
    assert yamltext.safe_load(doc) == yaml.safe_load(doc)


def test_unknown_rule_of_no_family_in_a_policy_match_says_what_rule_ids_look_like(tmp_path: Path) -> None:
    # `match: {rules: [crane.wind]}` said "rules of that family: tc., exc., fw., gas., health." (prefixes, and no
    # family matched); it says what rules.overrides says of the same id
    p = tmp_path / "site.yaml"
    p.write_text(
        BASE + ESCALATION + "  policies: [{id: p, match: {rules: [crane.wind]}, tiers: [{roles: [safety_officer], "
        "channels: [siren]}]}]\n",
        encoding="utf-8",
    )
    try:
        load_config(p)
    except ConfigError as err:
        msg = str(err)
    else:
        raise AssertionError("accepted")
    assert "escalation.policies[0].match.rules" in msg, msg
    assert "rules of that family: tc., exc." not in msg, msg
