"""The demo simulators with a ledger: every Modbus answer is recorded (device, function code, wall-clock ns).

Run as `python -m soak.simproc --site FILE --control-port N --ledger FILE`. The simulators themselves are
unchanged; the ledger wraps the one function that answers a Modbus request, and is written on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import time
from pathlib import Path

from pymodbus.constants import ExcCodes

import simulators.modbus as sim_modbus
from gateway.config import load_config
from simulators.control import ControlServer
from simulators.device import DeviceSim
from simulators.runner import SiteSimulator

ANSWERS: list[tuple[str, int, int]] = []  # (device, function code, time.time_ns() of the answer)
_serve = sim_modbus._serve


async def _recording_serve(
    dev: DeviceSim,
    function_code: int,
    start_address: int,
    _address: int,
    _count: int,
    regs: list[int],
    set_values: list[int] | list[bool] | None,
) -> ExcCodes | None:
    result = await _serve(dev, function_code, start_address, _address, _count, regs, set_values)
    if result is None:  # an exception answer produces no reading: only data answers are readings served
        ANSWERS.append((dev.id, function_code, time.time_ns()))
    return result


async def _run(args: argparse.Namespace) -> None:
    sim_modbus._serve = _recording_serve  # ModbusLine binds _serve when it builds its servers, i.e. after this
    cfg = load_config(args.site)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with SiteSimulator(cfg, "normal", args.seed, args.time_scale) as sim:
        control = ControlServer(sim, args.control_port)
        await control.start()
        try:
            print("simulators ready", flush=True)
            await stop.wait()
        finally:
            await control.stop()


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m soak.simproc")
    p.add_argument("--site", required=True)
    p.add_argument("--control-port", type=int, required=True)
    p.add_argument("--ledger", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--time-scale", type=float, default=1.0)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("pymodbus").setLevel(logging.WARNING)
    asyncio.run(_run(args))
    Path(args.ledger).write_text(json.dumps(ANSWERS))  # after the loop: every answer is in
    return 0


if __name__ == "__main__":
    sys.exit(main())
