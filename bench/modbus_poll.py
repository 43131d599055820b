"""Modbus polling benchmark: LineOwner/ModbusLink/plan against bare pymodbus, and RTU read coalescing on the wire."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.pdu import ModbusPDU

from drivers.modbus.config import ModbusRtuLine, ModbusTcpLine
from drivers.modbus.driver import ModbusDevice
from drivers.modbus.link import ModbusLink
from drivers.modbus.plan import Block
from drivers.profile import Table
from gateway.app import build_line_devices
from gateway.config import SiteConfig, load_config
from gateway.liveness import Liveness
from gateway.metrics import Metrics
from gateway.supervisor import LineOwner, poll_device
from services.local import free_port, stop_process
from telemetry.reading import Reading

REPO = Path(__file__).resolve().parents[1]
RUN_DIR = REPO / ".run" / "bench"
# small enough that every line is always busy: an overrunning owner sleeps at most this long between polls
SATURATE_S = 1e-5
# pymodbus' client call per table, so the bare baseline reads exactly the planned blocks
READ_FN = {
    Table.COIL: "read_coils",
    Table.DISCRETE: "read_discrete_inputs",
    Table.HOLDING: "read_holding_registers",
    Table.INPUT: "read_input_registers",
}


# ---------------------------------------------------------------- shared helpers (also used by peer_thingsboard)


def opt(args: Any, name: str, default: Any) -> Any:
    """An option of the harness's namespace, or our default when the harness does not define it."""
    value = getattr(args, name, None)
    return default if value is None else value


def fresh_dir(name: str) -> Path:
    path = RUN_DIR / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def write_site(path: Path, lines: list[dict[str, Any]], devices: list[dict[str, Any]], **extra: Any) -> SiteConfig:
    doc: dict[str, Any] = {
        "site": {"id": "bench", "name": "bench"},
        "lines": lines,
        "devices": devices,
        # the simulators and the polling loops never write; `sitegw run` gets a real sink through `extra`
        "sink": {"type": "influxdb_v1", "url": "http://127.0.0.1:9", "database": "bench"},
        "spool": {"dir": "spool"},
        **extra,
    }
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return load_config(path)


def proc_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def row(
    name: str,
    figure: float,
    unit: str,
    baseline: float | None,
    baseline_unit: str,
    target: str,
    note: str,
    ratio: float | None = None,
) -> dict[str, Any]:
    if ratio is None and baseline:
        ratio = figure / baseline
    return {
        "name": name,
        "figure": round(figure, 3),
        "unit": unit,
        "baseline": None if baseline is None else round(baseline, 3),
        "baseline_unit": baseline_unit,
        "ratio": None if ratio is None else round(ratio, 3),
        "target": target,
        "note": note,
    }


class Servers:
    """The simulated Modbus devices of a site file in a process of their own (so their CPU is nobody's figure),
    counting every request they receive: `python -m bench.modbus_poll serve SITE STATS`."""

    def __init__(self, site: Path, workdir: Path) -> None:
        self.site = site
        self.stats = workdir / "server-stats.json"
        self.log = workdir / "servers.log"
        self.proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> Servers:
        with open(self.log, "w") as fh:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bench.modbus_poll", "serve", str(self.site), str(self.stats)],
                cwd=REPO,
                stdout=subprocess.PIPE,
                stderr=fh,
                text=True,
            )
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            self.proc.wait(10)
            raise RuntimeError(f"Modbus servers did not start (exit {self.proc.returncode}); see {self.log}")
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.proc is not None:
            stop_process(self.proc)

    def requests(self) -> int:
        """Requests received by every server so far; the file is rewritten atomically every 0.1 s."""
        with contextlib.suppress(FileNotFoundError, ValueError):
            return int(json.loads(self.stats.read_text())["requests"])
        return 0

    async def requests_now(self) -> int:
        await asyncio.sleep(0.15)  # one stats period, so the count covers what was sent before this call
        return self.requests()


