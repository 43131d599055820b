"""The uplink sender: the outbox's events to the regional hub's NATS JetStream cluster, in order, deleted on its ack."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sqlite3
import ssl
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import nats
import nats.errors
from nats.aio.client import Client

from alerting.notices import NoticeError, Notices
from alerting.uplink import OutboxEvent, UplinkOutbox
from gateway.config.sections import UplinkConfig
from gateway.metrics import Metrics

log = logging.getLogger("sitegw.uplink")

BATCH = 200  # events read from the outbox per round; each is published and acknowledged on its own
# Any NATS error (no servers, timeouts, no responders while a stream leader is elected, a closed connection) and
# any socket error leave the event in the outbox to be sent again; the stream and the hub drop a resend by its id.
# Not MaxPayloadError: an event larger than the cluster takes is refused the same way every time (set aside instead).
RETRYABLE = (nats.errors.Error, OSError)


def headers_len(event_id: str) -> int:
    """The bytes of an event's headers as nats-py writes them (NATS/1.0, Nats-Msg-Id): the server's max_payload
    counts them with the body, nats-py checks the body only (a flat 256 set aside events the server took)."""
    return len(b"NATS/1.0\r\nNats-Msg-Id: \r\n\r\n") + len(event_id.encode())


def inbox_prefix(site_id: str) -> str:
    """Where a site's replies come: `_INBOX_<site>`; its cluster login may subscribe to `_INBOX_<site>.>` only."""
    return f"_INBOX_{site_id}"


def tls_context(
    ca_file: Path | None, cert_file: Path | None, key_file: Path | None, servers: Sequence[str]
) -> ssl.SSLContext | None:
    """The TLS context for tls:// servers: the server's certificate checked against `ca_file` (or the system's
    CAs) and its name; this side's certificate when given. None for nats:// servers."""
    if not any(s.startswith("tls://") for s in servers):
        return None
    ctx = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    if cert_file is not None and key_file is not None:
        ctx.load_cert_chain(str(cert_file), str(key_file))
    return ctx


