"""CLI: python -m simulators --site FILE [--scenario NAME] [--control-port N] [--seed N] [--time-scale X]."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from gateway.config import ConfigError, SiteConfig, load_config
from simulators.control import ControlServer
from simulators.runner import SiteSimulator
from simulators.scenarios import SCENARIOS, Scenario


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m simulators", description="Run every device of a site config.")
    p.add_argument("--site", required=True, help="site YAML (the gateway's config)")
    p.add_argument("--scenario", default="normal", help=f"comma-separated: {', '.join(SCENARIOS)}")
    p.add_argument("--control-port", type=int, default=None, help="serve the HTTP control API on 127.0.0.1:N")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--time-scale", type=float, default=1.0, help="speed-up of slow trends (excavation)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


async def _run(cfg: SiteConfig, args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with SiteSimulator(cfg, args.scenario, args.seed, args.time_scale) as sim:
        control = ControlServer(sim, args.control_port) if args.control_port else None
        if control is not None:
            await control.start()
        try:
            print("simulators ready", flush=True)
            await stop.wait()
        finally:
            if control is not None:
                await control.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:  # pymodbus logs every listener (re)start at INFO
        logging.getLogger("pymodbus").setLevel(logging.WARNING)
    try:
        cfg = load_config(args.site)
        Scenario(args.scenario)
        if args.time_scale <= 0:
            raise ValueError("--time-scale must be positive")
    except (ConfigError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_run(cfg, args))
    except OSError as err:  # a port already in use, socat missing, a pty that cannot be opened
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
