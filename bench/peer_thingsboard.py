"""ThingsBoard IoT Gateway beside SiteGW: the same Modbus devices, CPU per reading, RSS and requests on the wire."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from bench.common import ROOT, loop_args, pin_subject, proc_cpu_s
from bench.modbus_poll import RUN_DIR, Servers, fresh_dir, opt, proc_rss_mib, row, write_site
from services.local import Service, free_port, influxdb, mosquitto, stop_process, wait_port

PEER = Path(__file__).resolve().parent / "peer"
TB_VENV = RUN_DIR / "tb-venv"
TB_BIN = TB_VENV / "bin" / "thingsboard-gateway"
TB_TELEMETRY = "v1/gateway/telemetry"
TB_RPC_REQUEST = "v1/devices/me/rpc/request/"
# What a ThingsBoard server answers to the gateway's "getSessionLimits" RPC: "0:0," is no limit. Without an answer
# tb-mqtt-client 1.13 never sets rate_limits_received and the gateway polls its devices but never publishes.
SESSION_LIMITS = {
    "rateLimits": {"messages": "0:0,", "telemetryMessages": "0:0,", "telemetryDataPoints": "0:0,"},
    "gatewayRateLimits": {"messages": "0:0,", "telemetryMessages": "0:0,", "telemetryDataPoints": "0:0,"},
    "maxInflightMessages": 10000,
    "maxPayloadSize": 65536,
}
VALUES = 10  # float32 values per device, holding registers 0..19


@dataclass
class Side:
    """What one gateway did over the measuring window."""

    readings: int
    cpu_s: float
    wall_s: float
    requests: int  # seen by the servers
    rss_mib: float

    @property
    def rate(self) -> float:
        return self.readings / self.wall_s

    @property
    def cpu_ms_per_1k(self) -> float:
        return 1e6 * self.cpu_s / max(self.readings, 1)


def _measure(pid: int, servers: Servers, readings: Callable[[], int], warm_s: float, seconds: float) -> Side:
    pin_subject(pid)
    time.sleep(warm_s)
    r0, c0, q0, t0 = readings(), proc_cpu_s(pid), servers.requests(), time.monotonic()
    time.sleep(seconds)
    r1, c1, q1, t1 = readings(), proc_cpu_s(pid), servers.requests(), time.monotonic()
    # the server counts lag by at most one 0.1 s stats period at both ends: the lag cancels at a steady rate
    return Side(r1 - r0, c1 - c0, t1 - t0, q1 - q0, proc_rss_mib(pid))


def _stop(proc: subprocess.Popen[bytes]) -> None:
    stop_process(proc, 15)


# ---------------------------------------------------------------- SiteGW: `sitegw run` as its own process


def _metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def run_ours(workdir: Path, site: Path, http_port: int, servers: Servers, warm_s: float, seconds: float) -> Side:
    with open(workdir / "sitegw.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "--log-level", "warning", "run", *loop_args(), str(site)],
            cwd=workdir,
            # the gateway of this tree, not whatever the venv's editable install points at (a worktree's bench
            # would otherwise measure another checkout's code: cwd is the run's own directory, not the tree)
            env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_port(http_port, 30, proc)
        modbus = 'sitegw_driver_readings_total{driver="modbus"}'
        return _measure(proc.pid, servers, lambda: int(_metric(http_port, modbus)), warm_s, seconds)
    finally:
        _stop(proc)


# ---------------------------------------------------------------- ThingsBoard IoT Gateway in its own venv


def tb_install() -> str:
    """pip-install the peer into its own venv once; returns its version."""
    if not TB_BIN.exists():
        subprocess.run([sys.executable, "-m", "venv", str(TB_VENV)], check=True)
        pip = [str(TB_VENV / "bin" / "pip"), "install", "-q"]
        subprocess.run([*pip, "thingsboard-gateway"], check=True)
        # the connector pip-installs its pinned pymodbus at import time otherwise (in the middle of a measurement)
        subprocess.run([*pip, "pymodbus==3.9.2", "pyserial", "pyserial-asyncio"], check=True)
    out = subprocess.run(
        [
            str(TB_VENV / "bin" / "python"),
            "-c",
            "from importlib.metadata import version as v; print(v('thingsboard-gateway'))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def tb_config(workdir: Path, mqtt_port: int, devices: list[tuple[str, int]], poll_ms: int) -> Path:
    """The peer's config dir: its stock files (logs.json and friends) with our gateway and Modbus connector."""
    pkg = next((TB_VENV / "lib").glob("python3*/site-packages/thingsboard_gateway/config"))
    conf = workdir / "tb-config"
    shutil.copytree(pkg, conf)
    gw = json.loads((PEER / "tb_gateway.json").read_text())
    gw["thingsboard"]["port"] = mqtt_port
    (conf / "tb_gateway.json").write_text(json.dumps(gw, indent=2))
    template = json.loads((PEER / "modbus_slave.json").read_text())
    series = [
        {"tag": f"v{k}", "type": "32float", "functionCode": 3, "objectsCount": 2, "address": 2 * k}
        for k in range(VALUES)
    ]
    slaves = [
        {**template, "deviceName": name, "port": port, "pollPeriod": poll_ms, "timeseries": series}
        for name, port in devices
    ]
    (conf / "modbus.json").write_text(json.dumps({"master": {"slaves": slaves}}, indent=2))
    # logs at WARNING to files under the workdir: its default DEBUG to stdout would cost it CPU we would count
    logs = json.loads((conf / "logs.json").read_text())
    for lg in logs.get("loggers", {}).values():
        lg["level"] = "WARNING"
    for h in logs.get("handlers", {}).values():
        if "filename" in h:
            h["filename"] = str(workdir / "tb-logs" / Path(h["filename"]).name)
    (workdir / "tb-logs").mkdir()
    (conf / "logs.json").write_text(json.dumps(logs, indent=2))
    return conf


