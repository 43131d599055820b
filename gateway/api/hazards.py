"""Routes of hazard records: the list, one with its history, a report, each step of 发现 → 整改 → 复查 → 销号."""

from collections.abc import Callable
from datetime import date
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from pydantic import BaseModel, ValidationError

from alerting.hazards import HazardClass, HazardError, Hazards, Status
from gateway import refusals
from gateway.api import bodies as b
from gateway.api.deps import Officer, Refused, RowId, Viewer, range_ns
from gateway.parts import GatewayParts

# action -> (its body, the operation of alerting.hazards.Hazards); the names are the URL's last segment
ACTIONS: dict[str, tuple[type[BaseModel], Callable[[Hazards], Callable[..., None]]]] = {
    "confirm": (b.ConfirmHazard, lambda hz: hz.confirm),
    "dismiss": (b.DismissHazard, lambda hz: hz.dismiss),
    "assign": (b.AssignHazard, lambda hz: hz.assign),
    "list_supervision": (b.ListHazard, lambda hz: hz.list_supervision),
    "mark_reported": (b.MarkReported, lambda hz: hz.mark_reported),
    "submit": (b.SubmitHazard, lambda hz: hz.submit),
    "accept": (b.AcceptHazard, lambda hz: hz.accept),
    "reject": (b.RejectHazard, lambda hz: hz.reject),
    "reopen": (b.ReopenHazard, lambda hz: hz.reopen),
}


async def parsed(request: Request, model: type[BaseModel], what: str) -> dict[str, Any]:
    """The body checked against its model, as keyword arguments of the operation (the fields the client sent, typed:
    dates as dates, a 判定依据 as its model). A refusal names the operation and every field at fault."""
    try:
        raw = await request.json()
    except ValueError:
        raise HTTPException(422, "body must be a JSON object") from None
    if not isinstance(raw, dict):
        raise HTTPException(422, "body must be a JSON object")
    if "actor" in raw or "role" in raw:
        raise HTTPException(422, "actor and role come from the login, not the body")
    try:
        body = model.model_validate(raw)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(str(x) for x in e['loc']) or 'body'}: {e['msg']}" for e in err.errors())
        zh = refusals.fields_zh([("body", *e["loc"]) for e in err.errors()])
        raise Refused(422, f"{what}: {problems}", f"{refusals.ACTIONS.get(what, what)}的请求内容有误：{zh}") from None
    return {k: getattr(body, k) for k in body.model_fields_set}


def router(gw: GatewayParts) -> APIRouter:
    r = APIRouter()
    hz = gw.alarms.hazards

    def hazard_or_404(hazard_id: int) -> dict[str, Any]:
        # Hazards.get raises HazardError (409, a refused operation) for a missing record; over HTTP it is a 404
        try:
            return hz.get(hazard_id)
        except HazardError:
            raise HTTPException(404, f"no hazard {hazard_id}") from None

    @r.get("/api/hazards")
    async def hazards(
        _: Viewer,
        status: Status | None = None,
        klass: HazardClass | None = None,
        since: date | None = None,
        until: date | None = None,
    ) -> list[Any]:
        lo, hi = range_ns(gw.cfg.site.timezone, since, until)
        found = hz.query(status=status, klass=klass, since_ns=lo, until_ns=hi)
        return [jsonable_encoder(h) for h in found]

    @r.post("/api/hazards")
    async def report_hazard(request: Request, user: Officer) -> Any:
        fields = await parsed(request, b.ReportHazard, "report")
        hid = hz.report(actor=user.name, role=user.role, **fields)
        return jsonable_encoder(hz.get(hid))

    @r.get("/api/hazards/{hazard_id}")
    async def hazard(hazard_id: RowId, _: Viewer) -> Any:
        return jsonable_encoder({**hazard_or_404(hazard_id), "history": hz.history(hazard_id)})

    @r.post("/api/hazards/{hazard_id}/{action}")
    async def hazard_action(hazard_id: RowId, action: str, request: Request, user: Officer) -> Any:
        if action not in ACTIONS:
            raise HTTPException(404, f"unknown hazard action {action!r}; actions: {', '.join(ACTIONS)}")
        model, operation = ACTIONS[action]
        fields = await parsed(request, model, action)
        hazard_or_404(hazard_id)
        operation(hz)(hazard_id, actor=user.name, role=user.role, **fields)
        return jsonable_encoder(hz.get(hazard_id))

    return r
