"""Request bodies bounded before they are read: an ASGI middleware with a limit per route and a timeout per chunk."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodyLimit:
    """Refuses a body over its route's limit with 413 before reading it when Content-Length says so, or as soon
    as the bytes received pass the limit (chunked uploads); a client that stalls mid-body gets 408. Nothing of an
    oversized body is buffered, so one anonymous request can neither fill the memory nor hold the event loop."""

    def __init__(
        self,
        app: App,
        default_bytes: int,
        per_path: Mapping[str, int],
        chunk_timeout_s: float,
        on_refused: Callable[[str], object] | None = None,
    ) -> None:
        self.app = app
        self.default = default_bytes
        self.per_path = dict(per_path)
        self.timeout = chunk_timeout_s
        self.on_refused = on_refused

    def limit_for(self, path: str) -> int:
        return self.per_path.get(path, self.default)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        length = _content_length(scope)
        if length is not None and length > limit:
            await self._refuse(send, 413, f"request body of {length} bytes; this endpoint takes at most {limit}")
            return
        # read the body here, up to the limit, before the app sees any of it: a body over the limit is refused as
        # soon as its bytes pass it (a chunked upload declares no length), and what was read is at most the limit
        body = bytearray()
        while True:
            try:
                msg = await asyncio.wait_for(receive(), self.timeout)
            except TimeoutError:
                await self._refuse(send, 408, f"no part of the request body for {self.timeout:g} s")
                return
            if msg["type"] == "http.disconnect":
                return
            body += msg.get("body", b"")
            if len(body) > limit:
                await self._refuse(send, 413, f"request body over {limit} bytes")
                return
            if not msg.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()  # after the body: the disconnect, when the client goes

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send, status: int, detail: str) -> None:
        if self.on_refused is not None:
            self.on_refused(str(status))
        body = json.dumps({"detail": detail}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _content_length(scope: Scope) -> int | None:
    for k, v in scope.get("headers", []):
        if k == b"content-length":
            try:
                return int(v)
            except ValueError:
                return None
    return None
