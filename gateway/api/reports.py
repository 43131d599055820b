"""Routes of the exports a supervisor files: the hazard ledger (CSV, XLSX) and the monthly statistics."""

from datetime import date
from typing import Any

from fastapi import APIRouter, HTTPException, Response
from fastapi.encoders import jsonable_encoder

from alerting.ledger import ledger_csv, ledger_xlsx, monthly_stats, stats_csv, stats_xlsx
from gateway.api.deps import Viewer, span_ns
from gateway.parts import GatewayParts

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
CSV = "text/csv; charset=utf-8"


def _attach(name: str) -> dict[str, str]:
    return {"Content-Disposition": f'attachment; filename="{name}"'}


def router(gw: GatewayParts) -> APIRouter:
    r = APIRouter()
    hz = gw.alarms.hazards

    @r.get("/api/ledger.{fmt}")
    async def ledger(
        fmt: str, _: Viewer, since: date | None = None, until: date | None = None, major_only: bool = False
    ) -> Response:
        lo, hi = span_ns(gw.cfg.site.timezone, since, until)
        if fmt == "csv":
            return Response(ledger_csv(hz, lo, hi, major_only), media_type=CSV, headers=_attach("ledger.csv"))
        if fmt == "xlsx":
            return Response(ledger_xlsx(hz, lo, hi, major_only), media_type=XLSX, headers=_attach("ledger.xlsx"))
        raise HTTPException(404, "ledger formats: csv, xlsx")

    @r.get("/api/stats/monthly")
    async def stats(_: Viewer, since: date, until: date, format: str = "json") -> Any:
        lo, hi = span_ns(gw.cfg.site.timezone, since, until)
        if format == "csv":
            return Response(stats_csv(hz, lo, hi), media_type=CSV, headers=_attach("stats.csv"))
        if format == "xlsx":
            return Response(stats_xlsx(hz, lo, hi), media_type=XLSX, headers=_attach("stats.xlsx"))
        return jsonable_encoder(monthly_stats(hz, lo, hi))

    return r
