"""`make demo`: a live simulated site end to end — Mosquitto, InfluxDB, the simulators and the gateway."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from services import local

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / ".run" / "demo"
SITE = ROOT / "simulators" / "sites" / "demo.yaml"


def _port(preferred: int) -> int:
    return preferred if local.port_free(preferred) else local.free_port()


def _say(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


class _Api:
    """A logged-in client of the gateway's HTTP API (stdlib only, like the rest of the demo)."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.token = ""

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read())

    def login(self, user: str, password: str) -> None:
        local.wait_for(lambda: _reachable(self.base), 30, what="the gateway's HTTP API")
        self.token = self._call("POST", "/api/login", {"username": user, "password": password})["token"]

    def get(self, path: str) -> Any:
        return self._call("GET", path)

    def put(self, path: str, body: dict[str, Any]) -> Any:
        return self._call("PUT", path, body)


def _reachable(base: str) -> bool:
    try:
        with urllib.request.urlopen(base + "/healthz", timeout=2):
            return True
    except OSError:
        return False


def main() -> int:
    t_start = time.monotonic()
    if RUN.exists():
        shutil.rmtree(RUN)  # a fresh site every time: no stale spool, no old data
    RUN.mkdir(parents=True)
    doc = yaml.safe_load(SITE.read_text(encoding="utf-8"))
    plan = doc["site"].get("plan") or {}
    if plan.get("image"):  # the copy lives elsewhere: the drawing stays where demo.yaml is
        plan["image"] = str(SITE.parent / plan["image"])
    mqtt_port = _port(doc["brokers"][0]["port"])
    influx_port = _port(int(doc["sink"]["url"].rsplit(":", 1)[1]))
    http_port = _port(8780)
    control_port = _port(8781)
    doc["brokers"][0]["port"] = mqtt_port
    doc["sink"]["url"] = f"http://127.0.0.1:{influx_port}"
    doc["http"] = {"host": "127.0.0.1", "port": http_port}
    for ln in doc["lines"]:
        if ln["type"] == "modbus_tcp":
            ln["port"] = _port(ln["port"])
    site = RUN / "site.yaml"
    site.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), encoding="utf-8")

    children: list[tuple[str, subprocess.Popen[bytes]]] = []
    services: list[local.Service] = []

    def stop_all() -> None:
        for _name, p in reversed(children):
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for name, p in reversed(children):
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                _say(f"{name} did not stop in 10 s; killing it")
                p.kill()
        for s in reversed(services):
            s.stop()

    # Ctrl-C and SIGTERM both stop the demo, even when started with SIGINT ignored (a background job)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        mq = local.mosquitto(RUN / "mosquitto", mqtt_port)
        mq.start()
        services.append(mq)
        _say(f"Mosquitto on 127.0.0.1:{mqtt_port}")
        db = local.influxdb(RUN / "influxdb", influx_port)
        db.start()
        services.append(db)
        _say(f"InfluxDB 1.x on 127.0.0.1:{influx_port}")
        # demo logins: fresh random passwords each run, handed to the gateway through its environment only
        passwords = {u["name"]: secrets.token_urlsafe(9) for u in doc["auth"]["users"]}
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        for u in doc["auth"]["users"]:
            env[u["password_env"]] = passwords[u["name"]]
        sim_log = open(RUN / "simulators.log", "wb")
        sim = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "simulators",
                "--site",
                str(site),
                "--control-port",
                str(control_port),
                "--time-scale",
                "720",
            ],
            stdout=subprocess.PIPE,
            stderr=sim_log,
            cwd=ROOT,
            env=env,
        )
        children.append(("simulators", sim))
        assert sim.stdout is not None
        ready = sim.stdout.readline().decode()
        if "ready" not in ready:
            _say(f"the simulators did not start; see {RUN / 'simulators.log'}")
            return 1
        _say(f"simulators running (control API http://127.0.0.1:{control_port}/state)")
        gw_log = open(RUN / "gateway.log", "wb")
        gw = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "run", str(site)],
            stdout=gw_log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=env,
        )
        children.append(("gateway", gw))
        db_name = doc["sink"]["database"]

        def count() -> int:
            got = local.rows(influx_port, db_name, "SELECT count(load) FROM tower_crane")
            return int(got[0]["count"]) if got else 0

        local.wait_for(count, 60, what="the first crane readings in InfluxDB")
        api = _Api(http_port)
        api.login("li", passwords["li"])
        # cumulative excavation change is measured from a baseline (初始值): the manager sets it from the first
        # readings, as a surveyor would on day one (each one audited with who and why)
        for dev in ("PIT-D01", "PIT-D02"):
            for q in ("horizontal_displacement", "vertical_displacement"):
                local.wait_for(lambda d=dev, q=q: q in api.get("/api/latest").get(d, {}), 30, what=f"{dev} {q}")
                api.put(f"/api/baselines/{dev}/{q}", {"why": "演示: 初始值取首次读数"})
        _say("baselines set for PIT-D01 and PIT-D02 (PUT /api/baselines/...)")
        q = "SELECT last(load), last(load_moment_ratio), last(wind_speed) FROM tower_crane GROUP BY device"
        url = f"http://127.0.0.1:{influx_port}/query?" + urllib.parse.urlencode({"db": db_name, "q": q})
        print(
            f"""
================================================================================
 SiteGW demo is live ({time.monotonic() - t_start:.0f} s to start). Site: {doc["site"]["name"]}
   devices: 2 tower cranes (Modbus TCP), 4 excavation gauges (Modbus RTU on a pty bus),
            2 high-formwork points and 1 four-gas detector (MQTT JSON)
 Live console: http://127.0.0.1:{http_port}/   (log in as zhang / {passwords["zhang"]}; wall: /?kiosk=1)
 Look at it:
   curl -sG '{url.split("?")[0]}' --data-urlencode 'db={db_name}' \\
        --data-urlencode "q={q}"
   curl -s http://127.0.0.1:{http_port}/metrics        (gateway self-metrics, no login)
   mosquitto_sub -p {mqtt_port} -t 'site/#' -v          (raw MQTT traffic)
   mosquitto_sub -p {mqtt_port} -t 'sitegw/demo/siren'  (the site siren: escalated alarms)
 Log in (this run's passwords: {", ".join(f"{k}={v}" for k, v in passwords.items())}):
   curl -s -c {RUN}/cookies -XPOST 127.0.0.1:{http_port}/api/login -H 'content-type: application/json' \
        -d '{{"username":"zhang","password":"{passwords["zhang"]}"}}'
   curl -s -b {RUN}/cookies 127.0.0.1:{http_port}/api/latest
   curl -s -b {RUN}/cookies '127.0.0.1:{http_port}/api/alarms?open_only=true'
   curl -s -b {RUN}/cookies -XPOST -H 'content-type: application/json' \
        127.0.0.1:{http_port}/api/alarms/1/ack -d '{{"comment":"已到现场"}}'
 Rehearse a fault (the gateway marks the device offline, up=0, and raises health.stale):
   curl -s -XPOST 127.0.0.1:{control_port}/fault -d '{{"device":"PIT-D02","mode":"offline"}}'
 Rehearse a gas leak (detector reads 30 %LEL: gas.lel 报警, the siren sounds):
   curl -s -XPOST 127.0.0.1:{control_port}/set -d '{{"device":"GAS-01","values":{{"lel":30}}}}'
 Logs: {RUN}/gateway.log, {RUN}/simulators.log      Ctrl-C stops everything.
================================================================================
""",
            flush=True,
        )
        while True:
            time.sleep(5)
            for name, p in children:
                if p.poll() is not None:
                    _say(f"{name} exited with {p.returncode}; see {RUN}/{name}.log")
                    return 1
            try:
                latest = api.get("/api/latest")
                alarms = api.get("/api/alarms?open_only=true")
            except OSError:
                continue
            tc = latest.get("TC-01", {})
            pit = latest.get("PIT-D01", {})
            gas = latest.get("GAS-01", {})

            def v(d: dict[str, dict[str, float]], k: str) -> str:
                return f"{round(d[k]['value'], 2) + 0.0:.2f}" if k in d else "-"

            _say(
                f"rows={count()}  TC-01 load {v(tc, 'load')} t, moment {v(tc, 'load_moment_ratio')} %, wind "
                f"{v(tc, 'wind_speed')} m/s | PIT-D01 settlement {v(pit, 'vertical_displacement')} mm | "
                f"GAS-01 LEL {v(gas, 'lel')} %, O2 {v(gas, 'o2')} % | open alarms: "
                + (", ".join(f"#{a['id']} {a['rule']}@{a['device']} {a['level_zh']}" for a in alarms) or "none")
            )
    except KeyboardInterrupt:
        _say("stopping")
        return 0
    finally:
        stop_all()


if __name__ == "__main__":
    sys.exit(main())
