"""`make demo-region`: three simulated sites reporting to a regional hub (NATS ×3, PostgreSQL, two hub replicas)."""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from services import local
from services.regional import Link, NatsCluster, NatsUser, Postgres, nats_cluster, postgres

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "simulators" / "sites" / "demo.yaml"
COMPANY = "中建示例工程局"  # a contractor group with projects in two cities

# the demo region: 江苏省 → 南京市 (玄武区, 江宁区) and 苏州市 (姑苏区), one project of one site in each county
TREE: dict[str, Any] = {
    "code": "320000", "name": "江苏省", "level": "province", "children": [
        {"code": "320100", "name": "南京市", "level": "city", "children": [
            {"code": "320102", "name": "玄武区", "level": "county", "projects": [
                {"id": "P-XW-01", "name": "玄武区 滨江综合体项目", "company": COMPANY, "sites": ["nj-xw-01"]}]},
            {"code": "320115", "name": "江宁区", "level": "county", "projects": [
                {"id": "P-JN-01", "name": "江宁区 科创园二期", "company": "苏建示例集团", "sites": ["nj-jn-01"]}]},
        ]},
        {"code": "320500", "name": "苏州市", "level": "city", "children": [
            {"code": "320508", "name": "姑苏区", "level": "county", "projects": [
                {"id": "P-GS-01", "name": "姑苏区 轨道交通站点", "company": COMPANY, "sites": ["sz-gs-01"]}]},
        ]},
    ],
}  # fmt: skip
# the people above the sites: (login, scope key, scope, display name)
HUB_USERS = (
    ("sheng", "region", "320000", "省住建厅 安监处"),
    ("nanjing", "region", "320100", "南京市 建筑安全监督站"),
    ("xuanwu", "region", "320102", "玄武区 住建局"),
    ("zhongjian", "company", COMPANY, "中建示例工程局 安全部"),
)


def _say(msg: str) -> None:
    print(f"[demo-region] {msg}", flush=True)


@dataclass
class Site:
    id: str
    project: dict[str, Any]
    county: str
    city: str
    dir: Path
    http: int
    control: int
    passwords: dict[str, str]
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    links: list[Link] = field(default_factory=list)  # its uplink's way to each node, when the region cuts links
    site_file: Path | None = None

    def cut_uplink(self) -> None:
        for ln in self.links:
            ln.cut()

    def restore_uplink(self) -> None:
        for ln in self.links:
            ln.restore()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http}"


def _sites(tree: dict[str, Any], path: tuple[str, ...] = ()) -> list[tuple[dict[str, Any], str, str, str]]:
    out = []
    for c in tree.get("children", []):
        out += _sites(c, (*path, c["name"]))
    for p in tree.get("projects", []):
        out += [(p, s, path[-2], path[-1]) for s in p["sites"]]
    return out


def site_doc(site: Site, mqtt: int, influx: int, nats_urls: list[str], behind_after_s: float = 30) -> dict[str, Any]:
    """demo.yaml cut to its MQTT devices (high formwork and the gas detector), on this site's topics and ports."""
    text = DEMO.read_text(encoding="utf-8").replace("site/demo/", f"site/{site.id}/")
    doc: dict[str, Any] = yaml.safe_load(text.replace("sitegw/demo/", f"sitegw/{site.id}/"))
    doc["site"] = {"id": site.id, "name": site.project["name"], "timezone": "Asia/Shanghai"}
    doc.pop("lines")
    doc["devices"] = [{k: v for k, v in d.items() if k != "position"} for d in doc["devices"] if "broker" in d]
    doc["brokers"][0].update(port=mqtt, client_id=f"sitegw-{site.id}")
    doc["sink"].update(url=f"http://127.0.0.1:{influx}", database=site.id.replace("-", "_"))
    doc["http"] = {"host": "127.0.0.1", "port": site.http}
    doc["alarms"]["console_url"] = site.base
    doc["hazards"].update(region_prefecture=site.city, region_county=site.county,
                          reporting_unit=f"{site.project['company']} {site.project['name']}项目部")  # fmt: skip
    doc["auth"]["users"] = [{**u, "password_env": f"{u['password_env']}_{site.id.upper().replace('-', '_')}"}
                            for u in doc["auth"]["users"]]  # fmt: skip
    doc["uplink"] = {"servers": nats_urls, "user": f"site-{site.id}", "password_env": "SITEGW_UPLINK_PW",
                     "status_s": 5, "behind_after_s": behind_after_s}  # fmt: skip
    return doc