class Uplink:
    """One supervised task. Store and forward: an event leaves the outbox only after the cluster acknowledged it
    (stored on a quorum of its replicas), so a site offline for days sends everything when it is back, oldest
    first. The event id is sent as `Nats-Msg-Id` and in the body: a resend after a lost acknowledgement is dropped
    by the stream's duplicate window and, beyond it, by the hub (idempotent on the id)."""

    def __init__(
        self,
        outbox: UplinkOutbox,
        outbox_conn: sqlite3.Connection,
        cfg: UplinkConfig,
        site_id: str,
        metrics: Metrics,
        status: Callable[[], dict[str, Any]] | None = None,
        notices: Notices | None = None,
    ) -> None:
        self.outbox = outbox
        self.cfg = cfg
        self.site_id = site_id
        self.subject = f"{cfg.subject_prefix}.{site_id}.events"
        # the heartbeat: plain NATS, not the stream (a lost one is replaced by the next; a site offline for days
        # has nothing to catch up on here, its events carry the history)
        self.status_subject = f"{cfg.subject_prefix}.{site_id}.status"
        self.status = status
        self._status_due = 0.0
        # supervision notices: asked for with each status (request/reply; the hub keeps them until this site's
        # receipt event reaches it, so a site offline for days gets them when it is back)
        self.notices = notices
        self.notices_subject = f"{cfg.subject_prefix}.{site_id}.notices"
        self.metrics = metrics
        self.wake = asyncio.Event()  # set by the outbox when an event is added
        outbox.bind(outbox_conn, self.wake.set)
        self._nc: Client | None = None
        self._down_since: float | None = None
        self._last_error = ""
        self.refresh()

    async def _nats_error(self, err: Exception) -> None:
        # the send loop reports the outage once, with its length, and names the client's last error (a TLS
        # certificate refused, a login refused) that a bounded connect would otherwise hide behind its timeout
        self._last_error = f"{type(err).__name__}: {err}"
        log.debug("NATS: %s", self._last_error)

    def refresh(self) -> None:
        """The backlog gauges (events waiting, age of the oldest) from the outbox."""
        n, oldest = self.outbox.backlog()
        self.metrics.uplink_backlog = n
        self.metrics.uplink_oldest_ns = oldest
        self.metrics.uplink_set_aside = self.outbox.set_aside_count()

    async def _connect(self) -> Client:
        password = os.environ.get(self.cfg.password_env) if self.cfg.password_env else None
        return await nats.connect(
            tls=tls_context(self.cfg.ca_file, self.cfg.cert_file, self.cfg.key_file, self.cfg.servers),
            servers=list(self.cfg.servers),
            user=self.cfg.user,
            password=password,
            name="sitegw-uplink",
            connect_timeout=self.cfg.timeout_s,
            max_reconnect_attempts=-1,  # the client reconnects by itself; a publish meanwhile fails and is retried
            reconnect_time_wait=1.0,
            allow_reconnect=True,
            error_cb=self._nats_error,  # one line, not nats-py's traceback for each node that refuses a reconnect
            # replies (the stream's acknowledgements, this site's notices) on a prefix of this site's own: a site's
            # login may subscribe only to it, so no site reads another's replies
            inbox_prefix=inbox_prefix(self.site_id).encode(),
        )

    async def run(self) -> None:
        backoff = 0.5
        try:
            while True:
                try:
                    if self._nc is None or self._nc.is_closed:
                        # bounded: nats-py retries a first connect without end (max_reconnect_attempts=-1), and a
                        # cluster it cannot reach or verify (TLS) must show as an outage, not a silent wait
                        async with asyncio.timeout(max(10.0, 3 * self.cfg.timeout_s)):
                            self._nc = await self._connect()
                    self.wake.clear()  # before sending: an event added meanwhile wakes the next round
                    sent = await self._send_all(self._nc)
                    await self._send_status(self._nc)
                    backoff = 0.5
                    if self._down_since is not None:
                        log.info("regional hub reachable again after %.0f s", time.monotonic() - self._down_since)
                        self._down_since = None
                    if not sent:
                        with contextlib.suppress(TimeoutError):  # not wait_for: it can lose a cancel (gh-86296)
                            async with asyncio.timeout(1.0):
                                await self.wake.wait()
                except RETRYABLE as err:
                    self.metrics.uplink_failures += 1
                    if self._down_since is None:
                        self._down_since = time.monotonic()
                        why = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
                        if self._last_error:
                            why += f"; last from the client: {self._last_error}"
                        log.warning("regional hub not reachable (%s); events stay in the outbox", why)
                    self.refresh()
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 30.0)
        finally:
            if self._nc is not None and not self._nc.is_closed:
                with contextlib.suppress(Exception):
                    await self._nc.close()

    async def _send_status(self, nc: Client) -> None:
        now = time.monotonic()
        if self.status is None or now < self._status_due or not nc.is_connected:
            return
        try:
            await self._status_and_notices(nc, now)
        except RETRYABLE:
            raise  # the cluster's trouble: the send loop's outage handling
        except sqlite3.Error:  # the notice store (a full or locked state file): said and counted, not the events' end
            self.metrics.uplink_failures += 1
            self._status_due = now + self.cfg.status_s
            log.exception("uplink: the site's status or its notices failed; events go on")

    async def _status_and_notices(self, nc: Client, now: float) -> None:
        assert self.status is not None
        # the epoch of this state file: the hub shows the open alarms and hazards of the current one only
        body = {"site": self.site_id, "at_ns": time.time_ns(), "epoch": self.outbox.epoch, **self.status()}
        await nc.publish(self.status_subject, json.dumps(body, ensure_ascii=False).encode())
        self._status_due = now + self.cfg.status_s
        if self.notices is not None:
            await self._fetch_notices(nc)

    async def _fetch_notices(self, nc: Client) -> None:
        try:
            reply = await nc.request(self.notices_subject, b"{}", timeout=self.cfg.timeout_s)
        except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
            return  # no hub replica answering now: asked again with the next status
        assert self.notices is not None
        try:
            items = json.loads(reply.data)
            if not isinstance(items, list):
                raise NoticeError("not a list")
            new, bad = self.notices.receive(items)
        except (ValueError, NoticeError) as err:  # the hub's answer, not ours to drop silently: said, retried
            log.error("supervision notices from the hub unreadable (%s): %.200r", err, reply.data)
            return
        for why in bad:
            log.error("a supervision notice from the hub could not be kept: %s", why)
        for nid in new:
            log.warning("supervision notice %d received from the regional hub", nid)

    def _set_aside(self, ev: OutboxEvent, size: int, limit: int) -> None:
        """An event the cluster can never take: kept on the site (uplink_set_aside), the outbox goes on after it."""
        # what was acknowledged before it is deleted through its seq by the caller; it leaves the outbox here
        why = f"{size} bytes, over the regional cluster's max_payload of {limit} bytes"
        self.outbox.set_aside(ev.seq, time.time_ns(), why)
        log.error("uplink: event %s (%s) set aside in the state file, never sent: %s", ev.event_id, ev.kind, why)
        self.refresh()

    async def _send_all(self, nc: Client) -> int:
        """Publish the outbox in order until it is empty; the number sent."""
        js = nc.jetstream()
        total = 0
        while events := self.outbox.pending(BATCH):
            await self._send_status(nc)  # when due: a site catching up shows online and gets its notices
            acked = None
            try:
                for ev in events:
                    body = ev.body.encode()
                    if len(body) + headers_len(ev.event_id) > nc.max_payload:
                        self._set_aside(ev, len(body), nc.max_payload)
                        continue
                    try:
                        await js.publish(
                            self.subject, body, timeout=self.cfg.timeout_s, headers={"Nats-Msg-Id": ev.event_id}
                        )
                    except nats.errors.MaxPayloadError:  # a node with a lower limit than the one first met
                        self._set_aside(ev, len(body), nc.max_payload)
                        continue
                    acked = ev.seq
                    total += 1
                    self.metrics.uplink_sent += 1
            finally:
                if acked is not None:  # what was acknowledged leaves, even when a later publish failed
                    self.outbox.delete_through(acked)
                    self.refresh()
        self.refresh()
        return total
