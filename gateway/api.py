"""The gateway's HTTP API: health and metrics, then login-protected live values, alarms, baselines and hazards."""

# No `from __future__ import annotations` here: FastAPI reads the dependency annotations (Viewer, Officer ...)
# at run time, and those are local to build_api.
import base64
import binascii
import contextlib
import time as _time
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from datetime import date, datetime, time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from zoneinfo import ZoneInfo

import uvicorn
from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, ValidationError, validate_call
from starlette.exceptions import HTTPException as StarletteHTTPException

from alerting import glossary
from alerting.db import audit, audit_rows, tx
from alerting.hazards import HazardClass, HazardError, Status
from alerting.ledger import OPEN_END_NS, ledger_csv, ledger_xlsx, monthly_stats, stats_csv, stats_xlsx
from alerting.lifecycle import AlarmState, LifecycleError, UnknownAlarm
from alerting.roles import Forbidden, Role
from alerting.rules import HazardBasis, Level
from gateway import refusals
from gateway.auth import AuthError, User
from gateway.history import sse
from gateway.selfmon import add_health_routes
from gateway.siteplan import jib_length_m, plan_image_response, plan_meta, store_image
from gateway.survey_api import add_survey_routes
from telemetry import quantities

if TYPE_CHECKING:
    from gateway.parts import GatewayParts

# record ids are SQLite integers (64-bit): a larger number in a path is a bad request, not an OverflowError (500)
RowId = Annotated[int, PathParam(ge=1, le=2**63 - 1)]
Limit = Annotated[int, Query(ge=1, le=5000)]

COOKIE = "sitegw_session"
CONSOLE = Path(__file__).parent / "console"
HEARTBEAT_S = 15.0  # SSE keep-alive: proxies and phones drop a silent connection; the page shows a stale stream


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoginBody(_Body):
    # bounded: the name goes into the audit table and the failure counter, the password through scrypt
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class AckBody(_Body):
    comment: str | None = None


class ShelveBody(_Body):
    reason: str = Field(min_length=1)
    duration_s: float = Field(gt=0)


class TextBody(_Body):
    text: str = Field(min_length=1)


class ResetBody(_Body):
    comment: str = Field(min_length=1)


class SuppressBody(_Body):
    reason: str = Field(pattern=r"^[a-z_]{1,32}$")  # e.g. out_of_service, maintenance


class BaselineBody(_Body):
    value: float | None = None  # None: the latest reading of the point
    why: str = Field(min_length=1)


class ReasonBody(_Body):
    why: str = Field(min_length=1)


class PlanImage(_Body):
    filename: str = Field(min_length=1, max_length=200)  # for the audit log
    content_b64: str = Field(min_length=4)


_FIRST_DAY, _LAST_DAY = date(1970, 1, 2), date(2261, 12, 31)  # what int64 ns (SQLite, InfluxDB) can hold


def _range_ns(tz: str, since: date | None, until: date | None) -> tuple[int | None, int | None]:
    """Calendar dates in the site's time zone -> [start of `since`, end of `until`) in ns.

    Dates beyond what int64 nanoseconds hold are clamped (nothing is recorded there): 9999-12-31 means "to the end",
    not an overflow and a 500."""
    z = ZoneInfo(tz)
    since = min(max(since, _FIRST_DAY), _LAST_DAY) if since else None
    until = min(max(until, _FIRST_DAY), _LAST_DAY) if until else None
    lo = int(datetime.combine(since, time(0), z).timestamp() * 1e9) if since else None
    hi = None
    if until:
        hi = int(datetime.combine(until, time(0), z).timestamp() * 1e9) + 86400 * 10**9
    return lo, hi


def _span_ns(tz: str, since: date | None, until: date | None) -> tuple[int, int]:
    """Like _range_ns, open ends meaning 'since the beginning' and 'until now and beyond'."""
    lo, hi = _range_ns(tz, since, until)
    return lo or 0, hi or OPEN_END_NS


