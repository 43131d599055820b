"""The production Docker Compose stack, checked without a Docker engine: schema, cross-references, files, scripts."""

from __future__ import annotations

import copy
import importlib.resources
import json
import os
import re
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema  # type: ignore[import-untyped]  # no stubs; tests are outside strict mypy
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from gateway.config import InfluxV1Sink, SiteConfig, load_config
from services import local as services

ROOT = Path(__file__).parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
SITE_EXAMPLE = ROOT / "docker" / "site.example.yaml"
INIT_SCRIPT = ROOT / "docker" / "influxdb-init" / "10-sitegw-v1.sh"
# bind-mount sources the operator creates; each from the committed file named here (README says how)
OPERATOR_MADE = {
    "./site": "docker/site.example.yaml",
    "./secrets/mosquitto.passwd": "secrets/mosquitto.passwd.example",
}
# published on every interface on purpose: devices on the site LAN (MQTT) and the wall screens (Grafana)
LAN_PORTS = {("mosquitto", 1883), ("grafana", 3000)}
# exported by the influxdb image's entrypoint before it runs /docker-entrypoint-initdb.d (not from any env file)
ENTRYPOINT_EXPORTS = {"DOCKER_INFLUXDB_INIT_BUCKET_ID", "DOCKER_INFLUXDB_INIT_ORG_ID", "DOCKER_INFLUXDB_INIT_USER_ID"}
_INTERP = re.compile(r"(?<!\$)\$\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)[^}]*\}|(?<!\$)\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)")


def _compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _services() -> dict[str, dict[str, Any]]:
    svcs = _compose()["services"]
    assert isinstance(svcs, dict)
    return svcs


def _env_keys(path: Path) -> dict[str, str]:
    """KEY=value lines of an env file (comments and blank lines skipped), as Compose reads them."""
    out: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not KEY=value: {line!r}"
        out[key.strip()] = value
    return out


def _environment(svc: dict[str, Any]) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {str(k): str(v) for k, v in env.items()}


def _env_files(svc: dict[str, Any]) -> list[str]:
    files = svc.get("env_file") or []
    return [files] if isinstance(files, str) else [f if isinstance(f, str) else f["path"] for f in files]


def _container_env(name: str) -> set[str]:
    """Every variable the container of service `name` gets: its env files (or their examples) and `environment:`."""
    svc = _services()[name]
    keys = set(_environment(svc))
    for f in _env_files(svc):
        path = ROOT / f
        keys |= set(_env_keys(path if path.exists() else Path(f"{path}.example")))
    return keys


