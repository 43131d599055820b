"""Open routes: health and metrics (loopback by default; the site's monitoring scrapes them) and the console's files."""

from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Response
from fastapi.responses import FileResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles

from gateway.parts import GatewayParts
from gateway.selfmon import add_health_routes

CONSOLE = Path(__file__).resolve().parents[1] / "console"


def router(gw: GatewayParts) -> APIRouter:
    r = APIRouter()

    @r.get("/healthz")
    def healthz() -> dict[str, Any]:
        return {
            "site": gw.cfg.site.id,
            "database_up": gw.drainer.db_up,
            "spool_pending_bytes": gw.spool.pending_bytes(),
            "spool_dropped_lines": gw.spool.dropped_lines,
            # dict() copies in one step under the GIL: this route runs in a worker thread (a plain def) while the
            # event loop adds devices; a comprehension could see the dict change size mid-way
            "devices_up": dict(gw.metrics.up),
            "alarm_engine_errors": gw.metrics.alarm_errors,
        }

    @r.get("/metrics", response_class=PlainTextResponse)
    def metrics() -> str:
        return gw.metrics_text()

    # the web console: open static files; the page asks for a login and then uses the session cookie
    @r.get("/", include_in_schema=False)
    def console() -> FileResponse:
        return FileResponse(CONSOLE / "index.html", headers={"Cache-Control": "no-cache"})

    @r.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return Response(status_code=204)  # no icon, and no 404 in every browser's console

    return r


def mount(app: FastAPI, gw: GatewayParts) -> None:
    """The routes above, GET /health (ready / degraded with reasons / starting) and the console's static files."""
    app.include_router(router(gw))
    add_health_routes(app, gw)
    app.mount("/console", StaticFiles(directory=CONSOLE), name="console")