async def _serve(site: Path, stats: Path) -> None:
    from simulators.runner import SiteSimulator

    cfg = load_config(site)
    sim = SiteSimulator(cfg, "static")
    count = [0]

    def counting(inner: Callable[[bool, ModbusPDU], ModbusPDU | None]) -> Callable[[bool, ModbusPDU], Any]:
        def hook(sending: bool, pdu: ModbusPDU) -> ModbusPDU | None:
            if not sending:
                count[0] += 1
            return inner(sending, pdu)

        return hook

    for line in sim.lines:
        # the line builds its server with self._filter as trace_pdu: wrap it before start() to count requests
        line._filter = counting(line._filter)  # type: ignore[method-assign,assignment]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with sim:
        print("ready", flush=True)
        tmp = stats.with_suffix(".tmp")
        while not stop.is_set():
            tmp.write_text(json.dumps({"requests": count[0]}))
            tmp.replace(stats)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.1)


# ---------------------------------------------------------------- Modbus TCP: polls/s through the gateway vs bare


@dataclasses.dataclass
class Sample:
    polls: int = 0  # in the measuring window
    readings: int = 0
    cpu_s: float = 0.0  # of this process
    wall_s: float = 0.0
    requests: int = 0  # seen by the servers from the first connect to the last task stopped
    all_polls: int = 0  # over that same span, so requests / all_polls is exact

    def add(self, other: Sample) -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


async def _measure(
    servers: Servers,
    start: Callable[[], list[asyncio.Task[None]]],
    count: Callable[[], tuple[int, int]],
    warm_s: float,
    seconds: float,
) -> Sample:
    """Rates and our CPU over `seconds` after `warm_s` of connecting; server requests over the pollers' lifetime."""
    q0 = await servers.requests_now()  # nothing polls yet: an exact starting count
    tasks = start()
    try:
        await asyncio.sleep(warm_s)
        p0, r0 = count()
        c0, t0 = _cpu(), time.monotonic()
        await asyncio.sleep(seconds)
        p1, r1 = count()
        c1, t1 = _cpu(), time.monotonic()
    finally:
        await _stop(tasks)
    total = count()[0]
    q1 = await servers.requests_now()
    return Sample(p1 - p0, r1 - r0, c1 - c0, t1 - t0, q1 - q0, total)


async def _stop(tasks: list[asyncio.Task[None]]) -> None:
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def poll_gateway(cfg: SiteConfig, servers: Servers, warm_s: float, seconds: float) -> Sample:
    """Every line driven by its LineOwner with the planned blocks, at an interval that keeps it saturated."""
    metrics = Metrics()
    liveness = Liveness(metrics, {})
    readings = [0]

    async def submit(rs: list[Reading]) -> None:
        readings[0] += len(rs)

    devs = build_line_devices(cfg)
    owners = [
        LineOwner(ModbusLink(ln), [(d, SATURATE_S) for d, _ in devs[ln.id]], submit, liveness, metrics, 3, 30.0)
        for ln in cfg.lines
    ]

    def start() -> list[asyncio.Task[None]]:
        return [asyncio.create_task(o.run(), name=f"bench-owner-{o.link.line.id}") for o in owners]

    return await _measure(servers, start, lambda: (sum(metrics.polls.values()), readings[0]), warm_s, seconds)


async def _bare_line(host: str, port: int, unit: int, blocks: list[Block], polls: list[int]) -> None:
    client = AsyncModbusTcpClient(host, port=port, timeout=1.0, retries=0)
    await client.connect()
    calls = [(getattr(client, READ_FN[b.table]), b.address, b.count) for b in blocks]
    task = asyncio.current_task()
    try:
        while True:
            for fn, address, count in calls:
                await fn(address, count=count, device_id=unit)
            polls[0] += 1
            # pymodbus' wait_for can swallow a cancel on 3.11 (see drivers/modbus/link.py): honour it, as the link does
            if task is not None and task.cancelling():
                raise asyncio.CancelledError
    finally:
        client.close()


