"""No cross-site writes: a state-changing request is JSON and, from a browser, from the gateway's own origin."""

from __future__ import annotations

# OWASP CSRF cheat sheet: verifying origin with standard headers (Origin, else Referer) when a browser sends them.
import json
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

from gateway.limits import App, Receive, Scope, Send

_WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class SameOriginWrites:
    """Refuses (403, counted) a state-changing `/api/` request whose Content-Type is not application/json (a form or
    a `no-cors` fetch from another site can only send form types or text/plain), or whose Origin names another
    site. A request without Origin is not from a browser page on another site (browsers send it cross-origin)."""

    def __init__(
        self, app: App, allowed_origins: Iterable[str] = (), on_refused: Callable[[str], object] | None = None
    ) -> None:
        self.app = app
        self.allowed = {o.rstrip("/").lower() for o in allowed_origins}
        self.on_refused = on_refused

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("method") in _WRITES and scope["path"].startswith("/api/"):
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
            why = self._why(headers)
            if why is not None:
                if self.on_refused is not None:
                    self.on_refused("403")
                body = json.dumps({"detail": why}).encode()
                await send(
                    {"type": "http.response.start", "status": 403, "headers": [(b"content-type", b"application/json")]}
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)

    def _why(self, headers: dict[str, str]) -> str | None:
        ctype = headers.get("content-type")
        if ctype is not None and ctype.split(";")[0].strip().lower() != "application/json":
            return f"a state-changing request must be application/json, not {ctype[:60]!r}"
        origin = headers.get("origin")
        if origin is None:
            return None
        if origin == "null":
            return "requests from an opaque origin (a sandboxed page, a file) may not change anything"
        own = headers.get("host", "").lower()
        parts = urlsplit(origin.lower())
        if parts.netloc == own or origin.rstrip("/").lower() in self.allowed:
            return None
        return f"cross-site request from {origin[:80]!r} refused (this gateway is {own!r})"
