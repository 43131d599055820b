"""Modbus TCP at site sizes: CPU per 1 000 readings, readings/s and RSS of SiteGW beside a bare pymodbus poller and
ThingsBoard IoT Gateway, polling the same devices at the same interval, the runs interleaved.

`python -m bench.modbus_sweep [--devices 10,50,200] [--poll-s 0.1] [--seconds 15] [--rounds 1] [--short]` prints a
table and writes `.run/bench/modbus_sweep.json`. Each device is a pymodbus server (all in one process of their own,
`bench.modbus_poll serve`) with ten float32 values in holding registers 0..19 (`bench/peer/profiles`). ThingsBoard
IoT Gateway is pip-installed into `.run/bench/tb-venv/` on the first run; when that fails its rows are left out and
a note says why.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import common
from bench.modbus_poll import Servers
from bench.peer_thingsboard import VALUES, Side, TelemetryCounter, float10_site, run_ours, run_tb, tb_config, tb_install
from services import local
from services.local import Service

SUBJECTS = ("bare_pymodbus", "sitegw", "thingsboard")
WARM_S = 3.0  # left out: connections, first allocations
TARGETS = {10: 1.5, 200: 1.25}  # SiteGW / bare pymodbus, CPU per reading (issue 15)


@dataclass
class Run:
    subject: str
    devices: int
    poll_s: float
    readings: int
    cpu_s: float
    wall_s: float
    requests: int
    rss_mib: float

    @property
    def nominal_per_s(self) -> float:
        return self.devices * VALUES / self.poll_s

    @property
    def per_s(self) -> float:
        return self.readings / self.wall_s if self.wall_s else 0.0

    @property
    def cpu_ms_per_1k(self) -> float | None:
        return 1e6 * self.cpu_s / self.readings if self.readings else None

    def to_json(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "per_s": self.per_s,
            "nominal_per_s": self.nominal_per_s,
            "cpu_ms_per_1k": self.cpu_ms_per_1k,
        }


def run_bare(wd: Path, ports: list[int], poll_s: float, servers: Servers, seconds: float) -> Side:
    f = wd / "bare-count"
    argv = [sys.executable, "-m", "bench.bare_modbus", "--ports", ",".join(map(str, ports)), "--interval", str(poll_s)]
    proc = subprocess.Popen([*argv, "--count-file", str(f)], cwd=common.ROOT, stdout=subprocess.DEVNULL)
    try:
        local.wait_for(f.exists, 15, 0.05, "the bare poller's start")

        def count() -> int:
            f.unlink(missing_ok=True)
            proc.send_signal(signal.SIGUSR1)
            local.wait_for(f.exists, 5, 0.01, "the bare poller's count")
            return int(f.read_text())

        return _side(proc.pid, servers, count, seconds)
    finally:
        local.stop_process(proc, 10)


def _side(pid: int, servers: Servers, count: Callable[[], int], seconds: float) -> Side:
    common.pin_subject(pid)
    time.sleep(WARM_S)
    r0, c0, q0, t0 = count(), common.proc_cpu_s(pid), servers.requests(), time.monotonic()
    time.sleep(seconds)
    r1, c1, q1, t1 = count(), common.proc_cpu_s(pid), servers.requests(), time.monotonic()
    return Side(r1 - r0, c1 - c0, t1 - t0, q1 - q0, common.rss_mb(pid) or 0.0)


def distinct_ports(n: int, taken: set[int]) -> list[int]:
    """`n` free loopback ports, no two alike and none in `taken`: the kernel may hand the same free port out twice
    in 200 asks (a birthday collision over the ephemeral range), and two servers cannot listen on one."""
    out: list[int] = []
    while len(out) < n:
        p = local.free_port()
        if p not in taken:
            taken.add(p)
            out.append(p)
    return out


@dataclass
class Size:
    """One site size, set up: its devices' servers running, its site file written."""

    n: int
    poll_s: float
    wd: Path
    site: Path
    http_port: int
    ports: list[int]
    devices: list[dict[str, Any]]
    mq: Service
    servers: Servers | None = None


def one_size(n: int, poll_s: float, seconds: float, rounds: int, subjects: list[str], notes: list[str]) -> list[Run]:
    wd0 = common.fresh_dir(common.RUN_DIR / "modbus_sweep" / f"n{n}")
    mq: Service = local.mosquitto(wd0 / "mosquitto")
    db: Service = local.influxdb(wd0 / "influxdb")
    runs: list[Run] = []
    with common.running(mq, db):
        size = _size(wd0, n, poll_s, mq, db)  # ports chosen once the services listen: none of theirs is given twice
        with Servers(size.site, wd0) as size.servers:
            for rnd in range(rounds):
                k = rnd % len(subjects)  # rotated per round, so no subject always runs on a warmer machine
                for name in subjects[k:] + subjects[:k]:
                    wd = common.fresh_dir(wd0 / f"{name}-{rnd}")
                    print(f"   {name}, {n} devices every {poll_s:g} s (round {rnd + 1}) ...", flush=True)
                    try:
                        side = _run(name, wd, size, seconds)
                    except Exception as err:  # one subject failing leaves the others' figures standing
                        notes.append(f"{name} with {n} devices: {type(err).__name__}: {err}")
                        continue
                    runs.append(
                        Run(name, n, poll_s, side.readings, side.cpu_s, side.wall_s, side.requests, side.rss_mib)
                    )
    return runs


