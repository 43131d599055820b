"""The login checked before a request body is read: an anonymous write under /api/ never costs its body."""

from collections.abc import Mapping

from starlette.requests import HTTPConnection

from alerting.roles import Role
from gateway.api.deps import LOGIN_REQUIRED, refusal, role_refused, session_token
from gateway.auth import Auth
from gateway.limits import App, Receive, Scope, Send

# every other method is gated as a write: the body limit reads the body of any method but these (gateway/limits.py),
# and uvicorn hands a method on as sent ("post", PROPFIND): those passed a gate of POST/PUT/PATCH/DELETE, and an
# anonymous 16 MiB body was read before the 405
READS = frozenset({"GET", "HEAD", "OPTIONS"})
# the one write under /api/ that takes no session (gateway/api/auth.py): every other route depends on a role
ANONYMOUS_WRITES = frozenset({"/api/login"})


class LoginFirst:
    """Answers a write under /api/ (but the login) that carries no valid session with the routes' own 401, and one
    to a route in `roles` by a user below its role with their 403, from the headers alone. FastAPI reads and parses
    a JSON body before it runs the route's login dependency: without this gate an anonymous 16 MiB upload was read
    and parsed on the event loop (seconds, hundreds of MB) only to be refused. Reads (GET) have no body to read."""

    def __init__(self, app: App, auth: Auth, roles: Mapping[str, Role]) -> None:
        self.app = app
        self.auth = auth
        self.roles = dict(roles)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if (
            scope["type"] != "http"
            or scope.get("method") in READS
            or not path.startswith("/api/")
            or path in ANONYMOUS_WRITES
        ):
            await self.app(scope, receive, send)
            return
        token = session_token(HTTPConnection(scope))
        user = self.auth.user_for(token) if token else None
        needed = self.roles.get(path)
        if user is None:
            answer = refusal(401, LOGIN_REQUIRED, {"WWW-Authenticate": "Bearer"})
        elif needed is not None and user.role < needed:
            answer = refusal(403, role_refused(needed, user))
        else:
            await self.app(scope, receive, send)
            return
        # the body was not read: closing the connection spares the server reading it to reach the next request
        answer.headers["Connection"] = "close"
        await send({"type": "http.response.start", "status": answer.status_code, "headers": answer.raw_headers})
        await send({"type": "http.response.body", "body": answer.body})
