"""Shared pieces of the benchmarks: results, machine facts, services, the gateway as a subprocess, publishers, RSS."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

import paho.mqtt.client as paho
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from bench import publisher
from gateway import eventloop
from services import local
from services.local import Service

ROOT = Path(__file__).resolve().parent.parent
RUN_DIR = ROOT / ".run" / "bench"


@dataclass
class Result:
    """One benchmark: its headline figure beside the bare-library baseline of the same run, and the target."""

    name: str
    figure: float | None  # the headline number (unit in `unit`)
    baseline: float | None
    unit: str
    ratio: float | None  # figure / baseline (what SiteGW's own layers cost), None when not meaningful
    target: str
    met: bool | None  # None: not decided (e.g. the benchmark failed)
    details: dict[str, Any] = field(default_factory=dict)  # every other figure, for the JSON report
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Options:
    long: bool
    workdir: Path


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def percentile(xs: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100); with 50 samples p99 is the largest but one... or the largest."""
    s = sorted(xs)
    k = max(0, min(len(s) - 1, round(p / 100 * len(s) + 0.5) - 1))
    return s[k]


def slope_per_min(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) samples, per minute."""
    if len(samples) < 2:
        return 0.0
    xs = [t for t, _ in samples]
    ys = [v for _, v in samples]
    return float(statistics.linear_regression(xs, ys).slope) * 60


# ---- machine facts ---------------------------------------------------------------------------------------------


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _mem_total_mb() -> float | None:
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024
    return None


def _tool_version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"unavailable ({err})"
    text = (out.stdout + out.stderr).strip().splitlines()
    return text[0] if text else "unknown"


def machine_facts() -> dict[str, Any]:
    pkgs: dict[str, str | None] = {}
    names = (
        "sitegw",
        "paho-mqtt",
        "aiomqtt",
        "aiohttp",
        "httpx",
        "pydantic",
        "numpy",
        "fastapi",
        "uvicorn",
        "pymodbus",
    )
    for p in names:
        try:
            pkgs[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            pkgs[p] = None
    return {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "ram_mb": _mem_total_mb(),
        "load_average_at_start": os.getloadavg(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": pkgs,
        "mosquitto": _tool_version([local.need("mosquitto"), "-h"]),
        "influxd": _tool_version([local.need("influxd"), "version"]),
        # brokers[] settings every site of this run was given (bench/README.md), where any were
        "bench_broker": os.environ.get("BENCH_BROKER") or None,
    }


# ---- services, sites, the gateway ------------------------------------------------------------------------------


@contextlib.contextmanager
def running(*services: Service) -> Iterator[None]:
    """Start services in order; stop every one started, whatever happens."""
    started: list[Service] = []
    try:
        for s in services:
            s.start()
            started.append(s)
        yield
    finally:
        for s in reversed(started):
            s.stop()


def fresh_dir(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def crane_devices(n: int, first: int = 0, prefix: str = "bench/crane", interval_s: float = 1.0) -> list[dict[str, Any]]:
    return [
        {
            "id": publisher.device_id(first + i),
            "profile": publisher.PROFILE_ID,
            "broker": "b",
            "topic": f"{prefix}/+/data",
            "expected_interval_s": interval_s,
        }
        for i in range(n)
    ]


def write_profiles(workdir: Path) -> Path:
    d = workdir / "profiles"
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{publisher.PROFILE_ID}.yaml").write_text(yaml.safe_dump(publisher.PROFILE, allow_unicode=True))
    return d


# the gateway's MQTT protocol in the benchmarks' sites (`python -m bench.mqtt_sweep --mqtt 3.1.1` to compare)
MQTT_PROTOCOL = "5"
ALARM_LOAD: float | None = None  # alarm_latency's background messages/s, when not its own (`--alarm-load`)
# the gateway's event loop (`sitegw run --loop`; `--loop asyncio` here to compare with Python's own)
GATEWAY_LOOP = "auto"
LOOP_CHOICES = eventloop.CHOICES


def write_site(
    workdir: Path,
    mqtt_port: int,
    influx_port: int,
    http_port: int,
    devices: list[dict[str, Any]],
    broker: dict[str, Any] | None = None,
    **extra: Any,
) -> Path:
    """A site file in `workdir` (the site the test suite writes, see tests/sites.py) plus the bench profile folder;
    `broker`: brokers[] settings over the benchmarks' own and BENCH_BROKER's (bench/README.md)."""
    broker = broker or {}
    from tests.sites import write_site as _write

    site = workdir / "site.yaml"
    _write(
        site,
        influx_port=influx_port,
        mqtt_port=mqtt_port,
        http_port=http_port,
        devices=devices,
        profile_dirs=[str(write_profiles(workdir))],
        # MQTT 5, as docs/configuration.md advises where the broker speaks it (Mosquitto does): the gateway announces
        # its in-flight window, and more messages share an fsync (`python -m bench.mqtt_sweep --mqtt 3.1.1`: without)
        broker={"protocol": MQTT_PROTOCOL, **broker_settings(os.environ.get("BENCH_BROKER", "")), **broker},
        **extra,
    )
    return site


def broker_settings(text: str) -> dict[str, Any]:
    """`read_window_above=800;read_window_ms=1.5` (a sweep subject's `sitegw[...]`, or BENCH_BROKER): brokers[]
    settings, numbers (ValueError naming the part that is not `key=number`)."""
    out: dict[str, Any] = {}
    for part in (p.strip() for p in text.split(";")):
        if not part:
            continue
        key, eq, value = part.partition("=")
        try:
            out[key.strip()] = float(value) if "." in value else int(value)
        except ValueError:
            raise ValueError(f"{part!r}: a brokers[] setting is key=number") from None
        if not eq or not key.strip():
            raise ValueError(f"{part!r}: a brokers[] setting is key=number")
    return out


def database_of(site: Path) -> str:
    return str(yaml.safe_load(site.read_text())["sink"]["database"])


def loop_args() -> list[str]:
    """`sitegw run`'s event loop option, as the benchmark was asked."""
    return ["--loop", GATEWAY_LOOP]


class GatewayProc:
    """`sitegw run SITE` as a subprocess (python -m gateway.cli), its /metrics and /healthz over HTTP."""

    def __init__(self, site: Path, http_port: int, log_level: str = "warning") -> None:
        self.site = site
        self.http_port = http_port
        self.log = site.parent / "gateway.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_level = log_level

    def start(self, timeout: float = 30.0) -> None:
        argv = [sys.executable, "-m", "gateway.cli", "--log-level", self.log_level, "run", *loop_args(), str(self.site)]
        with open(self.log, "ab") as fh:
            self.proc = subprocess.Popen(
                argv,
                stdout=fh,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )
        try:
            local.wait_port(self.http_port, timeout, self.proc)
        except BaseException:
            self.stop()  # a gateway that never came up must not stay behind, loading the next benchmarks
            raise

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        if self.proc is not None:
            local.stop_process(self.proc, 20)

    def _get(self, path: str) -> bytes:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=5) as r:
            return bytes(r.read())

    def metrics(self) -> dict[str, float]:
        """Unlabelled series of /metrics as {name: value}."""
        out: dict[str, float] = {}
        for line in self._get("/metrics").decode().splitlines():
            if line and not line.startswith("#") and "{" not in line:
                name, _, value = line.partition(" ")
                with contextlib.suppress(ValueError):
                    out[name] = float(value)
        return out

    def wait_connected(self, timeout: float = 30.0) -> None:
        """Until the broker session is up (sitegw_mqtt_connected{broker="b"} 1)."""
        local.wait_for(
            lambda: 'sitegw_mqtt_connected{broker="b"} 1' in self._get("/metrics").decode(),
            timeout,
            what="the gateway's MQTT session",
        )

    def healthz(self) -> dict[str, Any]:
        return dict(json.loads(self._get("/healthz")))


