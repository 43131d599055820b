"""Routes of alarms: list, one with its history, operator actions, deliveries, suppression by design, the rules."""

from datetime import date
from typing import Any

from fastapi import APIRouter
from fastapi.encoders import jsonable_encoder

from alerting.alarms import Alarm, AlarmEvent, AlarmState
from alerting.rules import Level
from gateway.api.bodies import AckBody, ResetBody, ShelveBody, SuppressBody, TextBody
from gateway.api.deps import Admin, Limit, Manager, Officer, RowId, Viewer, alarm_json, known_device, range_ns
from gateway.parts import GatewayParts


def router(gw: GatewayParts) -> APIRouter:
    r = APIRouter()
    eng = gw.alarms

    def as_json(a: Alarm) -> dict[str, Any]:
        return alarm_json(a, eng.site.units)

    def events(evs: list[AlarmEvent]) -> dict[str, Any]:
        eng.escalation.wake()
        return {"events": [e.kind for e in evs], "alarm": as_json(evs[-1].alarm) if evs else None}

    @r.get("/api/alarms")
    async def alarms(
        _: Viewer,
        state: AlarmState | None = None,
        device: str | None = None,
        rule: str | None = None,
        min_level: int | None = None,
        open_only: bool = False,
        since: date | None = None,
        until: date | None = None,
        limit: Limit = 500,
    ) -> list[Any]:
        lo, hi = range_ns(gw.cfg.site.timezone, since, until)
        rows = eng.lifecycle.query(
            state=state,
            device=device,
            rule=rule,
            min_level=Level(min_level) if min_level is not None else None,
            since_ns=lo,
            until_ns=hi,
            open_only=open_only,
            limit=limit,
        )
        return [as_json(a) for a in rows]

    @r.get("/api/alarms/{alarm_id}")
    async def alarm(alarm_id: RowId, _: Viewer) -> dict[str, Any]:
        a = eng.lifecycle.get(alarm_id)
        return {
            **as_json(a),
            "history": jsonable_encoder(eng.lifecycle.history(alarm_id)),
            "escalation": eng.escalation.steps(alarm_id),
            "deliveries": eng.escalation.deliveries(alarm_id),
        }

    @r.post("/api/alarms/{alarm_id}/ack")
    async def ack(alarm_id: RowId, body: AckBody, user: Officer) -> dict[str, Any]:
        return events(eng.lifecycle.ack(alarm_id, user.name, body.comment))

    @r.post("/api/alarms/{alarm_id}/shelve")
    async def shelve(alarm_id: RowId, body: ShelveBody, user: Officer) -> dict[str, Any]:
        return events(eng.lifecycle.shelve(alarm_id, user.name, body.reason, body.duration_s))

    @r.post("/api/alarms/{alarm_id}/unshelve")
    async def unshelve(alarm_id: RowId, user: Officer) -> dict[str, Any]:
        return events(eng.lifecycle.unshelve(alarm_id, user.name))

    @r.post("/api/alarms/{alarm_id}/reset")
    async def reset(alarm_id: RowId, body: ResetBody, user: Manager) -> dict[str, Any]:
        return events(eng.lifecycle.reset(alarm_id, user.name, body.comment))

    @r.post("/api/alarms/{alarm_id}/comment")
    async def comment(alarm_id: RowId, body: TextBody, user: Officer) -> dict[str, Any]:
        return events(eng.lifecycle.comment(alarm_id, user.name, body.text))

    @r.post("/api/alarms/{alarm_id}/hazard")
    async def alarm_to_hazard(alarm_id: RowId, user: Officer) -> dict[str, Any]:
        """Open a hazard record (found) from an alarm, with its reading, threshold and proposed 判定依据."""
        a = eng.lifecycle.get(alarm_id)
        hid = eng.propose_hazard(a, user.name, user.role)
        return jsonable_encoder(eng.hazards.get(hid))  # type: ignore[no-any-return]

    @r.get("/api/deliveries")
    async def deliveries(_: Manager, limit: Limit = 200) -> list[dict[str, Any]]:
        return eng.escalation.deliveries(None, min(max(limit, 1), 5000))

    # ---- suppression by design (crane out of service, maintenance) ----

    @r.get("/api/suppressions")
    async def suppressions(_: Viewer) -> list[dict[str, Any]]:
        return [{"device": d, "reason": w, "since_ns": s, "by": a} for d, w, s, a in eng.lifecycle.suppressions(None)]

    @r.post("/api/devices/{device}/suppress")
    async def suppress(device: str, body: SuppressBody, user: Admin) -> dict[str, Any]:
        known_device(gw, device)
        evs = eng.lifecycle.suppress(device, body.reason, user.name)
        return {"device": device, "reason": body.reason, "events": [e.kind for e in evs]}

    @r.delete("/api/devices/{device}/suppress/{reason}")
    async def unsuppress(device: str, reason: str, user: Admin) -> dict[str, Any]:
        known_device(gw, device)
        evs = eng.lifecycle.unsuppress(device, reason, user.name)
        eng.escalation.wake()
        return {"device": device, "reason": reason, "events": [e.kind for e in evs]}

    @r.get("/api/rules")
    async def rules(_: Viewer, device: str | None = None) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for dev, rs in eng.rules_by_device.items():
            if device is None or dev == device:
                out[dev] = [x.model_dump(mode="json") for x in rs]
        return out

    return r
