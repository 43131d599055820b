"""The gateway's read-only HTTP endpoint: health, Prometheus metrics and latest values."""

from __future__ import annotations

import contextlib
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import uvicorn
from fastapi import FastAPI
from fastapi.responses import PlainTextResponse

if TYPE_CHECKING:
    from gateway.app import Gateway


def build_api(gw: Gateway) -> FastAPI:
    app = FastAPI(title="SiteGW", docs_url=None, redoc_url=None)

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        return {
            "site": gw.cfg.site.id,
            "database_up": gw.drainer.db_up,
            "spool_pending_bytes": gw.spool.pending_bytes(),
            "spool_dropped_lines": gw.spool.dropped_lines,
            "devices_up": {d: v for d, v in gw.metrics.up.items()},
        }

    @app.get("/metrics", response_class=PlainTextResponse)
    def metrics() -> str:
        return gw.metrics_text()

    @app.get("/api/latest")
    def latest() -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for (dev, q), r in gw.pipeline.latest.items():
            out.setdefault(dev, {})[q] = {"value": r.value, "ts_ns": r.ts_ns, "quality": r.quality.name.lower()}
        return out

    return app


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: the CLI owns SIGINT/SIGTERM and stops every task in order."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


async def serve_api(gw: Gateway, host: str, port: int) -> None:
    config = uvicorn.Config(build_api(gw), host=host, port=port, log_level="warning", lifespan="off")
    await _Server(config).serve()