def _size(wd0: Path, n: int, poll_s: float, mq: Service, db: Service) -> Size:
    http_port = local.free_port()
    ports = distinct_ports(n, {http_port, mq.port, db.port})
    site, devices = float10_site(wd0, ports, poll_s, db.port, http_port)
    return Size(n, poll_s, wd0, site, http_port, ports, devices, mq)


def _run(name: str, wd: Path, size: Size, seconds: float) -> Side:
    assert size.servers is not None
    if name == "bare_pymodbus":
        return run_bare(wd, size.ports, size.poll_s, size.servers, seconds)
    if name == "sitegw":
        return run_ours(wd, size.site, size.http_port, size.servers, WARM_S, seconds)
    counter = TelemetryCounter(size.mq.port)
    try:
        names = [(str(d["id"]), p) for d, p in zip(size.devices, size.ports, strict=True)]
        conf = tb_config(wd, size.mq.port, names, int(size.poll_s * 1000))
        return run_tb(wd, conf, counter, size.servers, WARM_S, seconds)
    finally:
        counter.close()


def table(runs: list[Run]) -> str:
    """Per size: each subject's CPU-ms per 1 000 readings, readings/s against nominal, RSS; then SiteGW's ratios
    (medians over rounds)."""
    head = f"{'devices':>7} {'subject':<14} {'CPU-ms/1k':>10} {'readings/s':>11} {'nominal':>8} {'RSS MiB':>8}"
    out = [head, "-" * len(head)]
    by: dict[tuple[int, str], list[Run]] = {}
    for r in runs:
        by.setdefault((r.devices, r.subject), []).append(r)

    def med(xs: list[float | None]) -> float | None:
        ys = sorted(x for x in xs if x is not None)
        return ys[len(ys) // 2] if ys else None

    def f(x: float | None, d: int = 1) -> str:
        return "-" if x is None else f"{x:,.{d}f}"

    for n in sorted({r.devices for r in runs}):
        for name in SUBJECTS:
            rs = by.get((n, name))
            if not rs:
                continue
            out.append(
                f"{n:>7} {name:<14} {f(med([r.cpu_ms_per_1k for r in rs])):>10} {f(med([r.per_s for r in rs]), 0):>11} "
                f"{rs[0].nominal_per_s:>8,.0f} {f(max(r.rss_mib for r in rs)):>8}"
            )
        gw = med([r.cpu_ms_per_1k for r in by.get((n, "sitegw"), [])])
        bare = med([r.cpu_ms_per_1k for r in by.get((n, "bare_pymodbus"), [])])
        tb = med([r.cpu_ms_per_1k for r in by.get((n, "thingsboard"), [])])
        parts = []
        if gw and bare:
            target = f" (target <= {TARGETS[n]:g})" if n in TARGETS else ""
            parts.append(f"SiteGW / bare pymodbus {gw / bare:.2f}{target}")
        if gw and tb:
            parts.append(f"SiteGW / ThingsBoard {gw / tb:.3f} (target <= 0.1)")
        if parts:
            out.append(f"{'':>7} {'; '.join(parts)}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.modbus_sweep", description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", default="10,50,200", help="site sizes, comma-separated")
    ap.add_argument("--poll-s", type=float, default=0.1, help="poll interval of every device")
    ap.add_argument("--seconds", type=float, default=15.0, help="measuring window per run (after a 3 s warm-up)")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--subjects", default=",".join(SUBJECTS))
    ap.add_argument("--short", action="store_true", help="10 and 200 devices, 10 s windows")
    ap.add_argument("--pin", action="store_true", help="each subject on a CPU of its own, everything else on the rest")
    ap.add_argument("--json", type=Path, default=common.RUN_DIR / "modbus_sweep.json")
    ap.add_argument("--loop", choices=common.LOOP_CHOICES, default="auto", help="the gateway's event loop (--loop)")
    a = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    common.GATEWAY_LOOP = a.loop
    sizes = [10, 200] if a.short else [int(x) for x in a.devices.split(",")]
    seconds = 10.0 if a.short else a.seconds
    subjects = [s for s in a.subjects.split(",") if s]
    unknown = set(subjects) - set(SUBJECTS)
    if unknown:
        ap.error(f"unknown subject(s) {sorted(unknown)}; choose from {', '.join(SUBJECTS)}")
    notes: list[str] = []
    if a.pin:
        cpu = common.pin_harness()
        notes.append(f"pinned: each subject alone on CPU {cpu}" if cpu is not None else "--pin ignored: one CPU")
    if "thingsboard" in subjects:
        try:
            notes.append(f"peer: thingsboard-gateway {tb_install()}")
        except (subprocess.CalledProcessError, OSError) as err:
            subjects.remove("thingsboard")
            notes.append(f"ThingsBoard IoT Gateway could not be installed ({err}); its rows are left out")
    print(
        f"== modbus_sweep: {sizes} devices x {VALUES} float32 every {a.poll_s:g} s, {seconds:g} s windows, "
        f"the gateway's event loop {a.loop}"
    )
    runs: list[Run] = []
    for n in sizes:
        try:
            runs += one_size(n, a.poll_s, seconds, a.rounds, subjects, notes)
        except Exception as err:  # a size that cannot be set up leaves the other sizes' figures standing
            notes.append(f"{n} devices: {type(err).__name__}: {err}")
    report = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": common.machine_facts(),
        "values_per_device": VALUES,
        "poll_s": a.poll_s,
        "gateway_loop": a.loop,
        "seconds": seconds,
        "runs": [r.to_json() for r in runs],
        "notes": notes,
        "table": table(runs),
    }
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps(report, indent=2, ensure_ascii=False))
    print(report["table"])
    for note in notes:
        print(f"note: {note}")
    print(f"report: {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
