"""The soak run: services, simulators, gateway, the fault script in cycles until the time is up, then a drain."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drivers.profile import MqttProfile
from gateway.config import load_config
from services import local
from simulators.payloads import topic_for
from soak.faults import Script
from soak.observer import Observer, inject_malformed, prime_session
from soak.procmon import ProcMonitor
from soak.site import ROOT, SoakSite, write_site

GAS, GAS_LEL = "GAS-01", 30.0  # 30 %LEL: above gas.lel 报警 (25), below 危险 (50)
FLAP_MQTT, FLAP_MODBUS = "FW-A02", "PIT-D02"
MALFORMED_PER_CYCLE = 5
WAIT_S = 90.0  # generous: the machine is shared, and behaviour is waited for, never timed


def say(msg: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def _post_json(url: str, body: dict[str, Any]) -> Any:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


@dataclass
class Pace:
    """Seconds between fault steps and how long each fault lasts; compressed for the short run."""

    gap_s: float
    influx_down_s: float
    gateway_down_s: float
    kill_every: int  # cycles per gateway kill -9: long runs keep lives of 5+ min, to judge RSS and fds on them

    @staticmethod
    def for_minutes(minutes: float) -> Pace:
        return Pace(20.0, 20.0, 5.0, 3) if minutes >= 10 else Pace(2.0, 6.0, 2.0, 1)


@dataclass
class Soak:
    run: Path
    minutes: float
    site: SoakSite = field(init=False)
    script: Script = field(default_factory=Script)
    procmon: ProcMonitor = field(default_factory=ProcMonitor)
    dropped_by_pid: dict[int, int] = field(default_factory=dict)
    injected: list[str] = field(default_factory=list)
    gas_cycles: int = 0

    def __post_init__(self) -> None:
        if self.run.exists():
            shutil.rmtree(self.run)  # a fresh site every time: no stale spool, alarm state or data
        self.run.mkdir(parents=True)
        self.site = write_site(self.run)
        self.cfg = load_config(self.site.path)
        self.pace = Pace.for_minutes(self.minutes)
        self.env = dict(os.environ, PYTHONUNBUFFERED="1", **self.site.env)
        self.gw: subprocess.Popen[bytes] | None = None
        self.sim: subprocess.Popen[bytes] | None = None
        self._stop_scrape = threading.Event()

    # ---- processes ---------------------------------------------------------------------------------------

    def start_services(self) -> None:
        s = self.site
        # persistence on, as in docker/mosquitto.conf: a production broker keeps sessions and queued QoS 1
        # messages across a restart (with persistence off a restart loses them; README, Known issues)
        extra = f"persistence true\npersistence_location {self.run / 'mosquitto'}/\nautosave_interval 60\n"
        self.mq = local.mosquitto(self.run / "mosquitto", s.mqtt_port, extra=extra)
        self.mq.start()
        self.db = local.influxdb(self.run / "influxdb", s.influx_port)
        self.db.start()
        topics = sorted({str(d["topic"]) for d in s.doc["devices"] if "broker" in d})
        self.observer = Observer(s.mqtt_port, topics, s.dead_letter_topic, s.siren_topic)
        self.observer.start()
        prime_session(s.mqtt_port, str(s.doc["brokers"][0]["client_id"]), topics)
        say(f"Mosquitto :{s.mqtt_port} (persistence on), InfluxDB :{s.influx_port}, witness subscribed to {topics}")

    def start_simulators(self) -> None:
        argv = [sys.executable, "-m", "soak.simproc", "--site", str(self.site.path)]
        argv += ["--control-port", str(self.site.control_port), "--ledger", str(self.run / "modbus-ledger.json")]
        with open(self.run / "simulators.log", "ab") as log:
            self.sim = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, cwd=ROOT, env=self.env)
        assert self.sim.stdout is not None
        if "ready" not in self.sim.stdout.readline().decode():
            raise RuntimeError(f"the simulators did not start; see {self.run / 'simulators.log'}")
        say(f"simulators ready (control API :{self.site.control_port})")

    def start_gateway(self) -> None:
        with open(self.run / "gateway.log", "ab") as log:
            self.gw = subprocess.Popen(
                [sys.executable, "-m", "gateway.cli", "run", str(self.site.path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                env=self.env,
            )
        self.procmon.track(self.gw.pid)
        local.wait_for(self.healthz, WAIT_S, 0.2, "the gateway's /healthz")

    def stop_gateway(self) -> None:
        if self.gw is not None:
            local.stop_process(self.gw, 60)  # SIGTERM: it flushes to the database for up to 5 s

    def stop_simulators(self) -> None:
        if self.sim is not None:
            local.stop_process(self.sim, 30)  # SIGTERM: it writes the Modbus ledger

    def close(self) -> None:
        self._stop_scrape.set()
        self.stop_simulators()
        self.stop_gateway()
        self.procmon.stop()
        for name in ("observer", "db", "mq"):  # whatever was started, even when the start failed half-way
            part = getattr(self, name, None)
            if part is not None:
                try:
                    part.stop()
                except OSError as err:
                    say(f"stopping {name}: {err}")

    # ---- observations ------------------------------------------------------------------------------------

    def healthz(self) -> dict[str, Any]:
        return dict(_get_json(f"http://127.0.0.1:{self.site.http_port}/healthz"))

    def _up(self, device: str) -> int | None:
        try:
            v = self.healthz()["devices_up"].get(device)
        except (OSError, ValueError, KeyError):
            return None
        return None if v is None else int(v)

    def wait_up(self, device: str, value: int) -> None:
        local.wait_for(lambda: self._up(device) == value, WAIT_S, 0.2, f"{device} up = {value}")

    def wait_all_up(self) -> None:
        devices = [str(d["id"]) for d in self.site.doc["devices"]]
        local.wait_for(lambda: all(self._up(d) == 1 for d in devices), WAIT_S, 0.3, "every device up = 1")

    def _scrape_dropped(self) -> None:
        """The spool's dropped-lines counter lives in the gateway's memory: keep the highest value of each life."""
        while not self._stop_scrape.wait(1.0):
            gw = self.gw
            if gw is None or gw.poll() is not None:
                continue
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.site.http_port}/metrics", timeout=3) as r:
                    text = r.read().decode()
            except (OSError, urllib.error.URLError):
                continue
            for line in text.splitlines():
                if line.startswith("sitegw_spool_dropped_lines_total"):
                    v = int(float(line.split()[-1]))
                    self.dropped_by_pid[gw.pid] = max(v, self.dropped_by_pid.get(gw.pid, 0))

    def _gas_alarm(self) -> tuple[str, int] | None:
        if not self.site.state_file.exists():
            return None
        conn = sqlite3.connect(f"file:{self.site.state_file}?mode=ro", uri=True, timeout=5)
        try:
            row = conn.execute(
                "SELECT state, raise_count FROM alarm_alarms WHERE rule = 'gas.lel' AND device = ? "
                "ORDER BY id DESC LIMIT 1",
                (GAS,),
            ).fetchone()
        except sqlite3.OperationalError:  # the gateway has not created its tables yet
            return None
        finally:
            conn.close()
        return None if row is None else (str(row[0]), int(row[1]))

    # ---- the fault script --------------------------------------------------------------------------------

    def control(self, path: str, body: dict[str, Any]) -> None:
        _post_json(f"http://127.0.0.1:{self.site.control_port}{path}", body)

    def gas_leak(self) -> None:
        """Pin the detector at 30 %LEL until the alarm is raised, then release it until it has returned to normal.
        Nobody acknowledges, so by lifecycle.py the one gas.lel alarm goes RTN_UNACKED and is re-raised on the same
        row each time: k leaks are k "raised" events of one alarm (raise_count = k)."""
        ev = self.script.begin("gas", GAS)
        self.gas_cycles += 1
        k = self.gas_cycles
        self.control("/set", {"device": GAS, "values": {"lel": GAS_LEL}})
        local.wait_for(lambda: self._gas_alarm() == ("active_unacked", k), WAIT_S, 0.3, f"gas.lel raised ({k})")
        self.control("/release", {"device": GAS})
        local.wait_for(lambda: (self._gas_alarm() or ("", 0))[0] == "rtn_unacked", WAIT_S, 0.3, "gas.lel cleared")
        self.script.end(ev)

    def flap(self, device: str) -> None:
        ev = self.script.begin("flap", device)
        self.control("/fault", {"device": device, "mode": "offline"})
        self.wait_up(device, 0)
        self.control("/fault", {"device": device, "mode": "none"})
        self.wait_up(device, 1)
        self.script.end(ev)

    def malformed(self) -> None:
        ev = self.script.begin("malformed")
        dev = next(d for d in self.cfg.devices if d.id == GAS)
        profile = self.cfg.profile_of(dev)
        assert isinstance(profile, MqttProfile)
        topic = topic_for(dev, profile)
        self.injected += inject_malformed(self.site.mqtt_port, topic, len(self.injected), MALFORMED_PER_CYCLE)
        self.script.end(ev)

    def broker_restart(self) -> None:
        ev = self.script.begin("broker_restart")
        self.mq.restart()
        self.wait_all_up()
        self.script.end(ev)

    def influx_outage(self) -> None:
        ev = self.script.begin("influx_outage")
        self.db.kill()
        time.sleep(self.pace.influx_down_s)
        self.db.start()
        local.wait_for(lambda: self.healthz()["database_up"], WAIT_S, 0.3, "database_up again")
        self.script.end(ev)

    def gateway_kill9(self) -> None:
        assert self.gw is not None
        ev = self.script.begin("gateway_kill9")
        self.gw.kill()  # SIGKILL: no flush, no clean exit
        self.gw.wait()
        ev.detail["killed_at_ns"] = time.time_ns()
        time.sleep(self.pace.gateway_down_s)
        self.start_gateway()
        self.wait_all_up()
        self.script.end(ev)

    def cycle(self, n: int) -> None:
        steps = [
            self.gas_leak,
            lambda: self.flap(FLAP_MQTT),
            lambda: self.flap(FLAP_MODBUS),
            self.malformed,
            self.broker_restart,
            self.influx_outage,
        ]
        if n % self.pace.kill_every == 0:
            steps.append(self.gateway_kill9)
        for step in steps:
            step()
            time.sleep(self.pace.gap_s)

    # ---- the whole run -----------------------------------------------------------------------------------

    def execute(self) -> None:
        t0 = time.monotonic()
        self.start_services()
        self.start_simulators()
        self.start_gateway()
        threading.Thread(target=self._scrape_dropped, name="soak-metrics", daemon=True).start()
        self.wait_all_up()
        say(f"site up; fault script for {self.minutes:g} min (gap {self.pace.gap_s:g} s between steps)")
        deadline = t0 + self.minutes * 60
        n = 0
        while n == 0 or time.monotonic() < deadline:
            n += 1
            self.cycle(n)
            say(f"cycle {n} done ({(time.monotonic() - t0) / 60:.1f} min): {self.script.summary()}")
        self.drain()

    def drain(self) -> None:
        """Stop the devices, then let the gateway deliver everything before it stops cleanly."""
        ev = self.script.begin("shutdown")  # devices going silent now is expected: health.stale is allowed
        self.stop_simulators()
        say("simulators stopped; draining the gateway")
        self.observer.quiet_for(5, WAIT_S)

        def drained() -> bool:
            h = self.healthz()
            return bool(h["database_up"]) and int(h["spool_pending_bytes"]) == 0

        local.wait_for(drained, WAIT_S * 2, 0.5, "the spool to drain")
        time.sleep(3)  # a message taken from the broker just now is spooled and written within a batch
        local.wait_for(drained, WAIT_S * 2, 0.5, "the spool to drain")
        self.stop_gateway()
        self._stop_scrape.set()
        self.script.end(ev)
