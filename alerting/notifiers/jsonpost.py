"""One JSON POST over httpx with the failure classes of a notification: what is worth retrying and what is not."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from alerting.notifiers.base import SendResult

if TYPE_CHECKING:
    import httpx
# httpx itself is imported when a channel that posts is built: a site without webhook or robot channels does not
# carry its ~5 MB (the memory benchmark's 2 000 devices)


class _RedactUrls(logging.Filter):
    """httpx logs every request with its full URL at INFO; a robot URL is a credential (access_token / key in the
    query, hook id in the path), so log records of the `httpx` logger show only scheme, host and port."""

    def filter(self, record: logging.LogRecord) -> bool:
        import httpx

        if isinstance(record.args, tuple):
            record.args = tuple(
                f"{a.scheme}://{a.netloc.decode()}/…" if isinstance(a, httpx.URL) else a for a in record.args
            )
        return True


def _install_redaction() -> None:
    logger = logging.getLogger("httpx")
    if not any(isinstance(f, _RedactUrls) for f in logger.filters):
        logger.addFilter(_RedactUrls())


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: Any  # parsed JSON, or None when the body is not JSON
    text: str  # the first 200 characters of the body, for the detail of a failure


class JsonPoster:
    """An httpx client kept for the life of the notifier (connection reuse to the robot API)."""

    def __init__(self, timeout_s: float, scrub: Callable[[str], str]) -> None:
        import httpx

        _install_redaction()
        # trust_env=False: a site gateway must not pick up a desktop proxy setting; follow_redirects=False so a
        # redirect cannot carry our token to another host.
        self._client: httpx.AsyncClient = httpx.AsyncClient(timeout=timeout_s, trust_env=False, follow_redirects=False)
        self._scrub = scrub

    async def post(self, url: str, body: bytes, headers: Mapping[str, str] | None = None) -> Reply | SendResult:
        """The reply, or a SendResult for a transport failure (all of them retryable: the robot may be back)."""
        import httpx

        hdrs = {"Content-Type": "application/json; charset=utf-8", **(headers or {})}
        try:
            r = await self._client.post(url, content=body, headers=hdrs)
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as err:
            return SendResult(False, False, f"bad URL ({type(err).__name__})")  # fails the same way every time
        except httpx.TimeoutException as err:
            return SendResult(False, True, f"timeout ({type(err).__name__})")
        except httpx.TransportError as err:
            return SendResult(False, True, self._scrub(f"connection failed ({type(err).__name__}: {err})"))
        try:
            parsed: Any = json.loads(r.content) if r.content else None
        except ValueError:
            parsed = None
        return Reply(r.status_code, parsed, self._scrub(r.text[:200]))

    async def aclose(self) -> None:
        await self._client.aclose()


def classify_status(status: int, text: str) -> SendResult:
    """HTTP status alone: 2xx sent; 5xx, 429 and 408 retryable (the server or our rate is the problem); any other
    4xx not (the request, URL or credentials are wrong and will be wrong next time too)."""
    if 200 <= status < 300:
        return SendResult(True, False, f"HTTP {status}")
    retryable = status >= 500 or status in (408, 429)
    return SendResult(False, retryable, f"HTTP {status}: {text}" if text else f"HTTP {status}")
