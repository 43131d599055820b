"""`python -m bench [--only NAME,...] [--long] [--json PATH]`: run benchmarks, print a table, write a JSON report."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from bench import common
from bench.common import Options, Result

# name -> module (bench.<module>.run); imported when chosen, so one benchmark's import trouble stays its own
BENCHMARKS = {
    "mqtt_ingest": "mqtt_ingest",
    "mqtt_drain": "mqtt_drain",
    "influx_write": "influx_write",
    "alarm_latency": "alarm_latency",
    "memory": "memory",
    "outage": "outage",
}


def _runner(name: str) -> Callable[[Options], Result]:
    mod = importlib.import_module(f"bench.{BENCHMARKS[name]}")
    return mod.run  # type: ignore[no-any-return]


def _fmt(v: float | None, digits: int | None = None) -> str:
    if v is None:
        return "-"
    if digits is None:
        digits = 1 if abs(v) >= 10 else 3  # small figures (seconds, milliseconds) keep their digits
    return f"{v:,.{digits}f}"


def table(results: list[Result]) -> str:
    head = f"{'benchmark':<14} {'figure':>14} {'baseline':>14} {'unit':<22} {'ratio':>7}  {'target':<34} met"
    out = [head, "-" * len(head)]
    for r in results:
        met = {True: "yes", False: "NO", None: "?"}[r.met]
        out.append(
            f"{r.name:<14} {_fmt(r.figure):>14} {_fmt(r.baseline):>14} {r.unit:<22} {_fmt(r.ratio, 2):>7}  "
            f"{r.target:<34} {met}"
        )
        out.extend(f"    note: {n}" for n in r.notes)
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    ap.add_argument("--only", default="", help=f"comma-separated subset of: {', '.join(BENCHMARKS)}")
    ap.add_argument("--long", action="store_true", help="the long versions (memory 10 min, outage 10 min, ...)")
    ap.add_argument("--json", type=Path, default=common.RUN_DIR / "report.json", help="where the report goes")
    ap.add_argument(
        "--mqtt", choices=["5", "3.1.1"], default="5", help="the gateway's MQTT protocol (brokers[].protocol)"
    )
    ap.add_argument(
        "--alarm-load",
        type=float,
        default=None,
        help="alarm_latency's background messages/s (default 1 000, the brief's 10k readings/s)",
    )
    ap.add_argument("--loop", choices=common.LOOP_CHOICES, default="auto", help="the gateway's event loop (--loop)")
    args = ap.parse_args(argv)
    common.MQTT_PROTOCOL = args.mqtt
    common.GATEWAY_LOOP = args.loop
    common.ALARM_LOAD = args.alarm_load
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        ap.error(f"unknown benchmark(s) {unknown}; choose from {list(BENCHMARKS)}")
    # SIGTERM (make, CI, timeout) unwinds like Ctrl-C, so every benchmark's `finally` stops its services
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    opts = Options(long=args.long, workdir=common.RUN_DIR)
    opts.workdir.mkdir(parents=True, exist_ok=True)
    report: dict[str, object] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "long": args.long,
        "gateway_mqtt_protocol": args.mqtt,
        "alarm_load": args.alarm_load,
        "gateway_loop": args.loop,
        "machine": common.machine_facts(),
        "caveat": "shared 2-core machine with other work running: absolute figures are noisy, compare the ratios",
        "benchmarks": {},
    }
    results: list[Result] = []
    for name in names:
        print(f"== {name} ...", flush=True)
        t0 = time.monotonic()
        try:
            res = _runner(name)(opts)
        except Exception as err:  # one broken benchmark must not lose the figures of the others
            traceback.print_exc()
            res = Result(name, None, None, "", None, "", None, notes=[f"failed: {type(err).__name__}: {err}"])
        res.details["wall_s"] = round(time.monotonic() - t0, 1)
        results.append(res)
        report["benchmarks"][name] = res.to_json()  # type: ignore[index]
        print(table([res]), flush=True)
    report["load_average_at_end"] = list(os.getloadavg())
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2, ensure_ascii=False, default=str))
    print()
    print(table(results))
    print(f"\nreport: {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
