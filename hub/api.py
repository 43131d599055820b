"""The hub's HTTP API and web page for the people above the sites, each answer scoped to the user's part of the tree."""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import psycopg
from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.responses import FileResponse, JSONResponse
from psycopg import AsyncConnection
from pydantic import BaseModel, ConfigDict, Field

from alerting.ledger import OPEN_END_NS, ledger_xlsx
from gateway.limits import BodyLimit
from gateway.origin import SameOriginWrites
from hub import reports, views
from hub.auth import HubAuth, LoginRefused, audit
from hub.config import HubSettings, HubUser
from hub.consumer import Hub
from hub.regions import RegionTree

STATIC = Path(__file__).with_name("static")
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
NS = 1_000_000_000


class Db:
    """One connection per replica, one request at a time on it: the people above the sites are few, and a
    request's statements (a login's transaction) must not interleave with another's. Reconnects when broken."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._conn: AsyncConnection[Any] | None = None
        self._lock = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def use(self) -> AsyncIterator[AsyncConnection[Any]]:
        async with self._lock:
            try:
                if self._conn is None or self._conn.closed or self._conn.broken:
                    self._conn = await AsyncConnection.connect(self.dsn, autocommit=True, connect_timeout=5)
                yield self._conn
            except psycopg.OperationalError as err:
                raise HTTPException(503, f"the hub's database is not reachable: {err}") from None

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()


class NoticeBody(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    text: str = Field(min_length=1, max_length=2000)  # stripped first: a notice of spaces says nothing
    hazard_id: int | None = Field(default=None, ge=1)  # the site's hazard it is about
    due: date | None = None  # when an answer is expected


class Login(BaseModel):
    username: str = Field(max_length=64)
    password: str = Field(max_length=256)


def month_span(tz: ZoneInfo, month: str | None, cumulative: bool) -> tuple[int, int, str]:
    """[since, until) of a month (YYYY-MM, default the last full one) in the region's zone; cumulative: from the
    beginning to the end of that month (the form asks 截至上月末的累计情况)."""
    today = datetime.now(tz).date()
    if month is None:
        first = today.replace(day=1) - timedelta(days=1)
        y, m = first.year, first.month
    else:
        try:
            y, m = (int(x) for x in month.split("-"))
            date(y, m, 1)
        except ValueError:
            raise HTTPException(422, f"month: {month!r} is not YYYY-MM") from None
        if not 1970 <= y <= 2261:  # the month's end is a datetime (9999-12 overflowed it: a 500) and an int64 of ns
            raise HTTPException(422, f"month: {month!r} is out of range (1970-01 to 2261-12)")
    lo = datetime(y, m, 1, tzinfo=tz)
    hi = datetime(y + (m == 12), m % 12 + 1, 1, tzinfo=tz)
    text = f"截至 {(hi - timedelta(days=1)).date().isoformat()}" if cumulative else f"{y}年{m}月"
    return (0 if cumulative else int(lo.timestamp()) * NS), int(hi.timestamp()) * NS, text


def create_app(cfg: HubSettings, dsn: str, consumer: Hub | None = None) -> FastAPI:
    http = cfg.http
    assert http is not None
    tree = RegionTree(cfg.region)
    auth = HubAuth(cfg.users, http)
    tz = ZoneInfo(cfg.timezone)
    db = Db(dsn)
    app = FastAPI(title="SiteGW regional hub", docs_url=None, redoc_url=None)
    app.state.db = db

    def token_of(request: Request) -> str:
        """The session of a request: the Authorization header's (API clients) or else the cookie's (the page)."""
        header = request.headers.get("authorization", "")
        return header[7:] if header.lower().startswith("bearer ") else request.cookies.get("hub_session", "")

    async def current(request: Request) -> HubUser:
        token = token_of(request)
        if not token:
            raise HTTPException(401, "log in first")
        async with db.use() as conn:
            user = await auth.user_for(conn, token)
        if user is None:
            raise HTTPException(401, "session expired or unknown: log in again")
        return user

    User = Annotated[HubUser, Depends(current)]

    async def scope(user: HubUser, region: str | None) -> list[str]:
        if region is not None:
            node = tree.region(region)
            if node is None:
                raise HTTPException(404, f"no region {region}")
            if user.region is not None and not tree.within(region, user.region):
                raise HTTPException(403, f"region {region} is outside {user.name}'s scope ({user.region})")
        reporting: set[str] = set()
        if (region or user.region or tree.root.code) == tree.root.code:  # unplaced sites show at the root only
            async with db.use() as conn:
                reporting = await views.reporting_sites(conn)
        return tree.visible(user, reporting, region)

    @app.post("/api/login")
    async def login(body: Login, request: Request, response: Response) -> dict[str, Any]:
        source = request.client.host if request.client else "-"
        try:
            async with db.use() as conn:
                token, user = await auth.login(conn, body.username, body.password, source)
        except LoginRefused as err:
            raise HTTPException(401, str(err)) from None
        response.set_cookie("hub_session", token, httponly=True, samesite="strict", max_age=int(http.session_ttl_s))
        return {"token": token, **_me(tree, user)}

    @app.post("/api/logout")
    async def logout(request: Request, response: Response, user: User) -> dict[str, str]:
        async with db.use() as conn:
            await auth.logout(conn, token_of(request))  # the session `current` found, not another
        response.delete_cookie("hub_session")
        return {"logged_out": user.name}

    @app.get("/api/me")
    async def me(user: User) -> dict[str, Any]:
        return _me(tree, user)

    @app.get("/api/sites")
    async def sites(user: User, region: str | None = None) -> dict[str, Any]:
        visible = await scope(user, region)
        async with db.use() as conn:
            rows = await views.site_states(conn, tree, visible, cfg.offline_after_s, tz)
        return {"region": region or _me(tree, user)["region"], "sites": rows, "totals": _totals(rows)}

    @app.get("/api/sites/{site}")
    async def site(site: str, user: User) -> dict[str, Any]:
        if not tree.may_see(user, site):
            raise HTTPException(404, f"no site {site} in {user.name}'s scope")
        async with db.use() as conn:
            return await views.site_detail(conn, tree, site, cfg.offline_after_s, tz)

    @app.post("/api/sites/{site}/notices", status_code=201)
    async def send_notice(site: str, body: NoticeBody, user: User) -> dict[str, Any]:
        """A supervision notice (督办通知) to a site: kept here, fetched by the site with its next status, its
        receipt and acknowledgement reported back through the site's uplink."""
        if user.role != "supervisor":
            raise HTTPException(403, f"sending a supervision notice needs role supervisor ({user.name} is {user.role})")
        if not tree.may_see(user, site):
            raise HTTPException(404, f"no site {site} in {user.name}'s scope")
        async with db.use() as conn:
            known = site in tree.known_sites() or site in await views.reporting_sites(conn)
        if not known:  # a typo would wait at the hub for a site that never asks
            raise HTTPException(404, f"no site {site}: neither in the region tree nor reporting")
        office = _unit_name(tree, user, None)
        by = f"{user.display_name or user.name}（{office}）" if office else (user.display_name or user.name)
        async with db.use() as conn, conn.transaction():
            cur = await conn.execute(
                "INSERT INTO notices (site, sent_by, text, hazard_id, due) VALUES (%s, %s, %s, %s, %s) RETURNING id",
                (site, by, body.text, body.hazard_id, body.due),
            )
            row = await cur.fetchone()
            assert row is not None
            await audit(conn, user.name, "notice.send", f"site:{site}", {"notice": row[0], "text": body.text})
        return {"id": row[0], "site": site, "sent_by": by}

    @app.get("/api/notices")
    async def notices(user: User, region: str | None = None) -> list[dict[str, Any]]:
        visible = await scope(user, region)
        async with db.use() as conn:
            return await views.notices(conn, tree, visible)

    @app.get("/api/major-hazards")
    async def majors(user: User, region: str | None = None) -> list[dict[str, Any]]:
        visible = await scope(user, region)
        async with db.use() as conn:
            return await views.major_hazards(conn, tree, visible)

    @app.get("/api/listed-hazards")
    async def listed(user: User, region: str | None = None) -> list[dict[str, Any]]:
        visible = await scope(user, region)
        async with db.use() as conn:
            return await views.listed_hazards(conn, tree, visible)

    async def per_site(user: User, region: str | None) -> tuple[list[str], dict[str, reports.RegionHazards]]:
        visible = await scope(user, region)
        unit = reports.Unit(_unit_name(tree, user, region))
        async with db.use() as conn:
            return visible, await reports.region_hazards(conn, tree, visible, tz, unit)

    @app.get("/api/stats/monthly")
    async def stats(
        user: User, region: str | None = None, month: str | None = None, cumulative: bool = True, format: str = "json"
    ) -> Any:
        if user.company is not None:
            raise HTTPException(403, "the 附件1 statistics are per region; a contractor group exports its ledger")
        code = region or user.region or tree.root.code
        lo, hi, text = month_span(tz, month, cumulative)
        _visible, parts = await per_site(user, code)
        rows = reports.stats_by_region(tree, parts, code, lo, hi)
        if format == "xlsx":
            node = tree.region(code)
            title = f"{node.name if node else code} 重大事故隐患排查整治工作进展情况调度表（{text}）"
            body = await asyncio.to_thread(reports.stats_by_region_xlsx, rows, title)
            return Response(body, media_type=XLSX, headers=_attach(f"stats-{code}.xlsx"))
        return {"region": code, "period": text, "rows": rows}

    @app.get("/api/ledger.xlsx")
    async def ledger(user: User, region: str | None = None, major_only: bool = False) -> Response:
        _visible, parts = await per_site(user, region)
        unit = reports.Unit(_unit_name(tree, user, region))
        whole = reports.merged(list(parts.values()), tz, unit)
        # 附件2 across the region's projects: the sites' own ledger form, one row per classified hazard of any site
        body = await asyncio.to_thread(ledger_xlsx, whole, 0, OPEN_END_NS, major_only)
        return Response(body, media_type=XLSX, headers=_attach("ledger.xlsx"))

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        """This replica: its database answers, and (where it consumes) its consumer is connected and fetching;
        503 with the problems otherwise (for the load balancer, Compose's healthcheck and monitoring)."""
        async with db.use() as conn:
            await conn.execute("SELECT 1")
        if consumer is None:
            return JSONResponse({"status": "ok"})
        ok, figures = consumer.health()
        return JSONResponse({"status": "ok" if ok else "degraded", **figures}, status_code=200 if ok else 503)

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    return app


