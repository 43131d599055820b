"""The pipeline's own CPU per reading, in process and without I/O: decode + evaluate (the gateway's real listeners:
alarms, console history, daily values) + line protocol + spool write, for polls of the Modbus sweep's device.

`python -m bench.pipeline_cost [--polls 20000] [--repeat 5]` prints CPU-µs per poll (ten readings) with each poll
its own batch (a small site at 10 Hz) and with ten polls per batch, best and median of the repeats. It needs no
services, runs in seconds, and is steadier than the sweeps (one thread, no sockets), so it is the before/after
figure for changes to the per-reading path; the sweeps say what they are worth on the whole gateway.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path

from bench.modbus_poll import write_site
from bench.peer_thingsboard import PEER, VALUES
from drivers.modbus.driver import ModbusDevice, PollResult
from gateway.app import Gateway, build_line_devices

DEVICES = 10


async def measure(polls: int, per_batch: int, repeat: int) -> list[float]:
    """CPU-µs per poll over `polls` polls, `repeat` times, in a fresh gateway each time."""
    out = []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as tmp:
            wd = Path(tmp)
            lines = [
                {"id": f"l{i}", "type": "modbus_tcp", "host": "127.0.0.1", "port": 1502 + i} for i in range(DEVICES)
            ]
            devices = [
                {"id": f"D{i:03d}", "profile": "bench_float10_v1", "line": f"l{i}", "unit_id": 1}
                for i in range(DEVICES)
            ]
            cfg = write_site(wd / "site.yaml", lines, devices, profile_dirs=[str(PEER / "profiles")])
            cwd = os.getcwd()
            os.chdir(wd)  # the spool and the state database are relative to the site file's directory
            try:
                gw = Gateway(cfg)
                gw.spool.open()
                devs: list[ModbusDevice] = [d for ln in build_line_devices(cfg).values() for d, _ in ln]
                # what the sweep's simulated inclinometers serve: a profile over depth, float32, whose double is
                # written with 16-17 digits (a value such as 1.5 would make the line protocol look cheaper)
                vals = [12.7 * (1 - k / VALUES) ** 2 + 0.31 for k in range(VALUES)]
                regs = list(struct.unpack(f">{2 * VALUES}H", struct.pack(f">{VALUES}f", *vals)))
                ts = time.time_ns()
                t0 = time.process_time()
                for k in range(polls // per_batch):
                    batch = []
                    for j in range(per_batch):
                        dev = devs[(k * per_batch + j) % DEVICES]
                        res = PollResult()
                        ts += 1_000_000
                        dev.decode([(b, regs) for b in dev.blocks], ts, res)
                        batch += res.readings
                    gw.pipeline.spool.write(*gw.pipeline.evaluate(batch))
                out.append(1e6 * (time.process_time() - t0) / polls)
                gw.spool.close()
            finally:
                os.chdir(cwd)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.pipeline_cost", description=__doc__.split("\n\n")[0])
    ap.add_argument("--polls", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args(argv)
    for per_batch in (1, 10):
        xs = asyncio.run(measure(a.polls, per_batch, a.repeat))
        print(
            f"{per_batch:>2} poll(s) per batch: CPU-µs per poll of {VALUES} readings: best {min(xs):.1f}, "
            f"median {statistics.median(xs):.1f} (of {len(xs)})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