async def poll_bare(cfg: SiteConfig, servers: Servers, warm_s: float, seconds: float) -> Sample:
    """The baseline: one bare pymodbus client per server reading the same blocks back to back, no decoding."""
    polls = [0]
    devs = build_line_devices(cfg)
    # readings: the points the gateway decodes from the same blocks, for per-reading figures
    per_poll = sum(len(b.points) for b in devs[cfg.lines[0].id][0][0].blocks)

    def start() -> list[asyncio.Task[None]]:
        tasks = []
        for ln in cfg.lines:
            assert isinstance(ln, ModbusTcpLine)
            for dev, _ in devs[ln.id]:
                task = _bare_line(ln.host, ln.port, dev.unit_id, dev.blocks, polls)
                tasks.append(asyncio.create_task(task, name=f"bench-bare-{ln.id}"))
        return tasks

    return await _measure(servers, start, lambda: (polls[0], polls[0] * per_poll), warm_s, seconds)


def tcp_site(workdir: Path, n: int) -> SiteConfig:
    lines = [{"id": f"l{i:03d}", "type": "modbus_tcp", "host": "127.0.0.1", "port": free_port()} for i in range(n)]
    devices = [
        {
            "id": f"TC-{i:03d}",
            "profile": "tower_crane_tcp_v1",
            "line": f"l{i:03d}",
            "unit_id": 1,
            "timeout_s": 1.0,
            "poll_interval_s": 2.0,
        }
        for i in range(n)
    ]
    return write_site(workdir / "site-tcp.yaml", lines, devices)


async def tcp_bench(n: int, seconds: float, rounds: int, warm_s: float = 1.0) -> list[dict[str, Any]]:
    workdir = fresh_dir("modbus_tcp")
    cfg = tcp_site(workdir, n)
    ours, bare = Sample(), Sample()
    with Servers(workdir / "site-tcp.yaml", workdir) as servers:
        for _ in range(rounds):  # alternate, so a burst of load from elsewhere hits both sides alike
            ours.add(await poll_gateway(cfg, servers, warm_s, seconds))
            bare.add(await poll_bare(cfg, servers, warm_s, seconds))
    per_poll = ours.requests / max(ours.all_polls, 1)
    bare_per_poll = bare.requests / max(bare.all_polls, 1)
    ours_rate, bare_rate = ours.polls / ours.wall_s, bare.polls / bare.wall_s
    ours_cpu, bare_cpu = 1e6 * ours.cpu_s / max(ours.polls, 1), 1e6 * bare.cpu_s / max(bare.polls, 1)
    where = f"{n} crane servers (own process), {rounds}x{seconds:g} s each side, alternating"
    return [
        row(
            "modbus_tcp_polls_per_s",
            ours_rate,
            "polls/s",
            bare_rate,
            "polls/s (bare pymodbus, same blocks, one client per server)",
            ">= 0.80",
            f"{where}; requests/poll seen by the servers: ours {per_poll:.2f}, bare {bare_per_poll:.2f}; "
            f"server requests/s ours {per_poll * ours_rate:.0f}, bare {bare_per_poll * bare_rate:.0f}",
        ),
        row(
            "modbus_tcp_cpu_per_poll",
            ours_cpu,
            "CPU-µs/poll (client process)",
            bare_cpu,
            "CPU-µs/poll (bare pymodbus)",
            "lower is better (no target)",
            f"{where}; includes decoding {ours.readings / max(ours.polls, 1):.0f} readings/poll (bare decodes nothing)",
        ),
    ]


# ---------------------------------------------------------------- RTU: requests per cycle, coalesced vs per point


def per_point(blocks: list[Block]) -> list[Block]:
    """The uncoalesced plan: one request per point, at the point's own address and width."""
    out = []
    for b in blocks:
        for p in b.points:
            width = 1 if b.table.is_bit else p.width
            out.append(Block(b.table, b.address + p.offset, width, (dataclasses.replace(p, offset=0),)))
    return out


def rtu_site(workdir: Path) -> SiteConfig:
    # the demo's excavation bus plus a crane monitor: blocks with a gap, bits in a status word, two bit tables
    lines = [{"id": "bus", "type": "modbus_rtu", "port": str(workdir / "ttyBENCH"), "baudrate": 19200}]
    devices = [
        {"id": "PIT-D01", "profile": "excavation_displacement_rtu_v1", "unit_id": 1},
        {"id": "PIT-D02", "profile": "excavation_displacement_rtu_v1", "unit_id": 2},
        {"id": "PIT-CX1", "profile": "excavation_inclinometer_rtu_v1", "unit_id": 3},
        {"id": "PIT-ZL1", "profile": "excavation_strut_water_rtu_v1", "unit_id": 4},
        {"id": "TC-RTU", "profile": "tower_crane_tcp_v1", "unit_id": 5},
    ]
    for d in devices:
        d.update(line="bus", timeout_s=0.5, poll_interval_s=2.0)
    return write_site(workdir / "site-rtu.yaml", lines, devices)


