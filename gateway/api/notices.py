"""Routes of supervision notices (督办通知) from the regional hub: the list, and a manager's acknowledgement."""

from typing import Any

from fastapi import APIRouter, HTTPException
from pydantic import Field

from alerting.notices import NoticeError
from gateway.api.bodies import Body
from gateway.api.deps import Manager, RowId, Viewer
from gateway.parts import GatewayParts


class NoticeAck(Body):
    note: str = Field(min_length=1, max_length=2000)  # what the site does about it


def router(gw: GatewayParts) -> APIRouter:
    r = APIRouter()

    @r.get("/api/notices")
    async def notices(_: Viewer, open_only: bool = False) -> list[dict[str, Any]]:
        return gw.notices.list(open_only)

    @r.post("/api/notices/{notice_id}/ack")
    async def ack(notice_id: RowId, body: NoticeAck, user: Manager) -> dict[str, Any]:
        if not any(n["id"] == notice_id for n in gw.notices.list()):
            raise HTTPException(404, f"no notice {notice_id}")
        try:
            gw.notices.ack(notice_id, actor=user.name, role=user.role, note=body.note)
        except NoticeError as err:
            raise HTTPException(409, str(err)) from None
        return next(n for n in gw.notices.list() if n["id"] == notice_id)

    return r
