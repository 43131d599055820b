"""The API's uvicorn server (gateway/api `_Server`): its loop wakes once a second, serves, and ends on cancel."""

from __future__ import annotations

import asyncio
import email.utils
import time
from typing import Any

import httpx
import uvicorn

from gateway.api import _Server
from services.local import free_port


async def _hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})


async def test_the_server_wakes_once_a_second_serves_with_a_current_date_and_ends_on_cancel() -> None:
    port = free_port()
    server = _Server(uvicorn.Config(_hello, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    ticks: list[int] = []
    on_tick = server.on_tick

    async def counted(counter: int) -> bool:
        ticks.append(counter)
        return await on_tick(counter)

    server.on_tick = counted  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:  # noqa: ASYNC110 (uvicorn has a flag for it, no event)
            await asyncio.sleep(0.05)
        await asyncio.sleep(3.0)
        async with httpx.AsyncClient() as client:
            r = await client.get(f"http://127.0.0.1:{port}/")
        assert r.status_code == 200 and r.text == "ok"
        # uvicorn's own loop wakes ten times a second (about 30 ticks here); this one once a second
        assert 2 <= len(ticks) <= 5, ticks
        assert all(c % 10 == 0 for c in ticks)  # every tick refreshes the Date header
        date = email.utils.parsedate_to_datetime(r.headers["date"]).timestamp()
        assert abs(date - time.time()) <= 2.5  # refreshed each second, not left at the start
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert task.done() and task.cancelled()
