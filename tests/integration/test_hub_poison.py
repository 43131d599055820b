"""A hub replica (hub/consumer.py) fed messages no site should send, on a real NATS JetStream cluster and PostgreSQL:
each is kept in rejected_events with its reason, every valid event fetched with it is stored, the consumer runs on.
Once one such message stopped the consumer, again after every restart (a poison message), or stalled its batch."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import nats
import psycopg
import pytest

from hub.consumer import Hub, HubConfig, ensure_stream
from services.regional import NatsCluster, Postgres


def event(site: str, seq: int, **data: Any) -> dict[str, Any]:
    d = {"alarm_id": seq, "rule": "gas.lel", "device": "G1", "quantity": "lel", "state": "active_unacked",
         "level": 2, "value": 30.0, "threshold": 25.0, "source": "GB/T 50493-2019", **data}  # fmt: skip
    return {"id": f"{site}:e1:{seq}", "site": site, "seq": seq, "kind": "alarm.raised", "at_ns": seq, "data": d}


def surrogate(doc: dict[str, Any]) -> bytes:
    """The document with its "LONE" strings sent as the JSON escape \\ud800 (valid JSON, no UTF-8 text)."""
    return json.dumps(doc).replace('"LONE"', '"\\ud800"').encode()


def query(pg: Postgres, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(pg.dsn) as conn:
        try:
            return conn.execute(sql).fetchall()
        except psycopg.errors.UndefinedTable:
            return []


async def until(cond: Callable[[], bool], hub_task: asyncio.Task[None], what: str) -> None:
    """Polls `cond` (300 times, 0.2 s apart) until true; fails at once if the replica's consumer ended (what the
    poison did)."""
    for _ in range(300):
        if await asyncio.to_thread(cond):
            return
        if hub_task.done():
            hub_task.result()  # its exception, if any
            pytest.fail(f"the consumer ended before {what}")
        await asyncio.sleep(0.2)
    pytest.fail(f"not reached: {what}")


async def test_poison_messages_are_rejected_one_by_one_and_the_consumer_runs_on(
    cluster: NatsCluster, pg: Postgres
) -> None:
    cfg = HubConfig(cluster.urls, pg.dsn, replicas=1, ack_wait_s=2.0, batch=50)
    nc = await nats.connect(servers=cluster.urls)
    js = nc.jetstream()
    await ensure_stream(js, cfg)
    deep = json.dumps(event("B", 2)).replace('"data": {', '"deep": ' + "[" * 100_000 + "]" * 100_000 + ', "data": {')
    poison = [
        surrogate(event("B", 1, text="LONE")),  # once a UnicodeEncodeError out of psycopg: the consumer stopped
        deep.encode(),  # once a RecursionError out of json.loads: the consumer stopped
        json.dumps(event("B", 3, level=True)).encode(),  # once a DatatypeMismatch: the batch nak'd for ever
    ]
    for i, bad in enumerate(poison, start=1):  # each among valid events of another site, in one fetched batch
        await js.publish("sitegw.A.events", json.dumps(event("A", i)).encode())
        await js.publish("sitegw.B.events", bad)
    await js.publish("sitegw.A.events", json.dumps(event("A", 4)).encode())
    hub, stop = Hub(cfg), asyncio.Event()
    task = asyncio.create_task(hub.run(stop), name="hub")
    try:
        await until(lambda: len(query(pg, "SELECT id FROM events")) == 4, task, "site A's 4 events stored")
        await until(lambda: len(query(pg, "SELECT id FROM rejected_events")) == 3, task, "3 messages rejected")
        # a status no text column can hold, then a valid one of another site: stored while the consumer runs
        await nc.publish("sitegw.B.status", surrogate({"site": "B", "at_ns": 1, "health": "LONE"}))
        await nc.publish("sitegw.A.status", json.dumps({"site": "A", "at_ns": 1, "devices": {}}).encode())
        await nc.flush()
        await until(lambda: query(pg, "SELECT site FROM site_status") == [("A",)], task, "site A's status stored")
        healthy, figures = hub.health()
        assert not task.done()
    finally:
        stop.set()
        await task
        await nc.close()
    assert healthy, figures
    assert hub.stats.db_failures == 0 and hub.stats.rejected == 4
    reasons = [r[0] for r in query(pg, "SELECT reason FROM rejected_events ORDER BY id")]
    assert ["surrogate" in reasons[0], "RecursionError" in reasons[1], "level" in reasons[2]] == [True] * 3, reasons
    assert query(pg, "SELECT raw FROM rejected_events ORDER BY id")[0][0] == poison[0]  # kept as it came
    # nothing left to deliver: every message acknowledged, none to come again after a restart
    info = await _consumer_info(cfg)
    assert info == (0, 0), info


async def _consumer_info(cfg: HubConfig) -> tuple[int, int]:
    nc = await nats.connect(servers=cfg.servers)
    try:
        ci = await nc.jetstream().consumer_info(cfg.stream, cfg.durable)
        return ci.num_pending or 0, ci.num_ack_pending or 0
    finally:
        await nc.close()


class _Msg:
    def __init__(self, subject: str, data: bytes) -> None:
        self.subject, self.data = subject, data


def stored_once(pg: Postgres, msgs: list[_Msg]) -> Hub:
    """A replica (not connected to NATS) that stores one fetched batch, as its consumer does."""
    hub = Hub(HubConfig(["nats://127.0.0.1:1"], pg.dsn))
    try:
        hub._store(msgs)
    finally:
        if hub._db is not None:
            hub._db.close()
    return hub


def test_a_row_postgresql_refuses_as_mistyped_is_rejected_alone(pg: Postgres, monkeypatch: pytest.MonkeyPatch) -> None:
    """The one-by-one fallback for what parse() lets through: a DatatypeMismatch (a ProgrammingError, not the
    DataError it once caught) rejects that event; the batch is stored, no database failure counted."""
    from hub import consumer, ingest

    def lenient(raw: bytes, subject: str) -> ingest.Event:  # a parse() that misses a JSON true, as the old one did
        doc = json.loads(raw)
        ev = ingest.parse(json.dumps({**doc, "data": {**doc["data"], "level": 2}}).encode(), subject)
        return ingest.Event(ev.id, ev.site, ev.epoch, ev.seq, ev.kind, ev.at_ns, doc["data"])

    monkeypatch.setattr(consumer, "parse", lenient)
    msgs = [_Msg(f"sitegw.{s}.events", json.dumps(event(s, n, **kw)).encode())
            for s, n, kw in (("A", 1, {}), ("B", 1, {"level": True}), ("A", 2, {}))]  # fmt: skip
    hub = stored_once(pg, msgs)
    assert query(pg, "SELECT id FROM events ORDER BY id") == [("A:e1:1",), ("A:e1:2",)]
    (reason,) = query(pg, "SELECT reason FROM rejected_events")[0]
    assert reason.startswith("B:e1:1: PostgreSQL refused it") and "boolean" in reason, reason
    assert (hub.stats.stored, hub.stats.rejected) == (2, 1)


def test_a_row_over_an_index_limit_is_rejected_alone(pg: Postgres, monkeypatch: pytest.MonkeyPatch) -> None:
    """An event PostgreSQL refuses for its size (an id over btree's ~2.7 kB: ProgramLimitExceeded, an
    OperationalError) was taken for an outage: the batch came back for ever, every site's events in it. parse()
    refuses such ids now (test_hub_ingest.py); past it (its bound lifted here), the row is rejected alone."""
    import secrets

    from hub import ingest

    monkeypatch.setattr(ingest, "_ID_MAX", 1 << 20)
    bad = event("B", 1)
    bad["id"] = f"B:{secrets.token_hex(4000)}:1"  # 8 000 characters, incompressible
    msgs = [_Msg(f"sitegw.{d['site']}.events", json.dumps(d).encode()) for d in (event("A", 1), bad, event("A", 2))]
    hub = stored_once(pg, msgs)
    assert query(pg, "SELECT id FROM events ORDER BY id") == [("A:e1:1",), ("A:e1:2",)]
    assert len(query(pg, "SELECT reason FROM rejected_events")) == 1 and hub.stats.db_failures == 0


async def test_a_site_with_more_notices_than_a_reply_carries_gets_the_oldest_that_fit(
    cluster: NatsCluster, pg: Postgres
) -> None:
    """Once the hub answered with every pending notice: over max_payload the reply failed and the site's request
    timed out at every status, for good. Now the oldest that fit; the rest come once the site confirms those."""
    cfg = HubConfig(cluster.urls, pg.dsn, replicas=1)
    hub, stop = Hub(cfg), asyncio.Event()
    task = asyncio.create_task(hub.run(stop), name="hub")
    nc = await nats.connect(servers=cluster.urls)
    try:
        await until(lambda: bool(query(pg, "SELECT 1 FROM pg_tables WHERE tablename = 'notices'")), task, "schema")
        with psycopg.connect(pg.dsn) as conn:  # 600 notices of 2 000 characters (the API's most): ~3.6 MB
            conn.cursor().executemany(
                "INSERT INTO notices (site, sent_by, text) VALUES ('B', 'city', %s)",
                [(f"{i:04d}" + "限期整改" * 499,) for i in range(600)],
            )
        await until(lambda: hub._nc is not None and hub._nc.is_connected, task, "the hub connected")
        reply = await nc.request("sitegw.B.notices", b"{}", timeout=10)
    finally:
        stop.set()
        await task
        await nc.close()
    items = json.loads(reply.data)
    assert len(reply.data) <= nc.max_payload and 0 < len(items) < 600
    assert [n["text"][:4] for n in items] == [f"{i:04d}" for i in range(len(items))]  # the oldest first
