"""Email channel: one UTF-8 message to every recipient with an address, over SMTP (STARTTLS, implicit TLS or plain)."""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, parseaddr
from typing import Literal

from alerting.notifiers.base import Message, Person, Refusal, Scrubber, SendResult, report
from telemetry.clock import Clock

Security = Literal["starttls", "ssl", "none"]


def _text(reply: bytes | str) -> str:
    return (reply.decode(errors="replace") if isinstance(reply, bytes) else reply)[:160]


def _code_result(code: int, what: str, reply: bytes | str) -> SendResult:
    """An SMTP reply code decides: 4xx is transient by definition (RFC 5321 §4.2.1), 5xx permanent."""
    return SendResult(False, 400 <= code < 500, f"{what}: {code} {_text(reply)}")


class EmailNotifier:
    def __init__(
        self,
        id: str,
        host: str,
        port: int,
        security: Security,
        sender: str,
        username: str | None,
        password: str | None,
        timeout_s: float,
        clock: Clock,
        ca_file: str | None = None,
    ) -> None:
        self.id = id
        self._host = host
        self._port = port
        self._security = security
        self._sender = sender
        self._username = username
        self._password = password
        self._timeout_s = timeout_s
        self._clock = clock
        self._ca_file = ca_file
        self._scrub = Scrubber([password])

    def compose(self, msg: Message, to: Sequence[Person]) -> EmailMessage:
        em = EmailMessage()
        em["Subject"] = msg.subject
        em["From"] = self._sender
        em["To"] = ", ".join(formataddr((p.name, p.email)) for p in to if p.email)
        em["Date"] = format_datetime(datetime.fromtimestamp(self._clock() / 1e9, UTC))
        domain = parseaddr(self._sender)[1].rpartition("@")[2] or "sitegw"
        # the same key gives the same Message-ID, so a retried duplicate threads with (or is dropped as) the first
        em["Message-ID"] = f"<{msg.key.replace(':', '.').replace(' ', '_')}@{domain}>"
        em["X-SiteGW-Key"] = msg.key
        em["X-SiteGW-Level"] = str(msg.level)
        # 7-bit on the wire: raw UTF-8 may go only to a server that offers 8BITMIME and with BODY=8BITMIME, which
        # smtplib does not send (RFC 6152 §3); base64 is the shorter of the two for Chinese text
        em.set_content(msg.text, cte="base64")
        return em

    def _deliver(self, em: EmailMessage, rcpts: dict[str, tuple[str, ...]]) -> SendResult:
        ctx = ssl.create_default_context(cafile=self._ca_file)
        smtp: smtplib.SMTP
        if self._security == "ssl":
            smtp = smtplib.SMTP_SSL(self._host, self._port, timeout=self._timeout_s, context=ctx)
        else:
            smtp = smtplib.SMTP(self._host, self._port, timeout=self._timeout_s)
        try:
            if self._security == "starttls":
                smtp.starttls(context=ctx)
            if self._username:
                smtp.login(self._username, self._password or "")
            refused = smtp.send_message(em, from_addr=parseaddr(self._sender)[1], to_addrs=list(rcpts))
        except BaseException:
            smtp.close()
            raise
        # the 250 at the end of DATA made the server responsible for the message (RFC 5321 §4.1.1.4): QUIT is
        # housekeeping, and its reply (421, 5xx, a stalled link) must not turn an accepted alarm into a retry
        # (a duplicate) or a failure (a false one)
        try:
            smtp.quit()
        except (smtplib.SMTPException, OSError):
            smtp.close()
        if refused:
            # the others have it: sent, with the refusals, which the delivery retries (4xx) or fails (5xx) for them
            why = tuple(Refusal(a, rcpts.get(a, ()), c, _text(r)) for a, (c, r) in refused.items())
            bad = "; ".join(f"{x.to} refused: {x.code} {x.reply}" for x in why)
            return SendResult(True, False, f"sent to {len(rcpts) - len(refused)} of {len(rcpts)}; {bad}", why)
        return SendResult(True, False, f"sent to {len(rcpts)}")

    def _attempt(self, em: EmailMessage, rcpts: dict[str, tuple[str, ...]]) -> SendResult:
        try:
            return self._deliver(em, rcpts)
        except smtplib.SMTPRecipientsRefused as err:
            codes = [c for c, _ in err.recipients.values()]
            first = next(iter(err.recipients.values()), (0, b""))
            result = _code_result(first[0], "all recipients refused", first[1])
            return SendResult(False, any(400 <= c < 500 for c in codes), result.detail)
        except smtplib.SMTPAuthenticationError as err:
            return _code_result(err.smtp_code, "login refused", err.smtp_error)
        except smtplib.SMTPResponseException as err:
            return _code_result(err.smtp_code, "server replied", err.smtp_error)
        except smtplib.SMTPNotSupportedError as err:
            return SendResult(False, False, f"server does not support it: {err}")  # STARTTLS or AUTH missing
        except smtplib.SMTPServerDisconnected as err:
            return SendResult(False, True, f"disconnected: {err}")
        except ssl.SSLCertVerificationError as err:
            # a certificate that does not verify is a configuration (or interception) problem, not a passing one
            return SendResult(False, False, f"TLS certificate not trusted: {err.verify_message}")
        except (OSError, smtplib.SMTPException) as err:
            return SendResult(False, True, f"{type(err).__name__}: {err}")

    async def send(self, msg: Message, to: Sequence[Person]) -> SendResult:
        rcpts: dict[str, tuple[str, ...]] = {}  # address -> the people at it, in recipient order
        for p in to:
            if p.email:
                rcpts[p.email] = (*rcpts.get(p.email, ()), p.id)
        if not rcpts:
            return report(self.id, msg, SendResult(False, False, "no recipient with an email address"))
        em = self.compose(msg, to)
        # smtplib blocks; a thread keeps the event loop (and the Modbus polls on it) running meanwhile
        result = await asyncio.to_thread(self._attempt, em, rcpts)
        return report(self.id, msg, replace(result, detail=self._scrub(result.detail)))

    async def aclose(self) -> None:
        return None  # one SMTP connection per message
