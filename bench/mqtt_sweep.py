"""MQTT at fixed offered rates: CPU per 1 000 readings, stored rate, loss and RSS of SiteGW beside a bare paho
receiver and Node-RED (a per-message flow, and a join + batch flow), the runs interleaved.

`python -m bench.mqtt_sweep [--rates 500,1000,2000,4000] [--seconds 15] [--rounds 1] [--short]` prints a table and
writes `.run/bench/mqtt_sweep.json`. Node-RED 4 and node-red-contrib-influxdb are installed by npm into
`.run/bench/node-red/` on the first run (the flows are `bench/nodered/*.json`); without npm the Node-RED rows are
left out and a note says why.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import common
from bench.publisher import FIELDS_PER_MESSAGE
from services import local
from services.local import Service

DEVICES = 200
HERE = Path(__file__).resolve().parent
NODE_RED_DIR = common.RUN_DIR / "node-red"
NODE_RED_PACKAGES = ("node-red@4.1.15", "node-red-contrib-influxdb@0.7.0")
SUBJECTS = ("bare_paho", "sitegw", "nodered_per_message", "nodered_batch")
WARM_S = 3.0  # left out: connection set-up, first allocations
CATCH_UP_S = 20.0  # after the publisher stops, how long the subject may take to store what it was sent


@dataclass
class Run:
    subject: str
    offered: float  # messages/s asked of the publisher
    published: int
    window_s: float  # from the end of the warm-up to the end of publishing
    readings: int  # received (bare) or stored in InfluxDB, timestamped inside the window
    stored_total: int  # every reading in InfluxDB at the end (bare: received)
    cpu_s: float  # the subject's process, from the end of the warm-up until it had stored the window
    db_cpu_s: float  # InfluxDB's over the same time
    rss_mib: float
    lost: int  # readings published and never stored (bare: never received)

    @property
    def cpu_ms_per_1k(self) -> float | None:
        return 1e6 * self.cpu_s / self.readings if self.readings else None

    @property
    def cpu_ms_per_1k_with_db(self) -> float | None:
        return 1e6 * (self.cpu_s + self.db_cpu_s) / self.readings if self.readings else None

    @property
    def stored_per_s(self) -> float:
        return self.readings / self.window_s / FIELDS_PER_MESSAGE if self.window_s else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "cpu_ms_per_1k": self.cpu_ms_per_1k,
            "cpu_ms_per_1k_with_db": self.cpu_ms_per_1k_with_db,
            "stored_msg_per_s": self.stored_per_s,
        }


def stored(port: int, db: str, lo_ms: int | None = None, hi_ms: int | None = None) -> int:
    """Readings of the bench crane in `db` (points x fields), optionally only those timestamped in [lo, hi)."""
    where = f" WHERE time >= {lo_ms}ms AND time < {hi_ms}ms" if lo_ms is not None else ""
    rows = local.rows(port, db, f"SELECT count(load) FROM tower_crane{where}")
    return int(rows[0]["count"]) * FIELDS_PER_MESSAGE if rows else 0


def create_db(port: int, db: str) -> None:
    data = urllib.parse.urlencode({"q": f'CREATE DATABASE "{db}"'}).encode()
    urllib.request.urlopen(f"http://127.0.0.1:{port}/query", data=data, timeout=10).close()


# ---------------------------------------------------------------- the subjects


@dataclass
class Subject:
    pid: int
    count: Callable[[int | None, int | None], int]  # readings received / stored, optionally in [lo_ms, hi_ms)
    rss: Callable[[], float]


@contextmanager
def bare_paho(wd: Path, mq: Service) -> Iterator[Subject]:
    f = wd / "bare-count"
    argv = [sys.executable, "-m", "bench.bare_sub", "--port", str(mq.port), "--topic", "bench/crane/+/data"]
    proc = subprocess.Popen(
        [*argv, "--count-file", str(f)],
        cwd=common.ROOT,
        stdout=subprocess.DEVNULL,
    )
    try:
        local.wait_for(f.exists, 15, 0.05, "the bare subscriber's SUBACK")

        def count(lo: int | None, hi: int | None) -> int:
            f.unlink(missing_ok=True)
            proc.send_signal(signal.SIGUSR1)
            local.wait_for(f.exists, 5, 0.01, "the bare subscriber's count")
            return int(f.read_text()) * FIELDS_PER_MESSAGE  # everything received: its window is where it is read

        yield Subject(proc.pid, count, lambda: common.rss_mb(proc.pid) or 0.0)
    finally:
        local.stop_process(proc, 10)


@contextmanager
def sitegw(wd: Path, mq: Service, db: Service, broker: dict[str, Any] | None = None) -> Iterator[Subject]:
    http = local.free_port()
    site = common.write_site(wd, mq.port, db.port, http, common.crane_devices(DEVICES), broker=broker)
    name = common.database_of(site)
    with common.gateway(site, http) as gw:
        gw.wait_connected()
        yield Subject(gw.pid, lambda lo, hi: stored(db.port, name, lo, hi), lambda: common.rss_mb(gw.pid) or 0.0)


def node_red_main() -> Path | None:
    """red.js of the benchmark's own Node-RED install (npm, into .run/bench/node-red), or None without npm."""
    red = NODE_RED_DIR / "node_modules" / "node-red" / "red.js"
    if red.exists():
        return red
    npm = shutil.which("npm")
    if npm is None:
        return None
    NODE_RED_DIR.mkdir(parents=True, exist_ok=True)
    print(f"   installing {' '.join(NODE_RED_PACKAGES)} into {NODE_RED_DIR} ...", flush=True)
    subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--prefix", str(NODE_RED_DIR), *NODE_RED_PACKAGES],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return red if red.exists() else None