class TelemetryCounter:
    """Stands in for the ThingsBoard server on our Mosquitto: counts the values the peer publishes to
    v1/gateway/telemetry ({device: [{ts, values: {...}}]}) and answers its session-limits RPC."""

    def __init__(self, port: int) -> None:
        self.values = 0
        self.messages = 0
        self._lock = threading.Lock()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id="sitegw-bench-tb-counter")
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe([(TB_TELEMETRY, 0), (TB_RPC_REQUEST + "+", 1)])
        self.client.loop_start()

    def _on_message(self, _c: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
        if msg.topic.startswith(TB_RPC_REQUEST):
            req_id = msg.topic.rsplit("/", 1)[1]
            if json.loads(msg.payload).get("method") == "getSessionLimits":
                self.client.publish(f"v1/devices/me/rpc/response/{req_id}", json.dumps(SESSION_LIMITS), qos=1)
            return
        n = 0
        for entries in json.loads(msg.payload).values():
            for e in entries if isinstance(entries, list) else [entries]:
                n += len(e.get("values", {})) if "values" in e else len(e)
        with self._lock:
            self.values += n
            self.messages += 1

    def count(self) -> int:
        with self._lock:
            return self.values

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def run_tb(
    workdir: Path, conf: Path, counter: TelemetryCounter, servers: Servers, warm_s: float, seconds: float
) -> Side:
    env = {**os.environ, "TB_GW_CONFIG_DIR": str(conf) + os.sep}
    with open(workdir / "tb-gateway.log", "wb") as log:
        proc = subprocess.Popen([str(TB_BIN)], cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while counter.count() == 0:  # started: its first telemetry reached the broker
            if proc.poll() is not None:
                raise RuntimeError(
                    f"thingsboard-gateway exited with {proc.returncode}; see {workdir / 'tb-gateway.log'}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"no telemetry from thingsboard-gateway in 60 s; see {workdir / 'tb-gateway.log'}")
            time.sleep(0.2)
        return _measure(proc.pid, servers, counter.count, warm_s, seconds)
    finally:
        _stop(proc)


# ---------------------------------------------------------------- the comparison


def float10_site(
    workdir: Path, ports: list[int], poll_s: float, db_port: int, http_port: int
) -> tuple[Path, list[dict[str, Any]]]:
    """The site file of the Modbus comparisons: one bench_float10_v1 device per TCP port, polled every `poll_s`,
    writing to InfluxDB; its path and its device entries."""
    w = max(2, len(str(len(ports) - 1)))
    lines = [{"id": f"l{i:0{w}d}", "type": "modbus_tcp", "host": "127.0.0.1", "port": p} for i, p in enumerate(ports)]
    devices = [
        {"id": f"D{i:0{w}d}", "profile": "bench_float10_v1", "line": f"l{i:0{w}d}", "unit_id": 1}
        | {"poll_interval_s": poll_s, "timeout_s": min(0.5, poll_s / 2)}
        for i in range(len(ports))
    ]
    site = workdir / "site.yaml"
    write_site(
        site,
        lines,
        devices,
        profile_dirs=[str(PEER / "profiles")],
        sink={"type": "influxdb_v1", "url": f"http://127.0.0.1:{db_port}", "database": "bench"},
        http={"port": http_port},
    )
    return site, devices


def compare(n: int, poll_s: float, warm_s: float, seconds: float) -> list[dict[str, Any]]:
    version = tb_install()
    workdir = fresh_dir("peer_thingsboard")
    mq: Service = mosquitto(workdir / "mosquitto")
    db: Service = influxdb(workdir / "influxdb")
    http_port = free_port()
    ports = [free_port() for _ in range(n)]
    site, devices = float10_site(workdir, ports, poll_s, db.port, http_port)
    mq.start()
    db.start()
    try:
        with Servers(site, workdir) as servers:
            ours = run_ours(workdir, site, http_port, servers, warm_s, seconds)
            counter = TelemetryCounter(mq.port)
            try:
                conf = tb_config(
                    workdir,
                    mq.port,
                    [(str(d["id"]), p) for d, p in zip(devices, ports, strict=True)],
                    int(poll_s * 1000),
                )
                tb = run_tb(workdir, conf, counter, servers, warm_s, seconds)
            finally:
                counter.close()
    finally:
        mq.stop()
        db.stop()
    nominal = n * VALUES / poll_s
    where = (
        f"{n} devices x {VALUES} float32, poll every {poll_s:g} s (nominal {nominal:.0f} readings/s), "
        f"{seconds:g} s window"
    )
    peer = f"thingsboard-gateway {version}"
    return [
        row(
            "peer_tb_cpu_per_1k_readings",
            ours.cpu_ms_per_1k,
            "CPU-ms/1000 readings (sitegw run, to InfluxDB)",
            tb.cpu_ms_per_1k,
            f"CPU-ms/1000 readings ({peer}, to MQTT)",
            "<= 0.10",
            f"{where}; utime+stime from /proc/<pid>/stat",
        ),
        row("peer_tb_readings_per_s", ours.rate, "readings/s (sitegw)", tb.rate, f"readings/s ({peer})", "", where),
        row(
            "peer_tb_rss",
            ours.rss_mib,
            "MiB RSS (sitegw)",
            tb.rss_mib,
            f"MiB RSS ({peer})",
            "",
            "VmRSS at the end of the window",
        ),
        row(
            "peer_tb_modbus_requests_per_s",
            ours.requests / ours.wall_s,
            "requests/s seen by the servers (sitegw)",
            tb.requests / tb.wall_s,
            f"requests/s ({peer})",
            "",
            f"requests per {VALUES} values: sitegw {VALUES * ours.requests / max(ours.readings, 1):.2f}, "
            f"peer {VALUES * tb.requests / max(tb.readings, 1):.2f} (1 = merged into one block read)",
        ),
    ]


def run(args: Any) -> list[dict[str, Any]]:
    """Harness entry. Options read from `args` when present: short, peer_devices, peer_poll_s, seconds."""
    short = bool(opt(args, "short", False))
    n = int(opt(args, "peer_devices", 10))
    poll_s = float(opt(args, "peer_poll_s", 0.1))
    seconds = float(opt(args, "seconds", 5.0 if short else 20.0))
    return compare(n, poll_s, 3.0, seconds)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.peer_thingsboard", description=__doc__)
    p.add_argument("--short", action="store_true")
    p.add_argument("--peer-devices", type=int)
    p.add_argument("--peer-poll-s", type=float)
    p.add_argument("--seconds", type=float)
    for r in run(p.parse_args(argv)):
        print(json.dumps(r, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
