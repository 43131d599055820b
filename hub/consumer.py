"""One hub replica: fetch site events from the shared durable JetStream consumer, store them, then acknowledge."""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import nats
import nats.errors
import nats.js.errors
import psycopg
from nats.aio.client import Client
from nats.js.api import ConsumerConfig, DiscardPolicy, StreamConfig

from hub.ingest import BadEvent, Event, apply, parse, parse_status, pending_notices, reject, store_status
from hub.schema import migrate

log = logging.getLogger("sitegw.hub")


# a PostgreSQL host that stops answering fails a connect in 5 s and a dead connection within ~1 min (TCP
# keepalives), instead of blocking the fetch loop and the shutdown for minutes
_PG_OPTS: dict[str, Any] = {"connect_timeout": 5, "keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10,
                            "keepalives_count": 3}  # fmt: skip


@dataclass
class HubConfig:
    servers: list[str]
    dsn: str
    stream: str = "SITES"
    subjects: list[str] = field(default_factory=lambda: ["sitegw.*.events"])
    status_subject: str = "sitegw.*.status"  # the sites' heartbeats, plain NATS (a queue group across replicas)
    notices_subject: str = "sitegw.*.notices"  # a site asking for its supervision notices (request / reply)
    user: str | None = None
    password: str | None = None
    tls: ssl.SSLContext | None = None  # for tls:// servers
    durable: str = "hub"  # one consumer shared by every replica: each event goes to one of them
    replicas: int = 3  # of the stream, when this hub creates it
    max_age_s: float = 7 * 86400  # and its retention (docs/hub.md: longer than the backup interval)
    batch: int = 200
    ack_wait_s: float = 30.0  # an event fetched by a replica that died is delivered again after this


@dataclass
class HubStats:
    stored: int = 0  # new events committed to PostgreSQL
    duplicates: int = 0  # redelivered events already there
    rejected: int = 0
    db_failures: int = 0


# What PostgreSQL (or psycopg's adaptation) says of one row, as against what it says of itself. A data exception
# (SQLSTATE class 22), an integrity violation (23), a datatype mismatch (42804: a JSON true as an integer), a row over
# a limit (54: an index entry too big) and a value psycopg cannot send (UnicodeEncodeError, a ValueError) are the
# row's: that event is rejected, the others stored.
# Anything else (the connection lost, the server shutting down, a table or a privilege missing: OperationalError,
# InterfaceError, the rest of ProgrammingError) is the database's: the whole batch waits for it.
_ROW_ERRORS = (
    psycopg.DataError,
    psycopg.IntegrityError,
    psycopg.errors.DatatypeMismatch,
    psycopg.errors.ProgramLimitExceeded,
    ValueError,
    TypeError,
    KeyError,
)
# what parse() meets in a message it did not foresee (it turns the ones it knows of into BadEvent): the message's
# fault, rejected alone; let through, it would stop every replica in turn (a poison message)
_DATA_ERRORS = (BadEvent, ValueError, TypeError, KeyError, RecursionError)


def _outage(err: Exception) -> bool:
    return isinstance(err, psycopg.Error) and not isinstance(err, _ROW_ERRORS)


async def ensure_stream(js: Any, cfg: HubConfig) -> None:
    """The sites' stream (R3 file storage by default, events kept `max_age_s`, the oldest dropped first), created
    when missing; an existing one is left as it is, with a warning when nothing bounds it."""
    try:
        info = await js.stream_info(cfg.stream)
    except nats.js.errors.NotFoundError:
        await js.add_stream(
            StreamConfig(
                name=cfg.stream,
                subjects=cfg.subjects,
                num_replicas=cfg.replicas,
                max_age=cfg.max_age_s,
                discard=DiscardPolicy.OLD,
            )
        )
        return
    c = info.config
    if not c.max_age and (c.max_bytes or -1) < 0 and (c.max_msgs or -1) < 0:
        # a stream made by an older hub (or by hand): it grows until JetStream's store refuses every site's publish
        log.warning(
            "stream %s has no retention limit; set one: nats stream edit %s --max-age %dh",
            cfg.stream,
            cfg.stream,
            round(cfg.max_age_s / 3600),
        )


