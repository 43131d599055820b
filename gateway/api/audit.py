"""The audit trail route: every write of a person or of the system, newest first, for an administrator."""

from typing import Any

from fastapi import APIRouter

from alerting.db import audit_rows
from gateway.api.deps import Admin, Limit
from gateway.parts import GatewayParts


def router(gw: GatewayParts) -> APIRouter:
    r = APIRouter()

    @r.get("/api/audit")
    async def audit_log(_: Admin, target: str | None = None, limit: Limit = 500) -> list[dict[str, Any]]:
        return audit_rows(gw.alarms.conn, target, min(max(limit, 1), 10000))

    return r
