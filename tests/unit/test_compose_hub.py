"""The regional hub's Compose stack (docker-compose.hub.yml), checked without a Docker engine: the schema, health
checks and dependencies, files and secrets, the hub's example config, and the NATS node config by nats-server."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from hub.config import load_hub_config
from tests.unit.test_compose import _env_keys, _validator

ROOT = Path(__file__).parents[2]
COMPOSE = ROOT / "docker-compose.hub.yml"
# bind-mount sources the operator creates, each from the committed example named here (docs/hub.md says how)
OPERATOR_MADE = {"./hub": "docker/hub.example.yaml", "./secrets/nats-users.conf": "secrets/nats-users.conf.example"}


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))  # merge keys (<<:) resolved
    return data


def _services() -> dict[str, dict[str, Any]]:
    svcs: dict[str, dict[str, Any]] = _compose()["services"]
    return svcs


def test_the_hub_compose_file_matches_the_compose_spec_schema() -> None:
    errors = [e.message for e in _validator().iter_errors(_compose())]
    assert errors == []


def test_the_region_runs_three_nats_nodes_two_hubs_postgres_victoriametrics_and_grafana() -> None:
    svcs = _services()
    assert set(svcs) == {"nats-1", "nats-2", "nats-3", "postgres", "hub-1", "hub-2", "victoriametrics", "grafana"}
    assert [svcs[f"nats-{i}"]["environment"]["NATS_NAME"] for i in (1, 2, 3)] == ["nats-1", "nats-2", "nats-3"]
    for h in ("hub-1", "hub-2"):
        assert svcs[h]["command"] == ["hub", "--config", "/etc/sitegw/hub.yaml"]
        assert svcs[h]["build"]["args"] == {"SITEGW_EXTRAS": "[hub]"}  # the image with psycopg


def test_every_service_has_a_healthcheck_a_restart_policy_and_waits_for_healthy_dependencies() -> None:
    svcs = _services()
    for name, svc in svcs.items():
        assert svc.get("restart") == "unless-stopped", name
        assert svc.get("healthcheck", {}).get("test"), name
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert dep in svcs and cond == {"condition": "service_healthy"}, (name, dep)


def test_only_the_sites_ports_face_the_network_the_rest_the_host_only() -> None:
    public = set()
    for name, svc in _services().items():
        for p in svc.get("ports", []):
            if not str(p).startswith("127.0.0.1:"):
                public.add((name, int(str(p).split(":")[-1])))
    assert public == {("nats-1", 4222), ("nats-1", 1883), ("nats-2", 4222), ("nats-3", 4222),
                      ("victoriametrics", 8428)}  # fmt: skip


def test_every_bind_mount_and_env_file_is_committed_or_made_from_a_committed_example() -> None:
    for name, svc in _services().items():
        for v in svc.get("volumes", []):
            src = v.split(":")[0]
            if not src.startswith("./"):
                continue  # a named volume
            made = OPERATOR_MADE.get(src)
            assert (ROOT / src).exists() or (made and (ROOT / made).exists()), f"{name}: {src}"
        for f in svc.get("env_file", []):
            assert (ROOT / f).exists() or (ROOT / (f + ".example")).exists(), f"{name}: {f}"
    for f in ("secrets/hub.env", "secrets/postgres.env", "secrets/nats-users.conf", "secrets/victoriametrics.env"):
        assert subprocess.run(["git", "check-ignore", "-q", f], cwd=ROOT, check=False).returncode == 0, f


def test_the_example_hub_config_loads_and_every_secret_it_names_reaches_the_hub() -> None:
    cfg = load_hub_config(ROOT / "docker" / "hub.example.yaml")
    env = _env_keys(ROOT / "secrets" / "hub.env.example")
    named = {cfg.dsn_env, *(u.password_env for u in cfg.users)}
    assert cfg.nats.password_env is not None
    named.add(cfg.nats.password_env)
    assert named <= set(env), sorted(named - set(env))
    assert cfg.http is not None and cfg.http.port == 8790  # what the healthcheck and the ports expect
    assert cfg.nats.servers == ["nats://nats-1:4222", "nats://nats-2:4222", "nats://nats-3:4222"]
    pg = _env_keys(ROOT / "secrets" / "postgres.env.example")
    assert (
        env["SITEGW_HUB_DSN"]
        == f"postgresql://{pg['POSTGRES_USER']}:{pg['POSTGRES_PASSWORD']}@postgres:5432/" + pg["POSTGRES_DB"]
    )


@pytest.mark.skipif(shutil.which("nats-server") is None, reason="Debian nats-server not installed")
def test_nats_server_accepts_the_node_config_with_the_example_logins(tmp_path: Path) -> None:
    shutil.copy(ROOT / "docker" / "nats-hub.conf", tmp_path / "nats.conf")
    shutil.copy(ROOT / "secrets" / "nats-users.conf.example", tmp_path / "users.conf")
    env = {**os.environ, "NATS_NAME": "nats-1"}
    argv = ["nats-server", "-c", str(tmp_path / "nats.conf"), "-t"]
    r = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=tmp_path, check=False, timeout=30)
    assert r.returncode == 0 and "is valid" in r.stdout + r.stderr, r.stdout + r.stderr
    # and the check can fail: a broken logins file is refused
    (tmp_path / "users.conf").write_text("authorization { users = [", encoding="utf-8")
    r = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=tmp_path, check=False, timeout=30)
    assert r.returncode != 0 and "users.conf" in r.stdout + r.stderr


def test_the_site_logins_example_lets_a_site_publish_only_its_own_subjects() -> None:
    text = (ROOT / "secrets" / "nats-users.conf.example").read_text(encoding="utf-8")
    sites = re.findall(r"user: site-([\w-]+).*?publish: \{ allow: \[([^\]]*)\]", text, re.S)
    subs = re.findall(r"user: site-([\w-]+).*?subscribe: \{ allow: \[([^\]]*)\]", text, re.S)
    assert sites and subs
    for site, allowed in subs:  # its replies only on its own inbox prefix (gateway/uplink.py inbox_prefix)
        assert [a.strip().strip('"') for a in allowed.split(",")] == [f"_INBOX_{site}.>"]
    for site, allowed in sites:
        assert sorted(a.strip().strip('"') for a in allowed.split(",")) == [
            f"sitegw.{site}.events",
            f"sitegw.{site}.notices",
            f"sitegw.{site}.status",
        ]