_REPLY_HEADROOM = 1024  # of max_payload, for the reply's headers


def fit_notices(items: list[dict[str, Any]], budget: int) -> bytes:
    """The oldest notices whose JSON list fits in `budget` bytes: all of a site's pending notices could be more than
    the cluster carries (max_payload), and a reply refused would leave the site's request unanswered for good. The
    site confirms what it got and asks again with its next status, so the rest follow."""
    out: list[bytes] = []
    size = 2  # "[]"
    for item in items:
        one = json.dumps(item, ensure_ascii=False).encode()
        cost = len(one) + (1 if out else 0)  # and its comma
        if size + cost > budget:
            break
        out.append(one)
        size += cost
    return b"[" + b",".join(out) + b"]"


async def _nats_error(err: Exception) -> None:
    log.warning("NATS: %s: %s", type(err).__name__, err)


class Hub:
    """Stateless: any number run at once against one stream and one database. A batch is committed to PostgreSQL
    before any of its messages is acknowledged, so a replica killed mid-batch loses nothing (the messages come
    again after `ack_wait_s`) and duplicates nothing (events are stored once by id)."""

    def __init__(self, cfg: HubConfig) -> None:
        self.cfg = cfg
        self.stats = HubStats()
        self._db: psycopg.Connection[Any] | None = None
        self._notice_db: psycopg.Connection[Any] | None = None  # its own: the batch's thread holds the other
        self._notice_lock = threading.Lock()
        self._nc: Client | None = None
        self._fetch_ok_at: float | None = None  # monotonic: the last fetch the cluster answered
        self._db_failed_at: float | None = None  # monotonic: PostgreSQL's last refusal, until a write succeeds
        self._statuses: dict[str, tuple[int, str]] = {}  # site -> (at_ns, body) not yet stored: the latest only

    def _conn(self) -> psycopg.Connection[Any]:
        if self._db is None or self._db.closed or self._db.broken:
            self._db = psycopg.connect(self.cfg.dsn, autocommit=True, **_PG_OPTS)
            migrate(self._db)
        return self._db

    def health(self) -> tuple[bool, dict[str, Any]]:
        """(healthy, figures) for the replica's /healthz: connected to the cluster, the consumer's fetch loop
        running (a fetch returned, with or without events, within the last 10 s), no write refused by PostgreSQL
        in the last 30 s."""
        now = time.monotonic()
        connected = self._nc is not None and self._nc.is_connected
        fetch_age = None if self._fetch_ok_at is None else round(now - self._fetch_ok_at, 1)
        problems = []
        if not connected:
            problems.append("not connected to the NATS cluster")
        if fetch_age is None or fetch_age > 10.0:
            problems.append("the shared consumer is not fetching")
        # a refusal counts while recent: a replica that handed its failed batch back may get no other for long
        db_ok = self._db_failed_at is None or now - self._db_failed_at > 30.0
        if not db_ok:
            problems.append("PostgreSQL refused a write in the last 30 s")
        figures = {
            "nats_connected": connected,
            "last_fetch_s_ago": fetch_age,
            "database_ok": db_ok,
            "problems": problems,
            **vars(self.stats),
        }
        return not problems, figures

    async def _connect(self, stop: asyncio.Event) -> Client | None:
        """The cluster, retried (each try bounded: nats-py retries a first connect without end) and said once per
        outage; None when stopped meanwhile."""
        backoff, said = 0.5, False
        while not stop.is_set():
            try:
                async with asyncio.timeout(15.0):
                    return await nats.connect(
                        servers=self.cfg.servers,
                        max_reconnect_attempts=-1,
                        reconnect_time_wait=0.5,
                        error_cb=_nats_error,  # one line, not nats-py's traceback for each refused reconnect
                        user=self.cfg.user,
                        password=self.cfg.password,
                        tls=self.cfg.tls,
                    )
            except (nats.errors.Error, OSError) as err:  # TimeoutError is an OSError
                if not said:
                    log.warning("NATS cluster %s not reachable (%s); retrying", self.cfg.servers, err or type(err))
                    said = True
                await asyncio.sleep(backoff)
                backoff = min(2 * backoff, 10.0)
        return None

    async def run(self, stop: asyncio.Event | None = None) -> None:
        stop = stop or asyncio.Event()
        try:  # the schema at start, so the web API of a hub no site has reached yet finds its tables
            await asyncio.to_thread(self._conn)
        except psycopg.Error as err:
            self._db_failed_at = time.monotonic()
            log.warning("PostgreSQL not reachable at start (%s); retried with the first batch", err)
        nc = await self._connect(stop)
        if nc is None:
            return
        self._nc = nc
        try:
            await nc.subscribe(self.cfg.status_subject, queue="hub-status", cb=self._on_status)
            await nc.subscribe(self.cfg.notices_subject, queue="hub-notices", cb=self._on_notices)
            js = nc.jetstream()
            sub = await self._subscribe(js, stop)
            if sub is None:
                return
            backoff = 0.5
            while not stop.is_set():
                if self._statuses:
                    await self._flush_statuses()
                try:
                    msgs = await sub.fetch(self.cfg.batch, timeout=1.0)
                except (nats.errors.TimeoutError, TimeoutError):  # nats-py raises either when nothing came
                    self._fetch_ok_at = time.monotonic()
                    continue
                except nats.errors.Error as err:
                    log.warning("fetching from %s: %s; retrying", self.cfg.stream, err)
                    await asyncio.sleep(backoff)
                    continue
                self._fetch_ok_at = time.monotonic()
                try:
                    await asyncio.to_thread(self._store, msgs)
                    backoff = 0.5
                    self._db_failed_at = None
                except psycopg.Error as err:
                    # nothing acknowledged: the batch comes again (to this replica or another) once it is back
                    self._db_failed_at = time.monotonic()
                    self.stats.db_failures += 1
                    log.warning("PostgreSQL: %s; %d events wait in the stream", err, len(msgs))
                    for m in msgs:  # back to the stream at once (for any replica), not after ack_wait
                        await m.nak(delay=backoff)
                    await asyncio.sleep(backoff)
                    backoff = min(2 * backoff, 10.0)
                    continue
                for m in msgs:
                    await m.ack()
        finally:
            await nc.close()
            for db in (self._db, self._notice_db):
                if db is not None:
                    db.close()

    async def _subscribe(self, js: Any, stop: asyncio.Event) -> Any:
        """The stream (created when missing) and the shared durable consumer; retried while the cluster cannot
        answer (no meta leader for a few seconds after a node is lost). None when stopped meanwhile."""
        backoff = 0.5
        while not stop.is_set():
            try:
                await ensure_stream(js, self.cfg)
                return await js.pull_subscribe(
                    self.cfg.subjects[0] if len(self.cfg.subjects) == 1 else ">",
                    durable=self.cfg.durable,
                    stream=self.cfg.stream,
                    config=ConsumerConfig(ack_wait=self.cfg.ack_wait_s, max_ack_pending=10 * self.cfg.batch),
                )
            except nats.errors.Error as err:
                log.warning("stream %s not ready (%s: %s); retrying", self.cfg.stream, type(err).__name__, err)
                await asyncio.sleep(backoff)
                backoff = min(2 * backoff, 10.0)
        return None

    async def _on_status(self, msg: Any) -> None:
        try:
            site, at_ns, body = parse_status(msg.data, msg.subject)
        except BadEvent as err:
            self.stats.rejected += 1
            log.error("rejected: %s", err)
            return
        if site not in self._statuses or self._statuses[site][0] <= at_ns:
            self._statuses[site] = (at_ns, json.dumps(body, ensure_ascii=False))

    async def _on_notices(self, msg: Any) -> None:
        """A site's request for its notices: those it has not confirmed (none while the database is away: the
        site asks again with its next status)."""
        site = msg.subject.split(".")[-2]
        try:
            items = await asyncio.to_thread(self._pending_notices, site)
        except psycopg.Error as err:
            log.warning("PostgreSQL: %s; %s's notices not sent this time", err, site)
            return
        assert self._nc is not None
        await msg.respond(fit_notices(items, self._nc.max_payload - _REPLY_HEADROOM))

    def _pending_notices(self, site: str) -> list[dict[str, Any]]:
        with self._notice_lock:  # worker threads, one request at a time on the connection
            if self._notice_db is None or self._notice_db.closed or self._notice_db.broken:
                self._notice_db = psycopg.connect(self.cfg.dsn, autocommit=True, **_PG_OPTS)
            return pending_notices(self._notice_db, site)

    def _store_statuses(self, batch: dict[str, tuple[int, str]]) -> None:
        conn = self._conn()
        try:
            store_status(conn, batch)
        except _ROW_ERRORS:  # one site's status refused as data: the others stored, that one dropped, said
            for site, v in batch.items():
                try:
                    store_status(conn, {site: v})
                except _ROW_ERRORS as err:
                    self.stats.rejected += 1
                    log.error("status of %s refused by PostgreSQL: %s", site, err)
        self._db_failed_at = None

    async def _flush_statuses(self) -> None:
        batch, self._statuses = self._statuses, {}
        try:
            await asyncio.to_thread(self._store_statuses, batch)
        except psycopg.Error as err:
            self._db_failed_at = time.monotonic()
            # a status is replaced by the next within a minute: keep the newest for the next try, say it once
            self.stats.db_failures += 1
            log.warning("PostgreSQL: %s; %d site statuses not stored", err, len(batch))
            for site, v in batch.items():
                self._statuses.setdefault(site, v)

    def _store(self, msgs: list[Any]) -> None:
        """Parse and commit one fetched batch (in a worker thread: psycopg's calls block). Whatever is wrong with one
        message rejects that message (kept in rejected_events), never the batch: a message that stopped the consumer
        would be delivered again to every replica and stop each (a poison message); only a database outage raises."""
        conn = self._conn()
        good: list[Event] = []
        good_msgs: list[Any] = []
        for m in msgs:
            try:
                good.append(parse(m.data, m.subject))
                good_msgs.append(m)
            except _DATA_ERRORS as err:
                why = str(err) if isinstance(err, BadEvent) else f"{m.subject}: {type(err).__name__}: {err}"
                self._reject(conn, m, why)
        try:
            new = apply(conn, good)
        except (psycopg.Error, *_ROW_ERRORS) as err:  # an outage goes up (the batch waits), a row's is one event's
            if _outage(err):
                raise
            new = self._one_by_one(conn, good, good_msgs)
        self.stats.stored += new
        self.stats.duplicates += len(good) - new

    def _one_by_one(self, conn: psycopg.Connection[Any], good: list[Event], msgs: list[Any]) -> int:
        """The batch one event at a time (parse() catches what it knows of): the refused one kept with its reason,
        so it cannot hold up every site's events behind it."""
        new = 0
        for e, m in zip(good, msgs, strict=True):
            try:
                new += apply(conn, [e])
            except _ROW_ERRORS as err:  # (an outage is none of these: it goes up, and the batch waits)
                self._reject(conn, m, f"{e.id}: PostgreSQL refused it: {err}")
        return new

    def _reject(self, conn: psycopg.Connection[Any], m: Any, why: str) -> None:
        self.stats.rejected += 1
        log.error("rejected: %s", why)
        reject(conn, m.subject, m.data, why)
