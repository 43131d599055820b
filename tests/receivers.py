"""Real receivers for notification tests: an SMTP server (aiosmtpd) and an HTTP server that plays the chat robots."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import ssl
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from services.local import free_port

# --------------------------------------------------------------------------------------------------------------- SMTP


@dataclass
class SmtpReceiver:
    port: int
    messages: list[EmailMessage] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)  # (MAIL FROM, RCPT TO list)
    logins: list[str] = field(default_factory=list)  # user names that logged in successfully
    raw: list[bytes] = field(default_factory=list)  # each message as it came over the wire


class _SmtpHandler:
    def __init__(
        self,
        rx: SmtpReceiver,
        fail_first: int,
        fail_reply: str,
        reject: set[str],
        rcpt: dict[str, list[str]],
        quit_reply: str,
    ) -> None:
        self.rx = rx
        self.fail_left = fail_first
        self.fail_reply = fail_reply
        self.reject = reject
        self.rcpt = rcpt
        self.quit_reply = quit_reply

    async def handle_QUIT(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        return self.quit_reply

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if address in self.reject:
            return "550 5.1.1 user unknown"
        if self.rcpt.get(address):
            return self.rcpt[address].pop(0)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.fail_left > 0:
            self.fail_left -= 1
            return self.fail_reply
        raw = envelope.original_content or envelope.content
        assert isinstance(raw, bytes)
        self.rx.raw.append(raw)
        self.rx.messages.append(cast(EmailMessage, message_from_bytes(raw, policy=default_policy)))
        self.rx.envelopes.append((str(envelope.mail_from), list(envelope.rcpt_tos)))
        return "250 OK"


@contextmanager
def smtp_server(
    *,
    fail_first: int = 0,
    fail_reply: str = "451 4.3.0 mailbox busy, try again later",
    reject: set[str] | None = None,
    auth: tuple[str, str] | None = None,
    tls: tuple[str, str] | None = None,
    tls_mode: str = "starttls",
    rcpt_replies: dict[str, list[str]] | None = None,
    quit_reply: str = "221 Bye",
) -> Iterator[SmtpReceiver]:
    """A real SMTP server on a free loopback port. `fail_first`: answer DATA of the first N messages with
    `fail_reply`; `reject`: recipients refused with 550; `rcpt_replies`: per address, the replies to its next RCPT
    TOs, one each (then accepted); `quit_reply`: the answer to QUIT; `auth`: (user, password) required (AUTH
    PLAIN/LOGIN, also without TLS); `tls`: (cert file, key file), served as STARTTLS (required) or as implicit TLS
    (`tls_mode="ssl"`)."""
    rx = SmtpReceiver(port=free_port())
    handler = _SmtpHandler(
        rx, fail_first, fail_reply, reject or set(), {a: list(r) for a, r in (rcpt_replies or {}).items()}, quit_reply
    )
    kwargs: dict[str, Any] = {}
    if auth is not None:
        user, password = auth

        def authenticator(server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any) -> AuthResult:
            ok = isinstance(data, LoginPassword) and data.login.decode() == user and data.password.decode() == password
            if ok:
                rx.logins.append(user)
            return AuthResult(success=ok, handled=False)

        kwargs.update(authenticator=authenticator, auth_required=True, auth_require_tls=False)
    if tls is not None:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(*tls)
        if tls_mode == "ssl":
            kwargs["ssl_context"] = ctx
        else:
            kwargs.update(tls_context=ctx, require_starttls=True)
    controller = Controller(handler, hostname="127.0.0.1", port=rx.port, **kwargs)
    controller.start()
    try:
        yield rx
    finally:
        controller.stop()


# --------------------------------------------------------------------------------------------------------------- HTTP


@dataclass(frozen=True, slots=True)
class Reply:
    """A scripted answer. `delay_s`: hold the answer that long (a timeout test); released when the server stops."""

    status: int = 200
    json: Any = None
    body: bytes = b""
    delay_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    json: Any
    body: bytes


def dingtalk_signature(secret: str, timestamp: str) -> str:
    """Recomputed here, independently of the notifier: HMAC-SHA256(key=secret, msg="ts\\nsecret"), base64."""
    digest = hmac.new(secret.encode(), f"{timestamp}\n{secret}".encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def feishu_signature(secret: str, timestamp: str) -> str:
    """HMAC-SHA256(key="ts\\nsecret", msg=""), base64."""
    digest = hmac.new(f"{timestamp}\n{secret}".encode(), b"", hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


class HttpReceiver:
    """Records every request. Paths under /dingtalk, /wecom and /feishu answer like those robots (including the
    signature check when a secret is set); any other path answers 200 {"ok": true}. `script` overrides per path."""

    def __init__(
        self, port: int, dingtalk_secret: str | None, feishu_secret: str | None, clock: Callable[[], int] | None
    ) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.requests: list[Request] = []
        self.dingtalk_secret = dingtalk_secret
        self.feishu_secret = feishu_secret
        self.clock = clock  # ns; when set, a signed timestamp must be within an hour of it, as the robots demand
        self.stopping = threading.Event()
        self._scripts: dict[str, list[Reply]] = {}
        self._lock = threading.Lock()

    def script(self, path: str, responses: list[Reply]) -> None:
        """Answer the next requests to `path` (no query) with `responses` in order, then fall back to the default."""
        with self._lock:
            self._scripts.setdefault(path, []).extend(responses)

    def _scripted(self, path: str) -> Reply | None:
        with self._lock:
            queue = self._scripts.get(path)
            return queue.pop(0) if queue else None

    def _fresh(self, ts: str, unit_ns: int) -> bool:
        if self.clock is None:
            return True
        return ts.isdigit() and abs(int(ts) * unit_ns - self.clock()) <= 3600 * 10**9

    def answer(self, req: Request) -> Reply:
        scripted = self._scripted(req.path)
        if scripted is not None:
            return scripted
        if req.path.startswith("/dingtalk"):
            if not req.query.get("access_token"):
                return Reply(json={"errcode": 300001, "errmsg": "token is not exist"})
            if self.dingtalk_secret is not None:
                ts, sign = req.query.get("timestamp", ""), req.query.get("sign", "")
                good = dingtalk_signature(self.dingtalk_secret, ts)
                if not (self._fresh(ts, 10**6) and hmac.compare_digest(sign, good)):
                    return Reply(json={"errcode": 310000, "errmsg": "sign not match, more: [https://ding-doc]"})
            return Reply(json={"errcode": 0, "errmsg": "ok"})
        if req.path.startswith("/wecom"):
            if not req.query.get("key"):
                return Reply(json={"errcode": 93000, "errmsg": "invalid webhook url"})
            return Reply(json={"errcode": 0, "errmsg": "ok"})
        if req.path.startswith("/feishu"):
            if self.feishu_secret is not None:
                doc = req.json if isinstance(req.json, dict) else {}
                ts, sign = str(doc.get("timestamp", "")), str(doc.get("sign", ""))
                good = feishu_signature(self.feishu_secret, ts)
                if not (self._fresh(ts, 10**9) and hmac.compare_digest(sign, good)):
                    msg = "sign match fail or timestamp is not within one hour from current time"
                    return Reply(json={"code": 19021, "data": {}, "msg": msg})
            return Reply(json={"StatusCode": 0, "StatusMessage": "success", "code": 0, "data": {}, "msg": "success"})
        return Reply(json={"ok": True})


def _handler_for(rx: HttpReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, like the real APIs (the notifier reuses its connection)

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            parts = urllib.parse.urlsplit(self.path)
            try:
                parsed: Any = json.loads(body) if body else None
            except ValueError:
                parsed = None
            req = Request(
                method=self.command,
                path=parts.path,
                query=dict(urllib.parse.parse_qsl(parts.query)),
                headers={k.lower(): v for k, v in self.headers.items()},
                json=parsed,
                body=body,
            )
            rx.requests.append(req)
            reply = rx.answer(req)
            if reply.delay_s and rx.stopping.wait(reply.delay_s):
                return
            out = json.dumps(reply.json, ensure_ascii=False).encode() if reply.json is not None else reply.body
            try:
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json" if reply.json is not None else "text/plain")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (a timeout test)

        do_PUT = do_POST

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: the tests read `requests`

    return Handler


@contextmanager
def http_receiver(
    *,
    dingtalk_secret: str | None = None,
    feishu_secret: str | None = None,
    clock: Callable[[], int] | None = None,
) -> Iterator[HttpReceiver]:
    """A real HTTP server on a free loopback port, in a thread."""
    rx = HttpReceiver(free_port(), dingtalk_secret, feishu_secret, clock)
    server = ThreadingHTTPServer(("127.0.0.1", int(rx.url.rsplit(":", 1)[1])), _handler_for(rx))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="http-receiver", daemon=True)
    thread.start()
    try:
        yield rx
    finally:
        rx.stopping.set()
        server.shutdown()
        server.server_close()
        thread.join(5)
