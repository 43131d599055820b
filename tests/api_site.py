"""The gateway's API as served (bounded_api: login gate, body limits), with one user of each role, called raw."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.api import bounded_api
from gateway.app import Gateway
from tests.sites import write_site

ROLES = {"view": "viewer", "zhang": "officer", "li": "manager", "wang": "admin"}
PASSWORDS = {name: f"Pw-{name}-2026-site" for name in ROLES}
Message = dict[str, Any]


class Clock:
    """A clock the test moves: sessions expire by it."""

    def __init__(self, ns: int = 1_800_000_000 * 10**9) -> None:
        self.ns = ns

    def __call__(self) -> int:
        return self.ns

    def advance(self, s: float) -> None:
        self.ns += int(s * 1e9)


@dataclass
class Site:
    gw: Gateway
    app: Any
    clock: Clock
    tokens: dict[str, str] = field(default_factory=dict)

    def bearer(self, name: str) -> list[tuple[bytes, bytes]]:
        return [(b"authorization", f"Bearer {self.tokens[name]}".encode())]


@contextlib.asynccontextmanager
async def api_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **http: Any) -> AsyncIterator[Site]:
    for name, password in PASSWORDS.items():
        monkeypatch.setenv(f"T_PW_{name.upper()}", password)
    users = [{"name": n, "role": r, "password_env": f"T_PW_{n.upper()}"} for n, r in ROLES.items()]
    cfg = write_site(
        tmp_path / "site.yaml",
        influx_port=1,
        devices=[{"id": "P1", "profile": "excavation_survey_v1", "expected_interval_s": 86400}],
        auth={"users": users},
        http={"port": 1, **http},
    )
    clock = Clock()
    gw = Gateway(cfg, fsync=False, clock=clock)  # not started: the API alone, no background tasks
    try:
        site = Site(gw, bounded_api(gw), clock)
        transport = httpx.ASGITransport(app=site.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as c:
            for name, password in PASSWORDS.items():
                r = await c.post("/api/login", json={"username": name, "password": password})
                assert r.status_code == 200, r.text
                site.tokens[name] = r.json()["token"]
        yield site
    finally:
        await gw.alarms.aclose()
        await gw.writer.aclose()


@dataclass
class Answer:
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    reads: int = 0  # how often the app asked for the request body

    def json(self) -> Any:
        return json.loads(self.body)


def scope_of(method: str, path: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "scheme": "http",
        "server": ("gw", 80),
        "client": ("127.0.0.1", 50000),
        "headers": [(b"host", b"gw"), (b"content-type", b"application/json"), *headers],
    }


async def call(
    app: Callable[..., Awaitable[None]],
    method: str,
    path: str,
    headers: list[tuple[bytes, bytes]] = (),  # type: ignore[assignment]
    chunks: list[bytes] = (),  # type: ignore[assignment]
) -> Answer:
    """One request straight into the ASGI app, its body in `chunks`; the answer counts the body's reads."""
    out, rest = Answer(), list(chunks)

    async def receive() -> Message:
        out.reads += 1
        if not rest:
            return {"type": "http.disconnect"}
        return {"type": "http.request", "body": rest.pop(0), "more_body": bool(rest)}

    async def send(msg: Message) -> None:
        if msg["type"] == "http.response.start":
            out.status = msg["status"]
            out.headers = {k.decode().lower(): v.decode() for k, v in msg["headers"]}
        elif msg["type"] == "http.response.body":
            out.body += msg.get("body", b"")

    await app(scope_of(method, path, list(headers)), receive, send)
    return out


@dataclass
class Stream:
    """A streaming answer as it comes: its status, then its body's pieces; `ended` once the app ends the body."""

    status: int = 0
    pieces: asyncio.Queue[bytes | None] = field(default_factory=asyncio.Queue)
    gone: asyncio.Event = field(default_factory=asyncio.Event)  # set: the client disconnects

    async def next_frame(self) -> str | None:
        """The next piece of the body, or None when the app ended it."""
        piece = await self.pieces.get()
        return None if piece is None else piece.decode()


@contextlib.asynccontextmanager
async def stream(
    app: Callable[..., Awaitable[None]], path: str, headers: list[tuple[bytes, bytes]]
) -> AsyncIterator[Stream]:
    """A GET whose answer is read as it comes (an event stream); the client disconnects on leaving the block."""
    out, started = Stream(), asyncio.Event()

    async def receive() -> Message:
        await out.gone.wait()
        return {"type": "http.disconnect"}

    async def send(msg: Message) -> None:
        if msg["type"] == "http.response.start":
            out.status = msg["status"]
            started.set()
        elif msg["type"] == "http.response.body":
            if msg.get("body"):
                out.pieces.put_nowait(msg["body"])
            if not msg.get("more_body", False):
                out.pieces.put_nowait(None)

    async with asyncio.TaskGroup() as tg:
        tg.create_task(app(scope_of("GET", path, headers), receive, send))
        await started.wait()
        try:
            yield out
        finally:
            out.gone.set()