def bounded(app: FastAPI) -> Any:
    """Every request body bounded before it is read (a login, a notice of at most 2 000 characters), and no write
    from another site's page (the session is a cookie)."""
    guarded = SameOriginWrites(app, [])  # type: ignore[arg-type]
    return BodyLimit(guarded, default_bytes=16 * 1024, per_path={"/api/login": 4096}, chunk_timeout_s=10.0)


def _attach(name: str) -> dict[str, str]:
    return {"Content-Disposition": f'attachment; filename="{name}"'}


def _unit_name(tree: RegionTree, user: HubUser, region: str | None) -> str:
    if user.company is not None:
        return user.company
    node = tree.region(region or user.region or tree.root.code)
    return node.name if node else ""


def _me(tree: RegionTree, user: HubUser) -> dict[str, Any]:
    root = tree.scope_root(user)
    return {
        "user": user.name,
        "display_name": user.display_name or user.name,
        "role": user.role,
        "region": user.region,
        "company": user.company,
        "tree": _tree(root, user, tree) if root is not None else None,
    }


def _tree(r: Any, user: HubUser, tree: RegionTree) -> dict[str, Any]:
    return {
        "code": r.code,
        "name": r.name,
        "level": r.level,
        "children": [_tree(c, user, tree) for c in r.children],
        "projects": [
            {"id": p.id, "name": p.name, "company": p.company, "sites": p.sites}
            for p in r.projects
            if user.company is None or p.company == user.company
        ],
    }


def _totals(rows: list[dict[str, Any]]) -> dict[str, int]:
    return {
        "sites": len(rows),
        "online": sum(1 for r in rows if r["online"]),
        "alarms": sum(sum(r["alarms"].values()) for r in rows),
        "alarms_3": sum(r["alarms"]["3"] for r in rows),
        "open_hazards": sum(r["open_hazards"] for r in rows),
        "major_open": sum(r["major_open"] for r in rows),
        "overdue": sum(r["overdue"] for r in rows),
    }