@contextmanager
def node_red(wd: Path, mq: Service, db: Service, flow: str, red: Path) -> Iterator[Subject]:
    name = f"nodered_{wd.name}".replace("-", "_")
    create_db(db.port, name)
    text = (HERE / "nodered" / f"flow_{flow}.json").read_text()
    for k, v in {"__MQTT_PORT__": mq.port, "__INFLUX_PORT__": db.port, "__DATABASE__": name}.items():
        text = text.replace(k, str(v))
    user = wd / "user"
    user.mkdir(parents=True, exist_ok=True)
    (user / "flows.json").write_text(text)
    log = wd / "node-red.log"
    env = {**os.environ, "BENCH_NODERED_PORT": str(local.free_port())}
    with open(log, "wb") as fh:
        settings = str(HERE / "nodered" / "settings.js")
        proc = subprocess.Popen(
            [shutil.which("node") or "node", str(red), "--settings", settings, "--userDir", str(user), "flows.json"],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        local.wait_for(lambda: b"Connected to broker" in log.read_bytes(), 60, 0.2, "Node-RED's MQTT connection")
        yield Subject(proc.pid, lambda lo, hi: stored(db.port, name, lo, hi), lambda: common.rss_mb(proc.pid) or 0.0)
    finally:
        local.stop_process(proc, 15)


# ---------------------------------------------------------------- one run


def measure(subject: Subject, mq: Service, db: Service, wd: Path, rate: float, seconds: float, name: str) -> Run:
    db_pid = db.proc.pid if db.proc else None

    def cpus() -> tuple[float, float]:
        return common.proc_cpu_s(subject.pid), common.proc_cpu_s(db_pid) if db_pid else 0.0

    common.pin_subject(subject.pid)  # with --pin: the subject alone on its CPU
    pub = common.Publisher(wd, mq.port, DEVICES, rate, WARM_S + seconds).start()
    try:
        time.sleep(WARM_S)
        (c0, d0), lo_ms = cpus(), time.time_ns() // 1_000_000
        before = subject.count(None, None) if name == "bare_paho" else 0
        stats = pub.wait()
    finally:
        pub.stop()  # a failed run must not leave its publisher feeding the next subject
    hi_ms = int(stats.get("end_ns", time.time_ns())) // 1_000_000  # the last publish, not the publisher's exit
    if name == "bare_paho":
        readings = subject.count(None, None) - before  # it counts as it receives: nothing to catch up
        c1, d1 = cpus()
    else:
        # stored: the window's count stops growing for 2 s; the CPU is read when it last grew, so the idle wait
        # after the work is not charged to the readings
        readings, (c1, d1) = -1, cpus()
        since = time.monotonic()
        deadline = since + CATCH_UP_S
        while time.monotonic() < deadline and time.monotonic() - since < 2.0:
            n = subject.count(lo_ms, hi_ms)
            if n != readings:
                readings, (c1, d1), since = n, cpus(), time.monotonic()
            time.sleep(0.1)
    published = int(stats.get("published", 0))
    total = subject.count(None, None)
    return Run(
        subject=name,
        offered=rate,
        published=published,
        window_s=(hi_ms - lo_ms) / 1000,
        readings=readings,
        stored_total=total,
        cpu_s=c1 - c0,
        db_cpu_s=0.0 if name == "bare_paho" else d1 - d0,
        rss_mib=subject.rss(),
        lost=max(0, published * FIELDS_PER_MESSAGE - total),
    )


def sweep(rates: list[float], seconds: float, rounds: int, subjects: list[str]) -> dict[str, Any]:
    wd0 = common.fresh_dir(common.RUN_DIR / "mqtt_sweep")
    notes: list[str] = []
    red = None
    if any(s.startswith("nodered") for s in subjects):
        try:
            red = node_red_main()
        except subprocess.CalledProcessError as err:
            notes.append(f"Node-RED could not be installed ({err}); its rows are left out")
        if red is None:
            subjects = [s for s in subjects if not s.startswith("nodered")]
            notes.append("no npm here: the Node-RED rows are left out")
    runs: list[Run] = []
    mq = local.mosquitto(wd0 / "mosquitto")
    db = local.influxdb(wd0 / "influxdb")
    with common.running(mq, db):
        for rnd in range(rounds):
            for i, rate in enumerate(rates):
                # interleaved: each rate's subjects in a rotated order, so no one always runs on a warmer machine
                k = (rnd + i) % len(subjects)
                for name in subjects[k:] + subjects[:k]:
                    # by the subject's place, not its name: a `sitegw[...]` name would make the folder, and with it
                    # the site's MQTT client id and database (tests/sites.py cuts both at 60 characters), one for
                    # every run of that subject, each taking over the session and backlog of the one before
                    wd = common.fresh_dir(wd0 / f"{name.split('[')[0]}{subjects.index(name)}-{int(rate)}-{rnd}")
                    print(f"   {name} at {rate:g} msg/s (round {rnd + 1}) ...", flush=True)
                    try:
                        with _subject(name, wd, mq, db, red) as subj:
                            runs.append(measure(subj, mq, db, wd, rate, seconds, name))
                    except Exception as err:  # one subject failing leaves the others' figures standing
                        notes.append(f"{name} at {rate:g} msg/s: {type(err).__name__}: {err}")
    return {"runs": [r.to_json() for r in runs], "notes": notes, "table": table(runs)}


@contextmanager
def _subject(name: str, wd: Path, mq: Service, db: Service, red: Path | None) -> Iterator[Subject]:
    if name == "bare_paho":
        with bare_paho(wd, mq) as s:
            yield s
    elif name.split("[")[0] == "sitegw":
        with sitegw(wd, mq, db, _broker_settings(name)) as s:
            yield s
    else:
        assert red is not None
        with node_red(wd, mq, db, name.removeprefix("nodered_"), red) as s:
            yield s


def _broker_settings(name: str) -> dict[str, Any]:
    """`sitegw[read_window_above=800;read_window_ms=1.5]`: the gateway with these brokers[] settings."""
    _base, bracket, rest = name.partition("[")
    if not bracket:
        return {}
    if not rest.endswith("]"):
        raise ValueError(f"{name!r}: a subject's settings end with ]")
    return common.broker_settings(rest[:-1])


def table(runs: list[Run]) -> str:
    """Per offered rate: each subject's CPU-ms per 1 000 readings (alone, and with InfluxDB's), stored msg/s, loss,
    RSS; then SiteGW's ratios to the bare receiver and to the batching Node-RED flow (medians over rounds)."""
    head = f"{'msg/s':>6} {'subject':<19} {'CPU-ms/1k':>10} {'+InfluxDB':>10} {'stored/s':>9} {'lost':>8}"
    head += f" {'RSS MiB':>8}"
    out = [head, "-" * len(head)]
    by: dict[tuple[float, str], list[Run]] = {}
    for r in runs:
        by.setdefault((r.offered, r.subject), []).append(r)

    def med(xs: list[float | None]) -> float | None:
        ys = sorted(x for x in xs if x is not None)
        return ys[len(ys) // 2] if ys else None

    def f(x: float | None, d: int = 1) -> str:
        return "-" if x is None else f"{x:,.{d}f}"

    # the plain subjects in their order, then `sitegw[...]` variants as they came
    names = [n for n in SUBJECTS if any(r.subject == n for r in runs)]
    names += list(dict.fromkeys(r.subject for r in runs if r.subject not in SUBJECTS))
    for rate in sorted({r.offered for r in runs}):
        for name in names:
            rs = by.get((rate, name))
            if not rs:
                continue
            out.append(
                f"{rate:>6g} {name:<19} {f(med([r.cpu_ms_per_1k for r in rs])):>10} "
                f"{f(med([r.cpu_ms_per_1k_with_db for r in rs]) if name != 'bare_paho' else None):>10} "
                f"{f(med([r.stored_per_s for r in rs]), 0):>9} {max(r.lost for r in rs):>8} "
                f"{f(max(r.rss_mib for r in rs)):>8}"
            )
        gw = med([r.cpu_ms_per_1k for r in by.get((rate, "sitegw"), [])])
        gw_db = med([r.cpu_ms_per_1k_with_db for r in by.get((rate, "sitegw"), [])])
        bare = med([r.cpu_ms_per_1k for r in by.get((rate, "bare_paho"), [])])
        batch = med([r.cpu_ms_per_1k for r in by.get((rate, "nodered_batch"), [])])
        batch_db = med([r.cpu_ms_per_1k_with_db for r in by.get((rate, "nodered_batch"), [])])
        parts = []
        if gw and bare:
            parts.append(f"SiteGW / bare paho {gw / bare:.2f} (target <= 2)")
        if gw and batch:
            parts.append(f"/ Node-RED batch {gw / batch:.2f} (target <= 1)")
        if gw_db and batch_db:
            parts.append(f"with InfluxDB {gw_db / batch_db:.2f}")
        if parts:
            out.append(f"{'':>6} {'; '.join(parts)}")
        for name in names:
            variant = med([r.cpu_ms_per_1k for r in by.get((rate, name), [])]) if "[" in name else None
            if variant and batch:
                out.append(f"{'':>6} {name} / Node-RED batch {variant / batch:.2f}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.mqtt_sweep", description=__doc__.split("\n\n")[0])
    ap.add_argument("--rates", default="500,1000,2000,4000", help="offered messages/s, comma-separated")
    ap.add_argument("--seconds", type=float, default=15.0, help="measuring window per run (after a 3 s warm-up)")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--subjects", default=",".join(SUBJECTS))
    ap.add_argument("--short", action="store_true", help="500 and 4000 msg/s, 10 s windows")
    ap.add_argument("--json", type=Path, default=common.RUN_DIR / "mqtt_sweep.json")
    ap.add_argument("--pin", action="store_true", help="each subject on a CPU of its own, everything else on the rest")
    ap.add_argument(
        "--mqtt", choices=["5", "3.1.1"], default="5", help="the gateway's MQTT protocol (brokers[].protocol)"
    )
    ap.add_argument("--loop", choices=common.LOOP_CHOICES, default="auto", help="the gateway's event loop (--loop)")
    a = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    common.MQTT_PROTOCOL = a.mqtt
    common.GATEWAY_LOOP = a.loop
    rates = [500.0, 4000.0] if a.short else [float(x) for x in a.rates.split(",")]
    seconds = 10.0 if a.short else a.seconds
    subjects = [s for s in a.subjects.split(",") if s]
    unknown = {s.split("[")[0] for s in subjects} - set(SUBJECTS)
    if unknown:
        ap.error(f"unknown subject(s) {sorted(unknown)}; choose from {', '.join(SUBJECTS)}")
    for s in subjects:
        try:
            if _broker_settings(s) and not s.startswith("sitegw["):
                ap.error(f"{s!r}: only sitegw takes settings")
        except ValueError as err:
            ap.error(str(err))
    pinned = None
    if a.pin:
        cpu = common.pin_harness()
        pinned = f"pinned: each subject alone on CPU {cpu}" if cpu is not None else "--pin ignored: one CPU"
    print(
        f"== mqtt_sweep: {DEVICES} devices x {FIELDS_PER_MESSAGE} fields, rates {rates}, {seconds:g} s windows, "
        f"the gateway on MQTT {a.mqtt}, event loop {a.loop}"
    )
    report = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": common.machine_facts(),
        "devices": DEVICES,
        "fields_per_message": FIELDS_PER_MESSAGE,
        "seconds": seconds,
        "gateway_mqtt_protocol": a.mqtt,
        "gateway_loop": a.loop,
        **sweep(rates, seconds, a.rounds, subjects),
    }
    if pinned:
        report["notes"].insert(0, pinned)
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps(report, indent=2, ensure_ascii=False))
    print(report["table"])
    for n in report["notes"]:
        print(f"note: {n}")
    print(f"report: {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