@contextlib.contextmanager
def gateway(site: Path, http_port: int) -> Iterator[GatewayProc]:
    gw = GatewayProc(site, http_port)
    gw.start()
    try:
        yield gw
    finally:
        gw.stop()


class Publisher:
    """bench.publisher in its own process."""

    def __init__(self, workdir: Path, mqtt_port: int, devices: int, rate: float, duration: float, **kw: Any) -> None:
        self.stats = workdir / f"publisher-{time.monotonic_ns()}.json"
        argv = [sys.executable, "-m", "bench.publisher", "--port", str(mqtt_port), "--devices", str(devices)]
        argv += ["--rate", str(rate), "--duration", str(duration), "--stats", str(self.stats)]
        for k, v in kw.items():
            argv += [f"--{k}", str(v)]
        self.argv = argv
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Publisher:
        self.proc = subprocess.Popen(self.argv, cwd=ROOT)
        return self

    def wait(self, timeout: float | None = None) -> dict[str, float]:
        assert self.proc is not None
        self.proc.wait(timeout)
        return dict(json.loads(self.stats.read_text())) if self.stats.exists() else {}

    def stop(self) -> dict[str, float]:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return dict(json.loads(self.stats.read_text())) if self.stats.exists() else {}


class Counter:
    """A bare paho subscriber: counts messages on a topic filter (QoS 1, acknowledged by paho at once)."""

    def __init__(self, port: int, topic: str, client_id: str, keep: bool = False, persistent: bool = False) -> None:
        self.n = 0
        self.kept: list[tuple[float, bytes]] = []
        self._keep = keep
        self._cond = threading.Condition()
        self._ready = threading.Event()
        # persistent: a session the broker keeps, and queues for, while we are away (MQTT 3.1.1: paho's fastest
        # here, 26k msg/s taking in a backlog against 11-15k on MQTT 5 with the gateway's window of 1 000)
        self.c = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=not persistent)
        self.c.on_message = self._on_message
        self.c.on_subscribe = lambda *a: self._ready.set()
        self.c.connect("127.0.0.1", port)
        self.c.subscribe(topic, qos=1)
        self.c.loop_start()
        if not self._ready.wait(10):
            raise TimeoutError(f"no SUBACK for {topic}")

    def _on_message(self, _c: Any, _u: Any, m: paho.MQTTMessage) -> None:
        if self._keep:
            with self._cond:
                self.kept.append((time.perf_counter(), bytes(m.payload)))
                self._cond.notify_all()
        self.n += 1

    def next_kept(self, index: int, timeout: float) -> tuple[float, bytes] | None:
        with self._cond:
            self._cond.wait_for(lambda: len(self.kept) > index, timeout)
            return self.kept[index] if len(self.kept) > index else None

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