def _bind_mounts(svc: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of the short-syntax bind mounts: a source that is a path, not a named volume."""
    out = []
    for v in svc.get("volumes") or []:
        assert isinstance(v, str), "use the short volume syntax (the checks below parse it)"
        src, target = v.split(":")[:2]
        if src.startswith((".", "/")):
            out.append((src, target))
    return out


def _named_volume_targets(svc: dict[str, Any]) -> dict[str, str]:
    out = {}
    for v in svc.get("volumes") or []:
        src, target = v.split(":")[:2]
        if not src.startswith((".", "/")):
            out[target] = src
    return out


def _site() -> SiteConfig:
    return load_config(SITE_EXAMPLE)


def _sink() -> InfluxV1Sink:
    sink = _site().sink
    assert isinstance(sink, InfluxV1Sink), "the compose stack writes through the 1.x compatibility API"
    return sink


def _secret_env_names(cfg: SiteConfig) -> set[str]:
    """Every `*_env` value of the site config: the environment variables it names (passwords, tokens, secrets)."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if isinstance(k, str) and k.endswith("_env") and isinstance(v, str):
                    found.add(v)
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(cfg.model_dump(mode="json"))
    return found


# ---- the compose file against the compose specification ----


def _validator() -> jsonschema.Draft202012Validator:
    # the Compose Specification's JSON schema as vendored (from SchemaStore) by check-jsonschema, pinned in dev deps
    text = (importlib.resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json").read_text()
    schema = json.loads(text)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_compose_file_matches_the_compose_spec_schema() -> None:
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in _validator().iter_errors(_compose())]
    assert errors == []


def test_the_schema_catches_a_misspelt_key() -> None:
    # guards the test above against a schema that accepts anything
    broken = copy.deepcopy(_compose())
    broken["services"]["sitegw"]["healthcheck"]["intervall"] = "30s"
    broken["services"]["grafana"]["depends_on"]["influxdb"]["condition"] = "service_healty"
    assert len(list(_validator().iter_errors(broken))) >= 2


# ---- cross-checks between the services ----


def test_every_service_has_a_healthcheck_and_a_restart_policy() -> None:
    for name, svc in _services().items():
        hc = svc.get("healthcheck")
        assert hc and not hc.get("disable"), f"{name}: no healthcheck"
        assert isinstance(hc["test"], list) and hc["test"][0] in ("CMD", "CMD-SHELL"), name
        assert svc.get("restart") in ("always", "unless-stopped", "on-failure"), f"{name}: restart policy"


def test_depends_on_waits_for_healthy_services_that_exist() -> None:
    svcs = _services()
    assert set(svcs["sitegw"]["depends_on"]) == {"mosquitto", "influxdb"}
    for name, svc in svcs.items():
        deps = svc.get("depends_on") or {}
        assert isinstance(deps, dict), f"{name}: use the long depends_on syntax with a condition"
        for dep, how in deps.items():
            assert dep in svcs, f"{name} depends on unknown service {dep}"
            assert how["condition"] == "service_healthy", f"{name} -> {dep}"
            assert "healthcheck" in svcs[dep], f"{name} waits for {dep}, which has no healthcheck"
            # a production service must not wait for a demo-only one: it would never start without the profile
            assert svcs[dep].get("profiles") is None or svc.get("profiles") is not None, f"{name} -> {dep}"


def test_only_the_simulators_are_in_the_demo_profile() -> None:
    profiled = {name: svc["profiles"] for name, svc in _services().items() if "profiles" in svc}
    assert profiled == {"simulators": ["demo"]}


def test_ports_are_published_only_where_needed() -> None:
    for name, svc in _services().items():
        for spec in svc.get("ports") or []:
            assert isinstance(spec, str), f"{name}: use the short port syntax"
            parts = spec.split(":")
            assert len(parts) in (2, 3), f"{name}: {spec!r} without a host port"
            host_ip = parts[0] if len(parts) == 3 else ""
            container_port = int(parts[-1].split("/")[0])
            if host_ip != "127.0.0.1":
                assert (name, container_port) in LAN_PORTS, f"{name}: {spec!r} is published beyond the host"
    ports = {name: svc.get("ports") or [] for name, svc in _services().items()}
    assert ports["influxdb"] == ["127.0.0.1:8086:8086"]
    assert ports["sitegw"] == ["127.0.0.1:8780:8780"]
    assert ports["simulators"] == []


def test_every_bind_mount_source_is_in_the_repository_or_made_from_an_example() -> None:
    for name, svc in _services().items():
        for src, target in _bind_mounts(svc):
            assert target.startswith("/"), f"{name}: {target}"
            if src in OPERATOR_MADE:
                assert (ROOT / OPERATOR_MADE[src]).is_file(), f"{name}: {src} has no {OPERATOR_MADE[src]}"
                assert OPERATOR_MADE[src] in (ROOT / "README.md").read_text(encoding="utf-8")
            else:
                assert (ROOT / src).exists(), f"{name}: bind-mount source {src} is not in the repository"


def test_grafana_is_provisioned_from_the_dashboards_folder() -> None:
    mounts = dict(_bind_mounts(_services()["grafana"]))
    assert mounts["./dashboards/provisioning/datasources"] == "/etc/grafana/provisioning/datasources"
    assert mounts["./dashboards/provisioning/dashboards"] == "/etc/grafana/provisioning/dashboards"
    assert mounts["./dashboards"] == "/etc/grafana/dashboards/sitegw"


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for v in node.values():
            yield from _strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from _strings(v)
    elif isinstance(node, str):
        yield node


def _provisioning(kind: str) -> list[tuple[Path, dict[str, Any]]]:
    files = sorted((ROOT / "dashboards" / "provisioning" / kind).glob("*.y*ml"))
    assert files, f"nothing in dashboards/provisioning/{kind}"
    return [(f, yaml.safe_load(f.read_text(encoding="utf-8"))) for f in files]


def test_grafana_provisioning_uses_only_variables_the_container_has() -> None:
    # Grafana expands $VAR / ${VAR} in provisioning values from its environment; an unknown one becomes ""
    env = _container_env("grafana")
    for kind in ("datasources", "dashboards"):
        for f, doc in _provisioning(kind):
            for value in _strings(doc):
                for m in _INTERP.finditer(value):
                    var = m["braced"] or m["bare"]
                    assert var in env, f"{f.relative_to(ROOT)} uses ${var}, which the grafana container does not get"


def test_grafana_reads_the_database_and_the_dashboards_where_compose_puts_them() -> None:
    env = _environment(_services()["grafana"])
    mounts = dict(_bind_mounts(_services()["grafana"]))
    sources = [ds for _, doc in _provisioning("datasources") for ds in doc["datasources"] if ds["type"] == "influxdb"]
    assert sources
    for ds in sources:
        assert urlsplit(ds["url"]).hostname == "influxdb" and urlsplit(ds["url"]).port == 8086
        assert ds["jsonData"]["dbName"] == _sink().database  # the database the init script maps
        assert env.get(ds["user"].lstrip("$").strip("{}")) == "grafana"  # the v1 user allowed to read
    for _, doc in _provisioning("dashboards"):
        for provider in doc["providers"]:
            assert provider["options"]["path"] in mounts.values()


def test_every_env_file_is_committed_or_has_a_committed_example() -> None:
    for name, svc in _services().items():
        for f in _env_files(svc):
            path = ROOT / f
            if f.startswith("./secrets/"):
                assert Path(f"{path}.example").is_file(), f"{name}: {f} has no .example"
            else:
                assert path.is_file(), f"{name}: {f}"
                secretish = [k for k in _env_keys(path) if re.search(r"PASSWORD|TOKEN|SECRET|_KEY$", k)]
                assert secretish == [], f"{f} is committed, but sets {secretish}"


def test_every_interpolated_variable_has_an_example_and_fails_when_unset() -> None:
    text = COMPOSE.read_text(encoding="utf-8")
    example = _env_keys(ROOT / ".env.example")
    used = {m["braced"] or m["bare"] for m in _INTERP.finditer(text)}
    assert used, "the shared passwords come from .env"
    assert used <= set(example), f"not in .env.example: {used - set(example)}"
    # `${VAR:?message}`: Compose refuses to start without .env instead of passing an empty password on
    for m in re.finditer(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)([^}]*)\}", text):
        assert m[2].startswith(":?"), f"${{{m[1]}{m[2]}}} has a silent default"


