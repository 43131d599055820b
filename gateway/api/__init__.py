"""The gateway's HTTP API: one router per subject over shared dependencies (deps), the app, and its server."""

import asyncio
import contextlib
from collections.abc import Generator
from typing import Any

import uvicorn
from fastapi import FastAPI

from gateway.api import alarms, audit, auth, baselines, hazards, health, live, notices, reports, surveys
from gateway.api.deps import install_refusals
from gateway.parts import GatewayParts
from telemetry.clock import to_next_tick

__all__ = ["bounded_api", "build_api", "serve_api"]


def build_api(gw: GatewayParts) -> FastAPI:
    """The app: open health and console files, then the login-protected routers, every refusal in two languages."""
    app = FastAPI(title="SiteGW", docs_url=None, redoc_url=None)
    app.state.parts = gw  # what the login dependency reads (gateway/api/deps.py)
    install_refusals(app)
    surveys.install_refusal(app)
    health.mount(app, gw)
    for subject in (auth, live, alarms, baselines, hazards, reports, audit, surveys, notices):
        app.include_router(subject.router(gw))
    return app


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: the CLI owns SIGINT/SIGTERM and stops every task in order."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield

    async def main_loop(self) -> None:
        # uvicorn's own loop wakes ten times a second to see whether it should exit and refreshes its Date header
        # on every tenth wake. Here the gateway stops the server by cancelling its task, so the loop wakes once a
        # second and refreshes the header each time (on_tick does so when the counter is a multiple of ten): ten
        # wakes a second were a fifth of what an idle gateway spent on its event loop.
        counter = 0
        loop = asyncio.get_running_loop()
        while not await self.on_tick(counter):
            await asyncio.sleep(to_next_tick(loop.time(), 1.0))  # with the polls and the other periodic tasks
            counter = (counter + 10) % 864000


def bounded_api(gw: GatewayParts) -> Any:
    """The API behind its login gate (gateway/api/gate.py) and its request-body limits (gateway/limits.py), as
    configured under `http:`; the gate comes first, so that no body is read for a request that will be refused."""
    from alerting.roles import Role
    from gateway.api.gate import LoginFirst
    from gateway.limits import BodyLimit
    from gateway.origin import SameOriginWrites

    h = gw.cfg.http
    assert h is not None
    # the routes that take bodies over the default limit, with the role each route itself demands (surveys.py,
    # live.py): a user below it is refused from the headers, so only who may upload can make the API read 16 MiB
    uploads = {"/api/surveys": Role.OFFICER, "/api/plan/image": Role.ADMIN}
    guarded = SameOriginWrites(
        build_api(gw),  # type: ignore[arg-type]
        h.allowed_origins,
        on_refused=lambda code: gw.metrics.http_refused.update(["403-cross-site"]),
    )
    bounded = BodyLimit(
        guarded,
        h.max_body_bytes,
        {"/api/login": h.max_login_body_bytes} | {path: h.max_upload_bytes for path in uploads},
        h.body_timeout_s,
        on_refused=lambda code: gw.metrics.http_refused.update([code]),
    )
    return LoginFirst(bounded, gw.auth, uploads)


async def serve_api(gw: GatewayParts, host: str, port: int) -> None:
    config = uvicorn.Config(bounded_api(gw), host=host, port=port, log_level="warning", lifespan="off")
    try:
        await _Server(config).serve()
    except SystemExit:  # uvicorn exits the process when it cannot bind; here that is one task's failure, retried
        raise OSError(f"the HTTP API cannot listen on {host}:{port} (address in use or not allowed)") from None