class Region:
    """Every process of the demo region, started in order and stopped in reverse; tests use it too."""

    def __init__(
        self,
        run: Path,
        hub_ports: tuple[int, int] | None = None,
        offline_after_s: float = 20.0,
        cuttable: bool = False,
        behind_after_s: float = 30.0,
    ) -> None:
        self.run = run
        self.cuttable = cuttable  # each site's uplink through a Link per node (tests take a site's uplink away)
        self.behind_after_s = behind_after_s
        self.hub_ports = hub_ports or (local.free_port(), local.free_port())
        self.offline_after_s = offline_after_s
        self.services: list[local.Service] = []
        self.cluster: NatsCluster | None = None
        self.pg: Postgres | None = None
        self.hubs: list[subprocess.Popen[bytes]] = []
        self.sites: list[Site] = []
        self.hub_passwords = {u[0]: secrets.token_urlsafe(9) for u in HUB_USERS}
        self.nats_passwords = {"hub": secrets.token_urlsafe(12)}
        self.env = dict(os.environ, PYTHONUNBUFFERED="1")

    @property
    def hub_url(self) -> str:
        return f"http://127.0.0.1:{self.hub_ports[0]}"

    def start(self) -> None:
        """Everything, in order; whatever started is stopped again when a later part fails."""
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        self.run.mkdir(parents=True, exist_ok=True)
        mq = local.mosquitto(self.run / "mosquitto")
        self.services.append(mq)  # before start(): one that fails to come up is stopped too
        mq.start()
        influx = local.influxdb(self.run / "influxdb")
        self.services.append(influx)
        influx.start()
        for project, sid, city, county in _sites(TREE):
            pw = {u: secrets.token_urlsafe(9) for u in ("admin", "zhang", "li", "screen")}
            self.sites.append(
                Site(sid, project, county, city, self.run / sid, local.free_port(), local.free_port(), pw)
            )
        for s in self.sites:
            self.nats_passwords[s.id] = secrets.token_urlsafe(12)
        users = [NatsUser("hub", self.nats_passwords["hub"])]
        users += [NatsUser(f"site-{s.id}", self.nats_passwords[s.id], site=s.id) for s in self.sites]
        self.cluster = nats_cluster(self.run / "nats", users=users)
        self.cluster.start()
        self.pg = postgres()  # removed by stop(), also when start() fails
        self.pg.start()
        self._start_hubs()
        for s in self.sites:
            self._start_site(s, mq.port, influx.port)

    def _start_hubs(self) -> None:
        assert self.cluster is not None and self.pg is not None
        self.env["SITEGW_HUB_DSN"] = self.pg.dsn
        self.env["SITEGW_HUB_NATS_PW"] = self.nats_passwords["hub"]
        for name, _key, _scope, _disp in HUB_USERS:
            self.env[f"SITEGW_HUB_PW_{name.upper()}"] = self.hub_passwords[name]
        for i, port in enumerate(self.hub_ports):
            cfg = {
                "nats": {"servers": self.cluster.urls, "user": "hub", "password_env": "SITEGW_HUB_NATS_PW",
                         "ack_wait_s": 5},
                "http": {"host": "127.0.0.1", "port": port},
                "offline_after_s": self.offline_after_s,
                "region": TREE,
                "users": [{"name": n, "password_env": f"SITEGW_HUB_PW_{n.upper()}", key: scope, "display_name": d,
                           "role": "supervisor" if n == "sheng" else "viewer"} for n, key, scope, d in HUB_USERS],
            }  # fmt: skip
            path = self.run / f"hub-{i}.yaml"
            path.write_text(yaml.safe_dump(cfg, allow_unicode=True, sort_keys=False), encoding="utf-8")
            self.hubs.append(self._spawn(["hub", "--config", str(path)], self.run / f"hub-{i}.log"))
        self.wait_hubs()

    def restart_hub(self, i: int) -> None:
        """Replica i again, as its supervisor would start it after a crash."""
        if self.hubs[i].poll() is None:
            raise RuntimeError(f"hub replica {i} is still running")
        self.hubs[i] = self._spawn(["hub", "--config", str(self.run / f"hub-{i}.yaml")], self.run / f"hub-{i}.log")
        self.wait_hubs()

    def wait_hubs(self) -> None:
        for port in self.hub_ports:
            local.wait_for(lambda p=port: _up(f"http://127.0.0.1:{p}/healthz"), 60, 0.2, f"hub replica on :{port}")

    def _spawn(self, argv: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        with open(log, "ab") as fh:
            return subprocess.Popen([sys.executable, "-m", "gateway.cli", *argv], stdout=fh,
                                    stderr=subprocess.STDOUT, cwd=ROOT, env=env or self.env)  # fmt: skip

    def _start_site(self, s: Site, mqtt: int, influx: int) -> None:
        assert self.cluster is not None
        s.dir.mkdir(parents=True, exist_ok=True)
        urls = self.cluster.urls
        if self.cuttable:
            s.links = [Link(local.free_port(), n.client_port) for n in self.cluster.nodes]
            s.restore_uplink()
            urls = [ln.url for ln in s.links]
        doc = site_doc(s, mqtt, influx, urls, self.behind_after_s)
        site = s.dir / "site.yaml"
        s.site_file = site
        site.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), encoding="utf-8")
        env = dict(self.env, SITEGW_UPLINK_PW=self.nats_passwords[s.id])
        for u in doc["auth"]["users"]:
            env[u["password_env"]] = s.passwords[u["name"]]
        with open(s.dir / "simulators.log", "ab") as fh:
            sim = subprocess.Popen(
                [sys.executable, "-m", "simulators", "--site", str(site), "--control-port", str(s.control)],
                stdout=subprocess.PIPE, stderr=fh, cwd=ROOT, env=env,
            )  # fmt: skip
        s.procs.append(sim)
        assert sim.stdout is not None
        if "ready" not in sim.stdout.readline().decode():
            raise RuntimeError(f"the simulators of {s.id} did not start; see {s.dir / 'simulators.log'}")
        s.procs.append(self._spawn(["run", str(site)], s.dir / "gateway.log", env))
        local.wait_for(lambda: _up(f"{s.base}/healthz"), 60, 0.2, f"site {s.id}'s gateway")

    def stop(self) -> None:
        procs = [p for s in self.sites for p in reversed(s.procs)] + list(reversed(self.hubs))
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for s in self.sites:
            s.cut_uplink()
        if self.cluster is not None:
            self.cluster.stop()
        if self.pg is not None:
            self.pg.stop()
            self.pg.remove()
        for svc in reversed(self.services):
            svc.stop()