async def _cycles(link: ModbusLink, devices: list[ModbusDevice], cycles: int) -> tuple[int, int, int, float]:
    """Poll every device once per cycle; requests as counted by the link (what went on the wire)."""
    req0, fail0, readings = link.requests, link.failures, 0
    t0 = time.monotonic()
    for _ in range(cycles):
        for dev in devices:
            res = await poll_device(dev, link)
            readings += len(res.readings)
    return link.requests - req0, link.failures - fail0, readings, time.monotonic() - t0


async def rtu_bench(cycles: int) -> list[dict[str, Any]]:
    if shutil.which("socat") is None:
        raise RuntimeError("socat is not installed (make deps)")
    workdir = fresh_dir("modbus_rtu")
    cfg = rtu_site(workdir)
    line = cfg.lines[0]
    assert isinstance(line, ModbusRtuLine)
    planned = [d for d, _ in build_line_devices(cfg)["bus"]]
    naive = [ModbusDevice(d.device_id, d.unit_id, per_point(d.blocks), d.timeout_s, d.retries) for d in planned]
    plan_req = sum(len(d.blocks) for d in planned)
    points = sum(len(d.blocks) for d in naive)
    with Servers(workdir / "site-rtu.yaml", workdir):
        link = ModbusLink(line)
        try:
            await _cycles(link, planned, 1)  # open the pty, settle
            coal = await _cycles(link, planned, cycles)
            flat = await _cycles(link, naive, cycles)
        finally:
            link.close()
    per_cycle, flat_cycle = coal[0] / cycles, flat[0] / cycles
    return [
        row(
            "modbus_rtu_requests_per_cycle",
            per_cycle,
            "requests/cycle (coalesced, counted on the link)",
            flat_cycle,
            "requests/cycle (one request per point)",
            f"= plan ({plan_req}/cycle for {points} points)",
            f"{len(planned)} devices on a socat pty bus at 19200 baud, {cycles} cycles each way; "
            f"readings/cycle {coal[2] / cycles:.0f} vs {flat[2] / cycles:.0f}; failed requests {coal[1]} vs {flat[1]}; "
            f"cycle time {1000 * coal[3] / cycles:.1f} ms vs {1000 * flat[3] / cycles:.1f} ms (noisy)",
        )
    ]


# ---------------------------------------------------------------- entry points


def run(args: Any) -> list[dict[str, Any]]:
    """Harness entry. Options read from `args` when present: short, devices, seconds, rounds, cycles."""
    short = bool(opt(args, "short", False))
    n = int(opt(args, "devices", 50))
    seconds = float(opt(args, "seconds", 3.0 if short else 10.0))
    rounds = int(opt(args, "rounds", 2 if short else 3))
    cycles = int(opt(args, "cycles", 20 if short else 100))

    async def both() -> list[dict[str, Any]]:
        return await tcp_bench(n, seconds, rounds) + await rtu_bench(cycles)

    return asyncio.run(both())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.modbus_poll", description=__doc__)
    sub = p.add_subparsers(dest="cmd")
    serve = sub.add_parser("serve", help="(internal) run the simulated servers of a site file, counting requests")
    serve.add_argument("site", type=Path)
    serve.add_argument("stats", type=Path)
    p.add_argument("--short", action="store_true")
    p.add_argument("--devices", type=int)
    p.add_argument("--seconds", type=float)
    p.add_argument("--rounds", type=int)
    p.add_argument("--cycles", type=int)
    args = p.parse_args(argv)
    if args.cmd == "serve":
        asyncio.run(_serve(args.site, args.stats))
        return 0
    for r in run(args):
        print(json.dumps(r, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