def test_secrets_are_never_committed() -> None:
    for f in (".env", "secrets/sitegw.env", "secrets/influxdb.env", "secrets/grafana.env", "secrets/mosquitto.passwd"):
        r = subprocess.run(["git", "check-ignore", "-q", f], cwd=ROOT, check=False)
        assert r.returncode == 0, f"{f} is not git-ignored"
    r = subprocess.run(["git", "check-ignore", "-q", "secrets/sitegw.env.example"], cwd=ROOT, check=False)
    assert r.returncode == 1, "the examples must stay committable"


# ---- the gateway's site file ----


def test_site_example_loads_and_uses_the_compose_network() -> None:
    cfg = _site()
    svcs = _services()
    for ln in cfg.lines:
        assert getattr(ln, "host", None) in svcs, f"line {ln.id}: demo devices are the `simulators` service"
    for b in cfg.brokers:
        assert b.host == "mosquitto" and b.username == "sitegw" and b.password_env == "SITEGW_MQTT_PASSWORD"
    sink = _sink()
    assert urlsplit(sink.url).hostname == "influxdb"
    assert sink.database == "sitegw" and sink.username == "sitegw" and not sink.create_database


def test_site_example_keeps_its_state_on_the_gateway_volume() -> None:
    cfg = _site()
    volumes = _named_volume_targets(_services()["sitegw"])
    assert volumes.get("/var/lib/sitegw") in _compose()["volumes"]
    for path in (cfg.spool.dir, cfg.alarms.state_file):
        assert path.is_relative_to("/var/lib/sitegw"), path
    assert dict(_bind_mounts(_services()["sitegw"]))["./site"] == "/etc/sitegw"


def test_site_example_serves_the_healthcheck_and_the_published_port() -> None:
    cfg = _site()
    assert cfg.http is not None and cfg.http.host == "0.0.0.0"
    svc = _services()["sitegw"]
    assert f"http://127.0.0.1:{cfg.http.port}/healthz" in " ".join(svc["healthcheck"]["test"])
    assert svc["ports"] == [f"127.0.0.1:{cfg.http.port}:{cfg.http.port}"]