def build_api(gw: "GatewayParts") -> FastAPI:
    app = FastAPI(title="SiteGW", docs_url=None, redoc_url=None)
    eng = gw.alarms
    hist = gw.history

    def alarm_json(a: Any) -> dict[str, Any]:
        return _alarm_json(a, eng.site.units)

    hist.hub.alarm_json = alarm_json
    if hist.hub.on_alarm not in eng.lifecycle.hooks:  # build_api may run more than once on one gateway
        eng.lifecycle.hooks.append(hist.hub.on_alarm)

    # every refusal says why twice: `detail` for scripts and logs, `detail_zh` for the console's users
    def refusal(status: int, detail: Any, headers: dict[str, str] | None = None, zh: str | None = None) -> JSONResponse:
        if zh is None and isinstance(detail, str):
            zh = refusals.message_zh(status, detail)
        elif zh is None:  # a validation error's list of problems: name the fields
            zh = f"请求内容有误：{refusals.fields_zh([tuple(e.get('loc', ())) for e in detail])}"
        return JSONResponse({"detail": detail, "detail_zh": zh}, status_code=status, headers=headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, err: Exception) -> JSONResponse:
        assert isinstance(err, StarletteHTTPException)
        return refusal(err.status_code, err.detail, getattr(err, "headers", None), getattr(err, "zh", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, err: Exception) -> JSONResponse:
        assert isinstance(err, RequestValidationError)
        return refusal(422, jsonable_encoder(err.errors()))

    @app.exception_handler(UnknownAlarm)
    async def _h404(_: Request, err: Exception) -> JSONResponse:
        return refusal(404, str(err))

    @app.exception_handler(LifecycleError)
    async def _h409(_: Request, err: Exception) -> JSONResponse:
        return refusal(409, str(err))

    @app.exception_handler(HazardError)
    async def _hz(_: Request, err: Exception) -> JSONResponse:
        return refusal(409, str(err))

    @app.exception_handler(Forbidden)
    async def _h403(_: Request, err: Exception) -> JSONResponse:
        return refusal(403, str(err))

    @app.exception_handler(ValueError)
    async def _h422(_: Request, err: Exception) -> JSONResponse:
        return refusal(422, str(err))

    def current_user(request: Request) -> User:
        token = None
        h = request.headers.get("authorization", "")
        if h.lower().startswith("bearer "):
            token = h[7:].strip()
        token = token or request.cookies.get(COOKIE)
        user = gw.auth.user_for(token) if token else None
        if user is None:
            raise HTTPException(401, "login required", headers={"WWW-Authenticate": "Bearer"})
        return user

    def role(needed: Role) -> Callable[[User], Awaitable[User]]:
        async def dep(user: Annotated[User, Depends(current_user)]) -> User:
            if user.role < needed:
                raise HTTPException(403, f"needs role {needed.name.lower()} (you are {user.role.name.lower()})")
            return user

        return dep

    Viewer = Annotated[User, Depends(role(Role.VIEWER))]
    Officer = Annotated[User, Depends(role(Role.OFFICER))]
    Manager = Annotated[User, Depends(role(Role.MANAGER))]
    Admin = Annotated[User, Depends(role(Role.ADMIN))]

    # ---- open: health and metrics (loopback by default; Prometheus and the site's monitoring scrape them) ----

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        return {
            "site": gw.cfg.site.id,
            "database_up": gw.drainer.db_up,
            "spool_pending_bytes": gw.spool.pending_bytes(),
            "spool_dropped_lines": gw.spool.dropped_lines,
            "devices_up": {d: v for d, v in gw.metrics.up.items()},
            "alarm_engine_errors": gw.metrics.alarm_errors,
        }

    @app.get("/metrics", response_class=PlainTextResponse)
    def metrics() -> str:
        return gw.metrics_text()

    add_health_routes(app, gw)  # GET /health: ready / degraded with reasons / starting
    add_survey_routes(app, gw, role(Role.OFFICER), role(Role.VIEWER))  # POST /api/surveys: a surveyor's file

    # ---- the web console: open static files; the page asks for a login and then uses the session cookie ----

    @app.get("/", include_in_schema=False)
    def console() -> FileResponse:
        return FileResponse(CONSOLE / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/console", StaticFiles(directory=CONSOLE), name="console")

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return Response(status_code=204)  # no icon, and no 404 in every browser's console

    # ---- login ----

    @app.post("/api/login")
    async def login(body: LoginBody, request: Request, response: Response) -> dict[str, Any]:
        source = request.client.host if request.client else "-"
        try:
            token, user, expires = await gw.auth.alogin(body.username, body.password, source)
        except AuthError as err:
            raise HTTPException(401, str(err)) from None
        max_age = int((expires - eng.clock()) / 1e9)
        response.set_cookie(COOKIE, token, max_age=max_age, httponly=True, samesite="strict")
        return {"token": token, "user": user.name, "role": user.role.name.lower(), "expires_ns": expires}

    @app.post("/api/logout")
    async def logout(request: Request, response: Response, user: Viewer) -> dict[str, str]:
        h = request.headers.get("authorization", "")
        token = h[7:].strip() if h.lower().startswith("bearer ") else request.cookies.get(COOKIE)
        if token:
            gw.auth.logout(token)
        response.delete_cookie(COOKIE)
        return {"user": user.name, "status": "logged out"}

    @app.get("/api/me")
    async def me(user: Viewer) -> dict[str, str]:
        return {"user": user.name, "role": user.role.name.lower(), "display_name": user.display_name}

    # ---- live values ----

    @app.get("/api/latest")
    async def latest(_: Viewer) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for (dev, q), r in gw.pipeline.latest.items():
            out.setdefault(dev, {})[q] = {"value": r.value, "ts_ns": r.ts_ns, "quality": r.quality.name.lower()}
        return out

    @app.get("/api/console")
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
            "plan": plan_meta(gw.cfg.site.plan, gw.cfg.alarms.state_file.parent),
            "glossary": {"zh": glossary.ZH, "en": glossary.EN},
            "quantities": units,
            "heartbeat_s": HEARTBEAT_S,
        }

    @app.get("/api/plan/image", response_model=None, response_class=FileResponse)
    async def plan_image(_: Viewer) -> FileResponse:
        """The site drawing under the console's plan view (an admin's upload, else site.plan.image)."""
        return plan_image_response(gw.cfg.site.plan, gw.cfg.alarms.state_file.parent)

    @app.put("/api/plan/image")
    async def upload_plan_image(body: PlanImage, user: Admin) -> dict[str, Any]:
        """Replace the site drawing (PNG, JPEG or WebP, checked by its content); audited."""
        try:
            data = base64.b64decode(body.content_b64, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("content_b64: not base64") from None
        path = store_image(gw.cfg.site.plan, gw.cfg.alarms.state_file.parent, data)
        with tx(eng.conn):
            audit(eng.conn, eng.clock(), user.name, "plan.image", "plan:image", body.filename, {"bytes": len(data)})
        return {"image": True, "bytes": len(data), "type": path.suffix.lstrip(".")}

    @app.get("/api/stream")
    async def stream(_: Viewer) -> StreamingResponse:
        """Server-Sent Events: `reading` per pipeline batch, `alarm` per lifecycle change, `heartbeat` when quiet,
        `resync` when this client fell behind and its queue was dropped (fetch /api/latest and /api/alarms again)."""

        async def frames() -> AsyncIterator[str]:
            sub = hist.hub.subscribe()  # here, not outside: the finally below then always unsubscribes
            try:
                yield "retry: 3000\n" + sse("hello", {"ts_ns": _time.time_ns()})
                while True:
                    frame = await sub.next(HEARTBEAT_S)
                    yield frame if frame is not None else sse("heartbeat", {"ts_ns": _time.time_ns()})
            finally:
                hist.hub.unsubscribe(sub)

        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(frames(), media_type="text/event-stream", headers=headers)

    @app.get("/api/trend/{device}")
    async def trend(
        device: str, _: Viewer, quantity: str, days: Annotated[int, Query(ge=1, le=180)] = 30
    ) -> dict[str, Any]:
        """An excavation point's last value of each site day (from the state database, kept 180 days)."""
        _known(device)
        points = gw.daily.series(device, quantity, days)
        return {"device": device, "quantity": quantity, "days": days, "points": [[ts, v] for ts, v in points]}

    @app.get("/api/history/{device}")
    async def history(device: str, _: Viewer, quantity: str | None = None, minutes: float = 60.0) -> dict[str, Any]:
        """Recent values from memory (no InfluxDB): one quantity, or every quantity of the device."""
        _known(device)
        minutes = min(max(minutes, 1.0), hist.window_ns / 60e9)
        names = [quantity] if quantity else hist.quantities(device)
        return {"device": device, "minutes": minutes, "series": [hist.series(device, q, minutes) for q in names]}

    # ---- alarms ----

    @app.get("/api/alarms")
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
        lo, hi = _range_ns(gw.cfg.site.timezone, since, until)
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
        return [alarm_json(a) for a in rows]

    @app.get("/api/alarms/{alarm_id}")
    async def alarm(alarm_id: RowId, _: Viewer) -> dict[str, Any]:
        a = eng.lifecycle.get(alarm_id)
        return {
            **alarm_json(a),
            "history": jsonable_encoder(eng.lifecycle.history(alarm_id)),
            "escalation": eng.escalation.steps(alarm_id),
            "deliveries": eng.escalation.deliveries(alarm_id),
        }

    def _events(evs: list[Any]) -> dict[str, Any]:
        eng.escalation.wake()
        return {"events": [e.kind for e in evs], "alarm": alarm_json(evs[-1].alarm) if evs else None}

    @app.post("/api/alarms/{alarm_id}/ack")
    async def ack(alarm_id: RowId, body: AckBody, user: Officer) -> dict[str, Any]:
        return _events(eng.lifecycle.ack(alarm_id, user.name, body.comment))

    @app.post("/api/alarms/{alarm_id}/shelve")
    async def shelve(alarm_id: RowId, body: ShelveBody, user: Officer) -> dict[str, Any]:
        return _events(eng.lifecycle.shelve(alarm_id, user.name, body.reason, body.duration_s))

    @app.post("/api/alarms/{alarm_id}/unshelve")
    async def unshelve(alarm_id: RowId, user: Officer) -> dict[str, Any]:
        return _events(eng.lifecycle.unshelve(alarm_id, user.name))

    @app.post("/api/alarms/{alarm_id}/reset")
    async def reset(alarm_id: RowId, body: ResetBody, user: Manager) -> dict[str, Any]:
        return _events(eng.lifecycle.reset(alarm_id, user.name, body.comment))

    @app.post("/api/alarms/{alarm_id}/comment")
    async def comment(alarm_id: RowId, body: TextBody, user: Officer) -> dict[str, Any]:
        return _events(eng.lifecycle.comment(alarm_id, user.name, body.text))

    @app.post("/api/alarms/{alarm_id}/hazard")
    async def alarm_to_hazard(alarm_id: RowId, user: Officer) -> dict[str, Any]:
        """Open a hazard record (found) from an alarm, with its reading, threshold and proposed 判定依据."""
        a = eng.lifecycle.get(alarm_id)
        hid = eng.propose_hazard(a, user.name, user.role)
        return jsonable_encoder(eng.hazards.get(hid))  # type: ignore[no-any-return]

    @app.get("/api/deliveries")
    async def deliveries(_: Manager, limit: Limit = 200) -> list[dict[str, Any]]:
        return eng.escalation.deliveries(None, min(max(limit, 1), 5000))

    # ---- suppression by design (crane out of service, maintenance) ----

    @app.get("/api/suppressions")
    async def suppressions(_: Viewer) -> list[dict[str, Any]]:
        return [{"device": d, "reason": r, "since_ns": s, "by": a} for d, r, s, a in eng.lifecycle.suppressions(None)]

    @app.post("/api/devices/{device}/suppress")
    async def suppress(device: str, body: SuppressBody, user: Admin) -> dict[str, Any]:
        _known(device)
        evs = eng.lifecycle.suppress(device, body.reason, user.name)
        return {"device": device, "reason": body.reason, "events": [e.kind for e in evs]}

    @app.delete("/api/devices/{device}/suppress/{reason}")
    async def unsuppress(device: str, reason: str, user: Admin) -> dict[str, Any]:
        _known(device)
        evs = eng.lifecycle.unsuppress(device, reason, user.name)
        eng.escalation.wake()
        return {"device": device, "reason": reason, "events": [e.kind for e in evs]}

    def _known(device: str) -> None:
        if device not in eng.devices:
            raise HTTPException(404, f"unknown device {device!r}")

    # ---- rules and baselines ----

    @app.get("/api/rules")
    async def rules(_: Viewer, device: str | None = None) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for dev, rs in eng.rules_by_device.items():
            if device is None or dev == device:
                out[dev] = [r.model_dump(mode="json") for r in rs]
        return out

    @app.get("/api/baselines")
    async def baselines(_: Viewer) -> list[Any]:
        return [jsonable_encoder(b) for b in eng.baselines.all()]

    @app.put("/api/baselines/{device}/{quantity}")
    async def set_baseline(device: str, quantity: str, body: BaselineBody, user: Manager) -> Any:
        _known(device)
        value, ts = body.value, None
        if value is None:
            r = gw.pipeline.latest.get((device, quantity))
            if r is None:
                raise HTTPException(409, f"no reading of {device}/{quantity} yet: give the value explicitly")
            value, ts = r.value, r.ts_ns
        return jsonable_encoder(eng.baselines.set(device, quantity, value, user.name, body.why, ts))

    @app.delete("/api/baselines/{device}/{quantity}")
    async def reset_baseline(device: str, quantity: str, body: ReasonBody, user: Manager) -> dict[str, str]:
        if eng.baselines.get(device, quantity) is None:
            raise HTTPException(404, f"no baseline for {device}/{quantity}")
        eng.baselines.reset(device, quantity, user.name, body.why)
        return {"device": device, "quantity": quantity, "status": "reset"}

    @app.get("/api/baselines/{device}/{quantity}/history")
    async def baseline_history(device: str, quantity: str, _: Viewer) -> list[Any]:
        return jsonable_encoder(eng.baselines.history(device, quantity))  # type: ignore[no-any-return]

    # ---- hazards ----

    @app.get("/api/hazards")
    async def hazards(
        _: Viewer,
        status: Status | None = None,
        klass: HazardClass | None = None,
        since: date | None = None,
        until: date | None = None,
    ) -> list[Any]:
        lo, hi = _range_ns(gw.cfg.site.timezone, since, until)
        found = eng.hazards.query(status=status, klass=klass, since_ns=lo, until_ns=hi)
        return [jsonable_encoder(h) for h in found]

    @app.post("/api/hazards")
    async def report_hazard(request: Request, user: Officer) -> Any:
        body = await _json_object(request)
        hid = _checked_call(eng.hazards.report, "report", actor=user.name, role=user.role, **body)
        return jsonable_encoder(eng.hazards.get(hid))

    def _hazard_or_404(hazard_id: int) -> dict[str, Any]:
        # Hazards.get raises HazardError (409, a refused operation) for a missing record; over HTTP it is a 404
        try:
            return eng.hazards.get(hazard_id)
        except HazardError:
            raise HTTPException(404, f"no hazard {hazard_id}") from None

    @app.get("/api/hazards/{hazard_id}")
    async def hazard(hazard_id: RowId, _: Viewer) -> Any:
        return jsonable_encoder({**_hazard_or_404(hazard_id), "history": eng.hazards.history(hazard_id)})

    @app.post("/api/hazards/{hazard_id}/{action}")
    async def hazard_action(hazard_id: RowId, action: str, request: Request, user: Officer) -> Any:
        if action not in eng.hazard_actions:
            raise HTTPException(404, f"unknown hazard action {action!r}; actions: {', '.join(eng.hazard_actions)}")
        body = await _json_object(request)
        _hazard_or_404(hazard_id)
        _checked_call(getattr(eng.hazards, action), action, hazard_id, actor=user.name, role=user.role, **body)
        return jsonable_encoder(eng.hazards.get(hazard_id))

    @app.get("/api/ledger.{fmt}")
    async def ledger(
        fmt: str, _: Viewer, since: date | None = None, until: date | None = None, major_only: bool = False
    ) -> Response:
        lo, hi = _span_ns(gw.cfg.site.timezone, since, until)
        if fmt == "csv":
            data = ledger_csv(eng.hazards, lo, hi, major_only)
            return Response(data, media_type="text/csv; charset=utf-8", headers=_attach("ledger.csv"))
        if fmt == "xlsx":
            data = ledger_xlsx(eng.hazards, lo, hi, major_only)
            return Response(data, media_type=_XLSX, headers=_attach("ledger.xlsx"))
        raise HTTPException(404, "ledger formats: csv, xlsx")

    @app.get("/api/stats/monthly")
    async def stats(_: Viewer, since: date, until: date, format: str = "json") -> Any:
        lo, hi = _span_ns(gw.cfg.site.timezone, since, until)
        if format == "csv":
            return Response(stats_csv(eng.hazards, lo, hi), media_type="text/csv; charset=utf-8",
                            headers=_attach("stats.csv"))  # fmt: skip
        if format == "xlsx":
            return Response(stats_xlsx(eng.hazards, lo, hi), media_type=_XLSX, headers=_attach("stats.xlsx"))
        return jsonable_encoder(monthly_stats(eng.hazards, lo, hi))

    # ---- audit ----

    @app.get("/api/audit")
    async def audit_log(_: Admin, target: str | None = None, limit: Limit = 500) -> list[dict[str, Any]]:
        return audit_rows(eng.conn, target, min(max(limit, 1), 10000))

    return app


_XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def _attach(name: str) -> dict[str, str]:
    return {"Content-Disposition": f'attachment; filename="{name}"'}


async def _json_object(request: Request) -> dict[str, Any]:
    """A hazard request body as keyword arguments: 判定依据 objects and ISO dates turned into their types."""
    try:
        body = await request.json()
    except ValueError:
        raise HTTPException(422, "body must be a JSON object") from None
    if not isinstance(body, dict):
        raise HTTPException(422, "body must be a JSON object")
    if "actor" in body or "role" in body:
        raise HTTPException(422, "actor and role come from the login, not the body")
    for k in ("basis", "proposed_basis"):
        if isinstance(body.get(k), dict):
            body[k] = HazardBasis.model_validate(body[k])
    for k in ("deadline", "completed_on"):
        if isinstance(body.get(k), str):
            body[k] = date.fromisoformat(body[k])
    return body


def _checked_call(fn: Callable[..., Any], what: str, *args: Any, **kwargs: Any) -> Any:
    """Call a hazard operation with the body's fields checked against its signature (types, unknown and missing
    fields): a wrong JSON type is a 422 naming the field, never a TypeError or AttributeError inside (500)."""
    try:
        return validate_call(fn)(*args, **kwargs)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(str(x) for x in e['loc']) or 'body'}: {e['msg']}" for e in err.errors())
        zh = refusals.fields_zh([("body", *e["loc"]) for e in err.errors()])
        raise Refused(422, f"{what}: {problems}", f"{refusals.ACTIONS.get(what, what)}的请求内容有误：{zh}") from None


class Refused(HTTPException):
    """An HTTP refusal whose Chinese wording is given where it is raised (built from the request, not a pattern)."""

    def __init__(self, status: int, detail: str, zh: str) -> None:
        super().__init__(status, detail)
        self.zh = zh


def _alarm_json(a: Any, units: dict[str, str]) -> dict[str, Any]:
    d: dict[str, Any] = jsonable_encoder(a)
    d["unit"] = units.get(a.rule, "")  # the unit of `value` and `threshold`: what the rule compares
    d["source_zh"] = glossary.cite_zh(a.source or "")
    d["level_zh"] = ("正常", "预警", "报警", "危险")[int(a.level)]
    d["notifiable"] = a.notifiable
    return d


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: the CLI owns SIGINT/SIGTERM and stops every task in order."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def bounded_api(gw: "GatewayParts") -> Any:
    """The API behind its request-body limits (gateway/limits.py), as configured under `http:`."""
    from gateway.limits import BodyLimit
    from gateway.origin import SameOriginWrites

    h = gw.cfg.http
    assert h is not None
    guarded = SameOriginWrites(
        build_api(gw),  # type: ignore[arg-type]
        h.allowed_origins,
        on_refused=lambda code: gw.metrics.http_refused.update(["403-cross-site"]),
    )
    return BodyLimit(
        guarded,
        h.max_body_bytes,
        {
            "/api/login": h.max_login_body_bytes,
            "/api/surveys": h.max_upload_bytes,
            "/api/plan/image": h.max_upload_bytes,
        },
        h.body_timeout_s,
        on_refused=lambda code: gw.metrics.http_refused.update([code]),
    )


async def serve_api(gw: "GatewayParts", host: str, port: int) -> None:
    config = uvicorn.Config(bounded_api(gw), host=host, port=port, log_level="warning", lifespan="off")
    try:
        await _Server(config).serve()
    except SystemExit:  # uvicorn exits the process when it cannot bind; here that is one task's failure, retried
        raise OSError(f"the HTTP API cannot listen on {host}:{port} (address in use or not allowed)") from None
