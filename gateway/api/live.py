"""Routes of what happens now: latest values, the console's site, the plan drawing, the live stream, recent history."""

import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, StreamingResponse

from alerting import glossary
from alerting.db import audit, tx
from gateway.api.bodies import PlanImage
from gateway.api.deps import Admin, Refused, Viewer, decoded, known_device, session_token
from gateway.auth import Auth
from gateway.config import HttpConfig
from gateway.history import LiveHub, StreamsFull, Subscriber, sse
from gateway.parts import GatewayParts
from gateway.siteplan import jib_length_m, plan_image_response, plan_meta, store_image
from telemetry import quantities

HEARTBEAT_S = 15.0  # SSE keep-alive: proxies and phones drop a silent connection; the page shows a stale stream
# a console tab holds one stream; a user's office screen, a few tabs and a phone need a handful, and a phone that
# lost its network keeps its old stream open until the server notices (a failed heartbeat) while it reconnects
STREAMS_PER_USER = 8


class SessionWatch:
    """Whether a live stream's session still holds. The database is asked only when the session may have ended
    (its idle or absolute end as last recorded has come, or someone logged out), so the check can run before every
    frame: a stream ends with its session, not when the client goes."""

    def __init__(self, auth: Auth, token: str) -> None:
        self.auth, self.token = auth, token
        self.logouts, self.until = -1, 0

    def alive(self) -> bool:
        if self.logouts == self.auth.logouts and self.auth.clock() <= self.until:
            return True
        self.logouts = self.auth.logouts
        self.until = self.auth.valid_until(self.token) or 0
        return self.until > 0


class _Stream(StreamingResponse):
    """A stream whose subscriber leaves the hub however the response ends, even before its first frame."""

    def __init__(self, frames: AsyncIterator[str], hub: LiveHub, sub: Subscriber, headers: dict[str, str]) -> None:
        super().__init__(frames, media_type="text/event-stream", headers=headers)
        self.hub, self.sub = hub, sub

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.hub.unsubscribe(self.sub)


def router(gw: GatewayParts) -> APIRouter:
    r = APIRouter()
    eng, hist = gw.alarms, gw.history
    uploads = gw.cfg.alarms.state_file.parent  # an admin's plan drawing is kept beside the state file
    max_streams = (gw.cfg.http or HttpConfig()).max_streams

    @r.get("/api/latest")
    async def latest(_: Viewer) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for (dev, q), rd in gw.pipeline.latest.items():
            out.setdefault(dev, {})[q] = {"value": rd.value, "ts_ns": rd.ts_ns, "quality": rd.quality.name.lower()}
        return out

    @r.get("/api/console")
    async def console_meta(user: Viewer) -> dict[str, Any]:
        """What the console needs to draw its tiles: the site, its devices and every quantity's unit and names."""
        devices = [
            {
                "id": d.id,
                "name": d.name,
                "zone": d.zone,
                "kind": gw.cfg.kind_of(d).value,
                "position": d.position.model_dump() if d.position else None,
                "jib_length_m": jib_length_m(d),
                "wind_limit_ms": d.wind_limit_ms,
                # for the alarm lines on the device page's chart: %-of-design rules and the design 预警值 in force
                "design_values": d.design_values,
                "warning": {
                    q: {"cumulative": w.cumulative, "rate": w.rate} for q, w in eng.devices[d.id].warning_values.items()
                },
            }
            for d in gw.cfg.devices
        ]
        units = {n: {"unit": q.unit, "zh": q.title_zh, "en": q.title_en} for n, q in quantities.CATALOG.items()}
        site = gw.cfg.site
        return {
            "site": {"id": site.id, "name": site.name, "timezone": site.timezone},
            "user": {"name": user.name, "role": user.role.name.lower(), "display_name": user.display_name},
            "devices": devices,
            "plan": plan_meta(site.plan, uploads),
            "glossary": {"zh": glossary.ZH, "en": glossary.EN},
            "quantities": units,
            "heartbeat_s": HEARTBEAT_S,
        }

    @r.get("/api/plan/image", response_model=None, response_class=FileResponse)
    async def plan_image(_: Viewer) -> FileResponse:
        """The site drawing under the console's plan view (an admin's upload, else site.plan.image)."""
        return plan_image_response(gw.cfg.site.plan, uploads)

    @r.put("/api/plan/image")
    async def upload_plan_image(body: PlanImage, user: Admin) -> dict[str, Any]:
        """Replace the site drawing (PNG, JPEG or WebP, checked by its content); audited."""
        data = decoded(body.content_b64)
        path = store_image(gw.cfg.site.plan, uploads, data)
        with tx(eng.conn):
            audit(eng.conn, eng.clock(), user.name, "plan.image", "plan:image", body.filename, {"bytes": len(data)})
        return {"image": True, "bytes": len(data), "type": path.suffix.lstrip(".")}

    @r.get("/api/stream")
    async def stream(user: Viewer, request: Request) -> StreamingResponse:
        """Server-Sent Events: `reading` per pipeline batch, `alarm` per lifecycle change, `heartbeat` when quiet,
        `resync` when this client fell behind and its queue was dropped (fetch /api/latest and /api/alarms again).
        The stream ends when its session does (logout, idle or absolute expiry), at the latest with a heartbeat."""
        session = SessionWatch(gw.auth, session_token(request) or "")
        try:
            sub = hist.hub.subscribe(user.name, max_streams, STREAMS_PER_USER)
        except StreamsFull as full:
            gw.metrics.http_refused.update(["429-streams"])
            if full.owner is None:
                raise Refused(
                    429,
                    f"too many live streams: this gateway serves at most {full.limit} at a time (http.max_streams)",
                    f"实时数据连接过多：本网关最多同时服务 {full.limit} 个",
                ) from None
            raise Refused(
                429,
                f"too many live streams of {user.name}: at most {full.limit} at a time per user; close another tab",
                f"{user.name} 的实时数据连接过多：每个用户最多同时 {full.limit} 个，请关闭其他页面",
            ) from None

        async def frames() -> AsyncIterator[str]:
            try:
                yield "retry: 3000\n" + sse("hello", {"ts_ns": time.time_ns()})
                while session.alive():
                    frame = await sub.next(HEARTBEAT_S)
                    if not session.alive():  # what came after the session ended is not for this client
                        break
                    yield frame if frame is not None else sse("heartbeat", {"ts_ns": time.time_ns()})
            finally:
                hist.hub.unsubscribe(sub)

        # subscribed here, before the response, so that the limits hold for requests that arrive together
        return _Stream(frames(), hist.hub, sub, {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @r.get("/api/trend/{device}")
    async def trend(
        device: str, _: Viewer, quantity: str, days: Annotated[int, Query(ge=1, le=180)] = 30
    ) -> dict[str, Any]:
        """An excavation point's last value of each site day (from the state database, kept 180 days)."""
        known_device(gw, device)
        points = gw.daily.series(device, quantity, days)
        return {"device": device, "quantity": quantity, "days": days, "points": [[ts, v] for ts, v in points]}

    @r.get("/api/history/{device}")
    async def history(device: str, _: Viewer, quantity: str | None = None, minutes: float = 60.0) -> dict[str, Any]:
        """Recent values from memory (no InfluxDB): one quantity, or every quantity of the device."""
        known_device(gw, device)
        minutes = min(max(minutes, 1.0), hist.window_ns / 60e9)
        names = [quantity] if quantity else hist.quantities(device)
        return {"device": device, "minutes": minutes, "series": [hist.series(device, q, minutes) for q in names]}

    return r
