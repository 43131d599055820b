"""Start and stop real services for tests, each in its own temp dir on a free loopback port."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_handed_out: set[int] = set()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A loopback port free now that this process has not handed out before. It is drawn from below the kernel's
    ephemeral range: a port from `bind(0)` can be given again to the next caller, or to some process's outgoing
    connection, before the service it was picked for binds it (a CI run once had a hub replica's port taken by a
    NATS node picked later)."""
    low = _ephemeral_low()
    lo, hi = (10000, low - 1) if low > 12000 else (1024, 65535)
    rng = random.SystemRandom()
    for _ in range(2000):
        port = rng.randint(lo, hi)
        if port not in _handed_out and port_free(port):
            _handed_out.add(port)
            return port
    raise RuntimeError(f"no free loopback port in {lo}-{hi} after 2000 tries")


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def wait_port(port: int, timeout: float = 15.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout} s")


def stop_process(proc: subprocess.Popen[Any], timeout_s: float = 10.0, sig: int = signal.SIGTERM) -> bool:
    """Ask a child to stop (`sig`), wait up to `timeout_s`, then kill it. True when it stopped by itself."""
    if proc.poll() is not None:
        return True
    proc.send_signal(sig)
    try:
        proc.wait(timeout_s)
        return True
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return False


def need(binary: str) -> str:
    path = shutil.which(binary) or (f"/usr/sbin/{binary}" if os.path.exists(f"/usr/sbin/{binary}") else None)
    if path is None:
        raise RuntimeError(f"{binary} is not installed; run `make deps` (it apt-installs the test services)")
    return path


@dataclass
class Service:
    name: str
    port: int
    workdir: Path
    argv: list[str]
    proc: subprocess.Popen[bytes] | None = None
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.workdir / f"{self.name}.log"

    def start(self) -> None:
        with open(self.log, "ab") as fh:
            self.proc = subprocess.Popen(self.argv, stdout=fh, stderr=subprocess.STDOUT, cwd=self.workdir)
        wait_port(self.port, proc=self.proc)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def restart(self) -> None:
        self.stop()
        self.start()


def mosquitto(workdir: Path, port: int | None = None, extra: str = "") -> Service:
    port = port or free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "mosquitto.conf"
    conf.write_text(
        f"per_listener_settings false\nlistener {port} 127.0.0.1\nallow_anonymous true\n"
        f"persistence false\nlog_dest stderr\nlog_type error\nlog_type warning\nmax_queued_messages 1000000\n"
        f"user root\n{extra}"
    )
    return Service("mosquitto", port, workdir, [need("mosquitto"), "-c", str(conf)])


def influxdb(workdir: Path, port: int | None = None) -> Service:
    port = port or free_port()
    rpc = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "influx.conf"
    conf.write_text(
        f'reporting-disabled = true\nbind-address = "127.0.0.1:{rpc}"\n'
        f'[meta]\n  dir = "{workdir}/meta"\n'
        f'[data]\n  dir = "{workdir}/data"\n  wal-dir = "{workdir}/wal"\n  query-log-enabled = false\n'
        f"[monitor]\n  store-enabled = false\n"
        f'[http]\n  enabled = true\n  bind-address = "127.0.0.1:{port}"\n'
        f"  auth-enabled = false\n  log-enabled = false\n"
        f'[ifql]\n  enabled = false\n[logging]\n  level = "warn"\n'
    )
    svc = Service("influxd", port, workdir, [need("influxd"), "run", "-config", str(conf)])
    return svc


def victoria_metrics(workdir: Path) -> Service:
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    return Service(
        "victoria-metrics",
        port,
        workdir,
        [
            need("victoria-metrics"),
            f"-httpListenAddr=127.0.0.1:{port}",
            f"-storageDataPath={workdir}/data",
            "-retentionPeriod=100y",
            "-loggerLevel=WARN",
            "-search.latencyOffset=0s",
        ],
    )


def influxql(port: int, db: str, q: str) -> list[dict[str, Any]]:
    """Run an InfluxQL query; return the series of the first statement (ns epoch)."""
    url = f"http://127.0.0.1:{port}/query?" + urllib.parse.urlencode({"db": db, "q": q, "epoch": "ns"})
    with urllib.request.urlopen(url, timeout=10) as r:
        body = json.loads(r.read())
    res = body["results"][0]
    if "error" in res:
        raise RuntimeError(f"InfluxQL error: {res['error']} for {q}")
    return list(res.get("series", []))


def rows(port: int, db: str, q: str) -> list[dict[str, Any]]:
    """Query rows as dicts, tags of GROUP BY merged in."""
    out = []
    for s in influxql(port, db, q):
        cols = s["columns"]
        for v in s["values"]:
            row = dict(zip(cols, v, strict=True))
            row.update(s.get("tags", {}))
            out.append(row)
    return out


def vm_export(port: int, match: str) -> list[dict[str, Any]]:
    urllib.request.urlopen(f"http://127.0.0.1:{port}/internal/force_flush", timeout=10).read()
    data = urllib.parse.urlencode({"match[]": match}).encode()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/export", data=data, timeout=10) as r:
        return [json.loads(line) for line in r.read().splitlines() if line.strip()]


def wait_for(fn: Any, timeout: float = 20.0, interval: float = 0.1, what: str = "condition") -> Any:
    """Poll `fn` until it returns a truthy value (tests wait on behaviour, they never assert on elapsed time)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = fn()
        except (urllib.error.URLError, ConnectionError, KeyError, IndexError, RuntimeError) as err:
            last = err
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")