def test_every_variable_the_site_file_names_reaches_the_gateway() -> None:
    named = _secret_env_names(_site())
    assert {"SITEGW_MQTT_PASSWORD", "SITEGW_INFLUX_PASSWORD", "SITEGW_PW_ADMIN"} <= named
    missing = named - _container_env("sitegw")
    assert missing == set(), f"named by docker/site.example.yaml, not given to the sitegw container: {missing}"
    # the simulators log in to the broker like the gateway
    assert {b.password_env for b in _site().brokers} <= _container_env("simulators")


def test_sitegw_check_config_passes_on_the_site_example() -> None:
    env = {**os.environ, **_env_keys(ROOT / ".env.example"), **_env_keys(ROOT / "secrets" / "sitegw.env.example")}
    r = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "check-config", str(SITE_EXAMPLE)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    assert f"{SITE_EXAMPLE}: OK" in r.stdout
    assert "sink influxdb_v1 http://influxdb:8086 -> sitegw" in r.stdout


# ---- the image ----


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pending = f"{pending} {line}".strip()
        if pending.endswith("\\"):
            pending = pending[:-1]
            continue
        word, _, rest = pending.partition(" ")
        out.append((word.upper(), " ".join(rest.split())))
        pending = ""
    assert pending == "", "dangling line continuation"
    return out