_subject_cpu: int | None = None  # with pin_harness(): the CPU the measured subject gets to itself


def pin_harness() -> int | None:
    """`--pin`: this process, and every service and simulator it starts from now on, on all CPUs but the last,
    which pin_subject() gives to the measured subject alone, so their work does not disturb its CPU time (on this
    shared 2-core machine unpinned runs of one variant spread by ±15 %). The CPU kept, or None with only one."""
    global _subject_cpu
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None
    os.sched_setaffinity(0, cpus[:-1])
    _subject_cpu = cpus[-1]
    return _subject_cpu


def pin_subject(pid: int) -> None:
    """Move every thread of `pid` to the CPU kept by pin_harness(); nothing without it."""
    if _subject_cpu is not None:
        argv = ["taskset", "-a", "-p", "-c", str(_subject_cpu), str(pid)]
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)


def proc_cpu_s(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


T = TypeVar("T")


def sample(read: Callable[[], T], going: Callable[[T], bool], every_s: float) -> list[tuple[float, T]]:
    """(monotonic time, read()) now and every `every_s` after, while `going` says yes of the last value read."""
    samples = [(time.monotonic(), read())]
    while going(samples[-1][1]):
        time.sleep(every_s)
        samples.append((time.monotonic(), read()))
    return samples


def rate_between(samples: list[tuple[float, float]], t0: float, t1: float) -> float | None:
    """Mean rate of a monotonic counter sampled as (time, value) between the samples nearest to t0 and t1."""
    inside = [s for s in samples if t0 <= s[0] <= t1]
    if len(inside) < 2 or inside[-1][0] <= inside[0][0]:
        return None
    return (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0])
