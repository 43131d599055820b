"""The hub's config file fails loudly, naming the place: the tree's shape, duplicate sites, users' scopes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from hub.config import HubConfigError, load_hub_config
from hub.regions import RegionTree


def tree() -> dict[str, Any]:
    return {"code": "32", "name": "省", "level": "province", "children": [
        {"code": "3201", "name": "市A", "level": "city", "children": [
            {"code": "320102", "name": "区A", "level": "county", "projects": [
                {"id": "P1", "name": "项目1", "company": "G", "sites": ["a1", "a2"]}]}]},
        {"code": "3205", "name": "市B", "level": "city", "children": [
            {"code": "320508", "name": "区B", "level": "county", "projects": [
                {"id": "P2", "name": "项目2", "company": "G", "sites": ["b1"]},
                {"id": "P3", "name": "项目3", "sites": ["b2"]}]}]}]}  # fmt: skip


def doc(**over: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"nats": {"servers": ["nats://127.0.0.1:4222"]}, "region": tree(),
                         "users": [{"name": "city", "password_env": "PW_CITY", "region": "3201"},
                                   {"name": "grp", "password_env": "PW_GRP", "company": "G"}]}  # fmt: skip
    d.update(over)
    return d


def load(tmp_path: Path, d: dict[str, Any]) -> Any:
    p = tmp_path / "hub.yaml"
    p.write_text(yaml.safe_dump(d, allow_unicode=True), encoding="utf-8")
    return load_hub_config(p)


def test_a_valid_tree_places_every_site_and_scopes_each_user(tmp_path: Path) -> None:
    cfg = load(tmp_path, doc())
    t = RegionTree(cfg.region)
    city, grp = cfg.users
    assert t.visible(city, set()) == ["a1", "a2"]
    assert t.visible(grp, {"stray"}) == ["a1", "a2", "b1"]  # the group's projects, in two cities
    assert [r.name for r in t.placement("b2").path] == ["省", "市B", "区B"]
    assert not t.may_see(city, "b1") and not t.may_see(city, "stray")
    root = cfg.users[0].model_copy(update={"region": "32"})
    assert t.visible(root, {"stray", "a1"}) == ["a1", "a2", "b1", "b2", "stray"]  # an unplaced site: the root's


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (lambda d: d["region"]["children"][0].update(level="county"),
         "3201: under a county comes no region (projects only), not the county 320102"),
        (lambda d: d["region"]["children"][1]["children"][0]["projects"][0]["sites"].append("a1"),
         "site a1 is in two projects: P1 and P2"),
        (lambda d: d["users"][0].update(region="9999"), "user city: no region 9999 in the tree"),
        (lambda d: d["users"][1].update(region="32"), "give exactly one scope"),
        (lambda d: d["users"][0].update(pasword_env="X"), "users.0.pasword_env: Extra inputs are not permitted"),
        (lambda d: d.update(timezone="Mars/Base"), "unknown IANA time zone 'Mars/Base'"),
        (lambda d: d.update(timezone="localtime"), "'localtime' is no IANA time zone name"),  # the box's setting
        # nats-py sends user and password only together: either alone never reached the cluster
        (lambda d: d["nats"].update(user="hub"), "user and password_env go together"),
        (lambda d: d["nats"].update(password_env="HUB_NATS_PW"), "user and password_env go together"),
        (lambda d: d["region"]["children"][0]["children"][0]["projects"][0]["sites"].append("a.b"),
         "region.children.0.children.0.projects.0.sites.2"),
    ],
)  # fmt: skip
def test_a_wrong_config_is_refused_with_where_and_why(tmp_path: Path, change: Any, says: str) -> None:
    d = doc()
    change(d)
    with pytest.raises(HubConfigError) as err:
        load(tmp_path, d)
    assert says in str(err.value) and "hub.yaml" in str(err.value)


def test_a_file_not_in_utf8_is_refused_with_where(tmp_path: Path) -> None:
    p = tmp_path / "hub.yaml"
    p.write_bytes("timezone: Asia/Shanghai  # 区域\n".encode("gbk"))
    with pytest.raises(HubConfigError) as err:
        load_hub_config(p)
    assert "hub.yaml" in str(err.value) and "can't decode byte 0xc7 in position 27" in str(err.value)


def test_the_stream_retention_is_seven_days_unless_set_and_must_be_positive(tmp_path: Path) -> None:
    import argparse

    from hub.cli import consumer_config

    args = argparse.Namespace(servers=None, dsn_env=None, stream=None, ack_wait_s=None)
    assert consumer_config(load(tmp_path, doc()), args)[0].max_age_s == 7 * 86400
    one_day = doc(nats={"servers": ["nats://127.0.0.1:4222"], "max_age_days": 1})
    assert consumer_config(load(tmp_path, one_day), args)[0].max_age_s == 86400
    for bad in (0, -1, "a week"):
        with pytest.raises(HubConfigError, match=r"nats\.max_age_days"):
            load(tmp_path, doc(nats={"servers": ["nats://127.0.0.1:4222"], "max_age_days": bad}))