def _up(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def call(base: str, method: str, path: str, body: Any = None, token: str = "") -> Any:
    """One JSON request (stdlib only, like the rest of the demo); an HTTP error raises with its detail."""
    req = urllib.request.Request(base + path, data=None if body is None else json.dumps(body).encode(), method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as err:  # the same error, its message saying why (the answer's detail)
        why = err.read().decode(errors="replace")[:500]
        raise urllib.error.HTTPError(
            err.url, err.code, f"{method} {path}: {err.code} {why}", err.headers, None
        ) from None


def login(base: str, user: str, password: str) -> str:
    token: str = call(base, "POST", "/api/login", {"username": user, "password": password})["token"]
    return token


def raise_major_hazard(site: Site) -> int:
    """At the site's console: the safety officer reports a hazard, the project manager confirms it major (its
    same-day report clock starts there, and at the hub once the event arrives)."""
    officer = login(site.base, "zhang", site.passwords["zhang"])
    h = call(site.base, "POST", "/api/hazards", {"unit_name": site.project["name"],
             "description": "1号塔吊力矩限制器失效（演示）", "source": "self_check"}, officer)  # fmt: skip
    manager = login(site.base, "li", site.passwords["li"])
    basis = {"version": "2024", "article": "8(四)", "text_zh": "起重机械安全装置不齐全、失效或者被违规拆除、破坏"}
    call(site.base, "POST", f"/api/hazards/{h['id']}/confirm", {"klass": "major", "basis": basis}, manager)
    return int(h["id"])


def main() -> int:
    ap = argparse.ArgumentParser(prog="demo-region")
    ap.add_argument("--check", action="store_true", help="exit after showing a major hazard reach the hub")
    args = ap.parse_args()
    run = ROOT / ".run" / "region"
    shutil.rmtree(run, ignore_errors=True)
    t0 = time.monotonic()
    region = Region(run, (local.free_port() if not local.port_free(8790) else 8790, local.free_port()))
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        region.start()
        _say(f"NATS ×3, PostgreSQL, 2 hub replicas, 3 sites up in {time.monotonic() - t0:.0f} s")
        site = region.sites[0]
        t_raise = time.monotonic()
        hid = raise_major_hazard(site)
        token = login(region.hub_url, "sheng", region.hub_passwords["sheng"])

        def arrived() -> Any:
            return [h for h in call(region.hub_url, "GET", "/api/major-hazards", None, token)
                    if h["site"] == site.id and h["hazard_id"] == hid]  # fmt: skip

        (h,) = local.wait_for(arrived, 30, 0.2, "the major hazard at the hub")
        left = h["report_clock"]["left_s"]
        _say(f"major hazard {site.id}#{hid} at the hub {time.monotonic() - t_raise:.1f} s after it was confirmed; "
             f"same-day report clock: {left // 3600} h {left % 3600 // 60} min left")  # fmt: skip
        logins = ", ".join(f"{n}={region.hub_passwords[n]} ({d})" for n, _k, _s, d in HUB_USERS)
        print(
            f"""
================================================================================
 SiteGW regional hub: {region.hub_url}/   (second replica: http://127.0.0.1:{region.hub_ports[1]}/)
 Logins (this run's passwords): {logins}
 Sites: {", ".join(f"{s.id} console {s.base}/ (zhang={s.passwords['zhang']})" for s in region.sites)}
 Logs: {run}/hub-*.log, {run}/<site>/gateway.log       Ctrl-C stops everything.
================================================================================""",
            flush=True,
        )
        if args.check:
            return 0
        while True:
            time.sleep(10)
            dead = [s.id for s in region.sites for p in s.procs if p.poll() is not None]
            dead += [f"hub-{i}" for i, p in enumerate(region.hubs) if p.poll() is not None]
            if dead:
                _say(f"stopped: {', '.join(dead)}; see the logs under {run}")
                return 1
            try:
                t = call(region.hub_url, "GET", "/api/sites", None, token)["totals"]
            except (OSError, urllib.error.HTTPError):
                continue
            _say(f"sites online {t['online']}/{t['sites']}, active alarms {t['alarms']}, open hazards "
                 f"{t['open_hazards']} (major {t['major_open']}), overdue {t['overdue']}")  # fmt: skip
    except KeyboardInterrupt:
        _say("stopping")
        return 0
    finally:
        region.stop()


if __name__ == "__main__":
    sys.exit(main())
