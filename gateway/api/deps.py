"""What every router shares: login and role dependencies, id and limit bounds, site dates as ns, refusal replies."""

# No `from __future__ import annotations` in this package: FastAPI reads the dependency annotations at run time.
import base64
import binascii
from collections.abc import Awaitable, Callable
from datetime import date, datetime, time
from typing import TYPE_CHECKING, Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import HTTPConnection

from alerting import glossary
from alerting.alarms import LifecycleError, UnknownAlarm
from alerting.hazards import HazardError
from alerting.ledger import OPEN_END_NS
from alerting.roles import Forbidden, Role
from gateway import refusals
from gateway.auth import User

if TYPE_CHECKING:
    from gateway.parts import GatewayParts

COOKIE = "sitegw_session"
LOGIN_REQUIRED = "login required"

INT64_MAX = 2**63 - 1  # SQLite's INTEGER and InfluxDB's ns timestamps are signed 64-bit
# record ids are SQLite integers (64-bit): a larger number in a path is a bad request, not an OverflowError (500)
RowId = Annotated[int, PathParam(ge=1, le=INT64_MAX)]
Limit = Annotated[int, Query(ge=1, le=5000)]


def parts(request: Request) -> "GatewayParts":
    """The running gateway's parts, as build_api put them on the app."""
    return request.app.state.parts  # type: ignore[no-any-return]


def session_token(request: HTTPConnection) -> str | None:
    """A bearer token (scripts) or the console's session cookie (from the headers alone: no body is read)."""
    h = request.headers.get("authorization", "")
    if h.lower().startswith("bearer "):
        return h[7:].strip() or None
    return request.cookies.get(COOKIE)


async def current_user(request: Request) -> User:
    # async: FastAPI runs a plain def dependency in a worker thread, and this one writes to the state database
    # (a session's last activity) on the connection the event loop uses, which could join the loop's transaction
    token = session_token(request)
    user = parts(request).auth.user_for(token) if token else None
    if user is None:
        raise HTTPException(401, LOGIN_REQUIRED, headers={"WWW-Authenticate": "Bearer"})
    return user


def role_refused(needed: Role, user: User) -> str:
    """Why a user's role is not enough (403), the same whether the route or the login gate (gate.py) says it."""
    return f"needs role {needed.name.lower()} (you are {user.role.name.lower()})"


def role(needed: Role) -> Callable[[User], Awaitable[User]]:
    async def dep(user: Annotated[User, Depends(current_user)]) -> User:
        if user.role < needed:
            raise HTTPException(403, role_refused(needed, user))
        return user

    return dep


Viewer = Annotated[User, Depends(role(Role.VIEWER))]
Officer = Annotated[User, Depends(role(Role.OFFICER))]
Manager = Annotated[User, Depends(role(Role.MANAGER))]
Admin = Annotated[User, Depends(role(Role.ADMIN))]


def decoded(content_b64: str) -> bytes:
    """An uploaded file's content (a drawing, a survey), refused as a bad request when it is not base64."""
    try:
        return base64.b64decode(content_b64, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("content_b64: not base64") from None


def known_device(gw: "GatewayParts", device: str) -> None:
    if device not in gw.alarms.devices:
        raise HTTPException(404, f"unknown device {device!r}")


# what int64 ns (SQLite, InfluxDB) can hold: the end of LAST_DAY in any zone is before 2262-04-11, int64 ns's last day
FIRST_DAY, LAST_DAY = date(1970, 1, 2), date(2261, 12, 31)


def range_ns(tz: str, since: date | None, until: date | None) -> tuple[int | None, int | None]:
    """Calendar dates in the site's time zone -> [start of `since`, end of `until`) in ns.

    Dates beyond what int64 nanoseconds hold are clamped (nothing is recorded there): 9999-12-31 means "to the end",
    not an overflow and a 500."""
    z = ZoneInfo(tz)
    since = min(max(since, FIRST_DAY), LAST_DAY) if since else None
    until = min(max(until, FIRST_DAY), LAST_DAY) if until else None
    lo = int(datetime.combine(since, time(0), z).timestamp() * 1e9) if since else None
    hi = None
    if until:
        hi = int(datetime.combine(until, time(0), z).timestamp() * 1e9) + 86400 * 10**9
    return lo, hi


def span_ns(tz: str, since: date | None, until: date | None) -> tuple[int, int]:
    """Like range_ns, open ends meaning 'since the beginning' and 'until now and beyond'."""
    lo, hi = range_ns(tz, since, until)
    return lo or 0, hi or OPEN_END_NS


def alarm_json(a: Any, units: dict[str, str]) -> dict[str, Any]:
    d: dict[str, Any] = jsonable_encoder(a)
    d["unit"] = units.get(a.rule, "")  # the unit of `value` and `threshold`: what the rule compares
    d["source_zh"] = glossary.cite_zh(a.source or "")
    d["level_zh"] = ("正常", "预警", "报警", "危险")[int(a.level)]
    d["notifiable"] = a.notifiable
    return d


class Refused(HTTPException):
    """An HTTP refusal whose Chinese wording is given where it is raised (built from the request, not a pattern)."""

    def __init__(self, status: int, detail: str, zh: str) -> None:
        super().__init__(status, detail)
        self.zh = zh


def refusal(status: int, detail: Any, headers: dict[str, str] | None = None, zh: str | None = None) -> JSONResponse:
    """Every refusal says why twice: `detail` for scripts and logs, `detail_zh` for the console's users."""
    if zh is None and isinstance(detail, str):
        zh = refusals.message_zh(status, detail)
    elif zh is None:  # a validation error's list of problems: name the fields
        zh = f"请求内容有误：{refusals.fields_zh([tuple(e.get('loc', ())) for e in detail])}"
    return JSONResponse({"detail": detail, "detail_zh": zh}, status_code=status, headers=headers)


def install_refusals(app: FastAPI) -> None:
    """Each kind of refusal to its status: unknown alarm 404, a refused state change 409, a role 403, bad input (an
    overflow too) 422."""

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, err: Exception) -> JSONResponse:
        assert isinstance(err, StarletteHTTPException)
        return refusal(err.status_code, err.detail, getattr(err, "headers", None), getattr(err, "zh", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, err: Exception) -> JSONResponse:
        assert isinstance(err, RequestValidationError)
        return refusal(422, jsonable_encoder(err.errors()))

    @app.exception_handler(OverflowError)
    async def _overflow(_: Request, err: Exception) -> JSONResponse:
        # a number or date past what SQLite's integers or datetime hold that no bound of a body or query caught:
        # the request's value is at fault (422, as a ValueError is), not the gateway (a bare 500)
        return refusal(422, f"a number or date is out of range ({err})")

    def said_as(status: int) -> Callable[[Request, Exception], Awaitable[JSONResponse]]:
        async def handler(_: Request, err: Exception) -> JSONResponse:
            return refusal(status, str(err))

        return handler

    # the handler is found by the exception's class (its MRO): UnknownAlarm before LifecycleError, and the bad
    # requests of both workflows (ValueError first in their bases) before their state refusals
    for exc, status in (
        (UnknownAlarm, 404),
        (LifecycleError, 409),
        (HazardError, 409),
        (Forbidden, 403),
        (ValueError, 422),
    ):
        app.add_exception_handler(exc, said_as(status))
