"""`sitegw hub`: one replica of the regional hub (site events from NATS into PostgreSQL, and the hub's web API)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING

from gateway import eventloop
from gateway.config import ConfigError
from hub.config import HubConfigError, HubSettings, NatsSection, load_hub_config

if TYPE_CHECKING:
    from hub.consumer import HubConfig
# hub.consumer (nats-py, psycopg) loads when a hub runs: `sitegw run` on a site never carries them

log = logging.getLogger("sitegw.hub")


def add_cli(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("hub", help="run one replica of the regional hub: site events from NATS into PostgreSQL")
    p.add_argument("--config", type=Path, help="the hub's YAML (NATS, HTTP, region tree, users); see docs/hub.md")
    p.add_argument("--servers", help="NATS URLs of the regional cluster, comma-separated (without --config)")
    p.add_argument("--dsn-env", default=None, help="environment variable holding the PostgreSQL DSN")
    p.add_argument("--stream", default=None)
    p.add_argument("--ack-wait-s", type=float, default=None, help="redelivery of what a dead replica fetched")
    p.add_argument(
        "--loop", choices=eventloop.CHOICES, default="auto", help="event loop: uvloop (auto: when installed) or asyncio"
    )


def consumer_config(settings: HubSettings | None, args: argparse.Namespace) -> tuple[HubConfig, str]:
    """The consumer's settings from the file, each overridden by its flag; and the name of the DSN's variable."""
    from gateway.uplink import tls_context
    from hub.consumer import HubConfig

    nats_cfg = settings.nats if settings else NatsSection(servers=(args.servers or "").split(","))
    dsn_env = args.dsn_env or (settings.dsn_env if settings else "SITEGW_HUB_DSN")
    cfg = HubConfig(
        list(nats_cfg.servers),
        os.environ.get(dsn_env, ""),
        stream=args.stream or nats_cfg.stream,
        replicas=nats_cfg.replicas,
        max_age_s=nats_cfg.max_age_days * 86400,
        ack_wait_s=args.ack_wait_s or nats_cfg.ack_wait_s,
        user=nats_cfg.user,
        password=os.environ.get(nats_cfg.password_env) if nats_cfg.password_env else None,
        tls=tls_context(nats_cfg.ca_file, nats_cfg.cert_file, nats_cfg.key_file, nats_cfg.servers),
    )
    return cfg, dsn_env


def run_cli(args: argparse.Namespace) -> int:
    if args.config is None and not args.servers:
        print("sitegw hub: give --config hub.yaml (or at least --servers)")
        return 2
    try:
        settings = load_hub_config(args.config) if args.config else None
    except HubConfigError as err:
        print(f"sitegw hub: {err}")
        return 2
    nats_pw = settings.nats.password_env if settings else None
    if nats_pw and not os.environ.get(nats_pw):  # else it would connect without a password and be refused forever
        print(f"sitegw hub: set {nats_pw} to the hub's NATS password (nats.password_env)")
        return 2
    cfg, dsn_env = consumer_config(settings, args)
    if not cfg.dsn:  # the DSN carries the password: from the environment, never the command line
        print(f"sitegw hub: set {dsn_env} to the PostgreSQL DSN (postgresql://user:pw@host:port/db)")
        return 2
    try:
        eventloop.run(lambda: _run(cfg, settings), args.loop)
    except ConfigError as err:  # --loop uvloop where it cannot be imported
        print(f"sitegw hub: {err}")
        return 2
    except ValueError as err:  # a user's password variable missing, found when the API starts
        print(f"sitegw hub: {err}")
        return 2
    except (RuntimeError, SystemExit) as err:  # uvicorn exits when it cannot listen
        log.error("hub replica stopped: %s", err or "the web page could not listen", exc_info=err.__cause__)
        return 1
    return 0


async def _run(cfg: HubConfig, settings: HubSettings | None) -> None:
    from hub.consumer import Hub

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if settings is None or settings.http is None:
        await Hub(cfg).run(stop)
        return
    import uvicorn

    from hub.api import bounded, create_app

    hub = Hub(cfg)
    app = create_app(settings, cfg.dsn, hub)

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Generator[None, None, None]:
            yield  # ours stop both parts in order

    http = settings.http
    server = Server(uvicorn.Config(bounded(app), host=http.host, port=http.port, log_level="warning", lifespan="off"))
    log.info("hub web page on http://%s:%d/", http.host, http.port)
    # both parts run as long as the replica; either ending on its own ends the replica, loudly, for its supervisor
    # (systemd, compose) to restart: a hub that consumes without its page, or the reverse, would go unnoticed
    parts = {
        asyncio.create_task(hub.run(stop), name="hub consumer"),
        asyncio.create_task(server.serve(), name="hub web page"),
    }
    stopping = asyncio.create_task(stop.wait())
    try:
        done, _ = await asyncio.wait({*parts, stopping}, return_when=asyncio.FIRST_COMPLETED)
        ended = [t for t in done if t is not stopping]
    finally:
        stop.set()
        server.should_exit = True
        await asyncio.wait(parts)
        await app.state.db.close()
    for p in parts - set(ended):  # a part that failed while the replica was stopping: said, not dropped
        if not p.cancelled() and p.exception() is not None:
            log.error("the %s failed while stopping: %s", p.get_name(), p.exception())
    for t in ended:
        if t.cancelled():
            raise RuntimeError(f"the {t.get_name()} was cancelled")
        err = t.exception()
        if err is not None:
            raise RuntimeError(f"the {t.get_name()} failed: {type(err).__name__}: {err}") from err
        if not stopping.done():
            raise RuntimeError(f"the {t.get_name()} ended by itself")