def test_dockerfile_base_image_user_and_entrypoint() -> None:
    instr = _dockerfile()
    assert [a for i, a in instr if i == "FROM"] == ["python:3.11-slim"]
    users = [a for i, a in instr if i == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the gateway must not run as root"
    assert ("ENTRYPOINT", '["sitegw"]') in instr
    runs = " ".join(a for i, a in instr if i == "RUN")
    assert 'pip install --constraint docker/constraints.txt ".${SITEGW_EXTRAS}"' in runs
    assert "useradd --system" in runs and users[-1] in runs


def test_dockerfile_copies_every_package_the_project_installs() -> None:
    # a package left out builds an image whose first import fails (telemetry/ once was)
    include = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["packages"]
    wanted = {p.rstrip("*") + "/" for p in include["find"]["include"]}
    copied = {a.split()[0] for i, a in _dockerfile() if i == "COPY"}
    assert wanted <= copied, f"not copied into the image: {sorted(wanted - copied)}"


def test_dockerfile_has_a_healthcheck_here_or_in_compose() -> None:
    built = [n for n, s in _services().items() if s.get("build", {}).get("dockerfile") == "docker/Dockerfile"]
    assert built == ["sitegw", "simulators"]
    in_image = any(i == "HEALTHCHECK" for i, _ in _dockerfile())
    assert in_image or all("healthcheck" in _services()[n] for n in built)


def test_dockerfile_bakes_in_no_secrets() -> None:
    for instr, args in _dockerfile():
        if instr in ("ENV", "ARG", "LABEL"):
            assert not re.search(r"PASSWORD|TOKEN|SECRET|_KEY\b", args, re.I), f"{instr} {args}"
        if instr in ("COPY", "ADD"):
            sources = [s for s in args.split()[:-1] if not s.startswith("--")]
            for s in sources:
                assert not s.startswith(("secrets", ".env", "site/", ".")), f"{instr} {args}"
                assert (ROOT / s).exists(), f"{instr}: {s} is not in the repository"
    ignored = (ROOT / "docker" / "Dockerfile.dockerignore").read_text(encoding="utf-8").split()
    assert {".env", "secrets/", "site/"} <= set(ignored), "secrets must not even reach the build context"


def test_constraints_pin_every_runtime_dependency_within_pyproject() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    pins: dict[str, str] = {}
    for line in (ROOT / "docker" / "constraints.txt").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep, f"constraints.txt: not pinned exactly: {line!r}"
            pins[canonicalize_name(name)] = version.strip()
    for dep in map(Requirement, deps):
        name = canonicalize_name(dep.name)
        assert name in pins, f"{dep.name} is not pinned in docker/constraints.txt"
        assert dep.specifier.contains(pins[name], prereleases=True), f"{dep.name}=={pins[name]} is not {dep}"


# ---- InfluxDB 2.7: the init script ----


def test_influxdb_init_script_is_valid_bash_and_executable() -> None:
    subprocess.run(["bash", "-n", str(INIT_SCRIPT)], check=True, timeout=10)
    # the image runs /docker-entrypoint-initdb.d with run-parts, which skips files that are not executable
    assert os.access(INIT_SCRIPT, os.X_OK)
    assert INIT_SCRIPT.name.endswith(".sh")
    mounts = dict(_bind_mounts(_services()["influxdb"]))
    assert mounts["./docker/influxdb-init"] == "/docker-entrypoint-initdb.d"


def _run_init(tmp_path: Path, env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], list[list[str]]]:
    """Run the init script with a recording stand-in for the influx CLI (the CLI is not installed here)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls.jsonl"
    stub = bin_dir / "influx"
    stub.write_text(
        f"#!{sys.executable}\nimport json, sys\nopen({str(calls)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n",
        encoding="utf-8",
    )
    stub.chmod(0o755)
    full = {"PATH": f"{bin_dir}:/usr/bin:/bin", **env}
    r = subprocess.run(["bash", str(INIT_SCRIPT)], env=full, capture_output=True, text=True, timeout=30, check=False)
    recorded = [json.loads(x) for x in calls.read_text().splitlines()] if calls.exists() else []
    return r, recorded


def _influx_env() -> dict[str, str]:
    """What the influxdb container has when the entrypoint runs the script (examples in place of the secrets)."""
    env = {k: v for k, v in _env_keys(ROOT / "secrets" / "influxdb.env.example").items()}
    shared = _env_keys(ROOT / ".env.example")
    env |= {k: shared[k] for k in _environment(_services()["influxdb"]) if k in shared}
    env |= {k: v for k, v in _environment(_services()["influxdb"]).items() if "$" not in v}
    env["DOCKER_INFLUXDB_INIT_BUCKET_ID"] = "0123456789abcdef"
    return env


def _flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_influxdb_init_script_maps_the_database_and_creates_the_v1_users(tmp_path: Path) -> None:
    env = _influx_env()
    r, calls = _run_init(tmp_path, env)
    assert r.returncode == 0, r.stderr
    dbrp = [c for c in calls if c[:3] == ["v1", "dbrp", "create"]]
    assert len(dbrp) == 1
    assert _flag(dbrp[0], "--db") == _sink().database
    assert _flag(dbrp[0], "--bucket-id") == "0123456789abcdef" and "--default" in dbrp[0]
    users = {_flag(c, "--username"): c for c in calls if c[:3] == ["v1", "auth", "create"]}
    assert set(users) == {"sitegw", "grafana"}
    assert _flag(users["sitegw"], "--password") == env["SITEGW_INFLUX_PASSWORD"]
    assert _flag(users["sitegw"], "--write-bucket") == "0123456789abcdef" and "--read-bucket" not in users["sitegw"]
    assert _flag(users["grafana"], "--password") == env["GRAFANA_INFLUX_PASSWORD"]
    assert _flag(users["grafana"], "--read-bucket") == "0123456789abcdef" and "--write-bucket" not in users["grafana"]
    assert _sink().username == "sitegw"


@pytest.mark.parametrize("unset", ["SITEGW_INFLUX_PASSWORD", "GRAFANA_INFLUX_PASSWORD", "DOCKER_INFLUXDB_INIT_ORG"])
def test_influxdb_init_script_stops_before_doing_anything_without_its_variables(tmp_path: Path, unset: str) -> None:
    env = _influx_env()
    del env[unset]
    r, calls = _run_init(tmp_path, env)
    assert r.returncode != 0 and unset in r.stderr
    assert calls == []


def test_influxdb_env_example_sets_everything_the_image_needs() -> None:
    keys = _container_env("influxdb")
    required = {"DOCKER_INFLUXDB_INIT_USERNAME", "DOCKER_INFLUXDB_INIT_PASSWORD", "DOCKER_INFLUXDB_INIT_ORG"}
    assert required | {"DOCKER_INFLUXDB_INIT_BUCKET", "DOCKER_INFLUXDB_INIT_ADMIN_TOKEN"} <= keys
    assert _environment(_services()["influxdb"])["DOCKER_INFLUXDB_INIT_MODE"] == "setup"
    script_vars = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", INIT_SCRIPT.read_text(encoding="utf-8")))
    script_vars -= {"SITEGW_INFLUX_DATABASE"}  # optional, defaults to sitegw
    assert script_vars - {"database", "bucket_id", "org"} <= keys | ENTRYPOINT_EXPORTS


# ---- Mosquitto: the real broker with docker/mosquitto.conf and the compose healthcheck ----


def _healthcheck_argv(name: str, port: int) -> list[str]:
    """The service's CMD-SHELL healthcheck as the container's shell would run it, with the port moved."""
    test = _services()[name]["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL"
    cmd = test[1].replace("$$", "$").replace("-p 1883", f"-p {port}")
    return ["sh", "-c", cmd]


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[tuple[services.Service, str]]:
    port = services.free_port()
    password = _env_keys(ROOT / ".env.example")["SITEGW_MQTT_PASSWORD"]
    passwd = tmp_path / "passwd"
    # as README step 2 says, for the login of SITEGW_MQTT_PASSWORD
    subprocess.run([services.need("mosquitto_passwd"), "-c", "-b", str(passwd), "sitegw", password], check=True)
    conf = (ROOT / "docker" / "mosquitto.conf").read_text(encoding="utf-8")
    assert "listener 1883 0.0.0.0" in conf and "password_file /mosquitto/config/passwd" in conf
    conf = conf.replace("listener 1883 0.0.0.0", f"listener {port} 127.0.0.1")
    conf = conf.replace("/mosquitto/config/passwd", str(passwd)).replace("/mosquitto/data/", f"{tmp_path}/")
    (tmp_path / "mosquitto.conf").write_text(conf + "\nuser root\n", encoding="utf-8")
    svc = services.Service(
        "mosquitto", port, tmp_path, [services.need("mosquitto"), "-c", str(tmp_path / "mosquitto.conf")]
    )
    svc.start()
    try:
        yield svc, password
    finally:
        svc.stop()


def test_mosquitto_healthcheck_passes_with_the_gateway_login(broker: tuple[services.Service, str]) -> None:
    svc, password = broker
    r = subprocess.run(
        _healthcheck_argv("mosquitto", svc.port),
        env={**os.environ, "SITEGW_MQTT_PASSWORD": password},
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert r.returncode == 0, r.stderr


def test_mosquitto_healthcheck_fails_with_a_wrong_password(broker: tuple[services.Service, str]) -> None:
    svc, _ = broker
    r = subprocess.run(
        _healthcheck_argv("mosquitto", svc.port),
        env={**os.environ, "SITEGW_MQTT_PASSWORD": "not-the-password"},
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert r.returncode != 0


def test_mosquitto_config_refuses_anonymous_clients(broker: tuple[services.Service, str]) -> None:
    svc, _ = broker
    argv = [services.need("mosquitto_sub"), "-h", "127.0.0.1", "-p", str(svc.port), "-t", "#", "-E", "-W", "5"]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
    assert r.returncode != 0
    assert "not authori" in (r.stdout + r.stderr).lower()


# ---- the gateway's healthcheck command ----


class _Healthz(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/healthz" else 404)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: Any) -> None:
        pass


def _gateway_check(port: int) -> int:
    test = _services()["sitegw"]["healthcheck"]["test"]
    assert test[:2] == ["CMD", "python"]
    argv = [sys.executable, *[a.replace(":8780/", f":{port}/") for a in test[2:]]]
    return subprocess.run(argv, capture_output=True, timeout=30, check=False).returncode


def test_gateway_healthcheck_command_follows_healthz() -> None:
    server = HTTPServer(("127.0.0.1", 0), _Healthz)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        assert _gateway_check(server.server_address[1]) == 0
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert _gateway_check(services.free_port()) != 0  # nothing listening: unhealthy


def test_readme_section_matches_the_stack() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Running in production with Docker Compose", 1)[1].split("\n## ", 1)[0]
    for needle in (
        "cp .env.example .env",
        "docker/site.example.yaml",
        "mosquitto_passwd -c secrets/mosquitto.passwd sitegw",
        "docker compose up -d",
        "docker compose --profile demo up -d",
        "http://<gateway-box>:3000",
        "influxdb:2.7",
        "10-sitegw-v1.sh",
    ):
        assert needle in section, needle
    for f in ("influxdb.env", "sitegw.env", "grafana.env"):
        assert f"cp secrets/{f}.example secrets/{f}" in section
