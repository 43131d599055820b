"""Routes of baselines: the initial values an excavation point's change is measured from, set and reset with why."""

from typing import Any

from fastapi import APIRouter, HTTPException
from fastapi.encoders import jsonable_encoder

from gateway.api.bodies import BaselineBody, ReasonBody
from gateway.api.deps import Manager, Viewer, known_device
from gateway.parts import GatewayParts


def router(gw: GatewayParts) -> APIRouter:
    r = APIRouter()
    base = gw.alarms.baselines

    @r.get("/api/baselines")
    async def baselines(_: Viewer) -> list[Any]:
        return [jsonable_encoder(b) for b in base.all()]

    @r.put("/api/baselines/{device}/{quantity}")
    async def set_baseline(device: str, quantity: str, body: BaselineBody, user: Manager) -> Any:
        known_device(gw, device)
        value, ts = body.value, None
        if value is None:
            rd = gw.pipeline.latest.get((device, quantity))
            if rd is None:
                raise HTTPException(409, f"no reading of {device}/{quantity} yet: give the value explicitly")
            value, ts = rd.value, rd.ts_ns
        return jsonable_encoder(base.set(device, quantity, value, user.name, body.why, ts))

    @r.delete("/api/baselines/{device}/{quantity}")
    async def reset_baseline(device: str, quantity: str, body: ReasonBody, user: Manager) -> dict[str, str]:
        if base.get(device, quantity) is None:
            raise HTTPException(404, f"no baseline for {device}/{quantity}")
        base.reset(device, quantity, user.name, body.why)
        return {"device": device, "quantity": quantity, "status": "reset"}

    @r.get("/api/baselines/{device}/{quantity}/history")
    async def baseline_history(device: str, quantity: str, _: Viewer) -> list[Any]:
        return jsonable_encoder(base.history(device, quantity))  # type: ignore[no-any-return]

    return r
