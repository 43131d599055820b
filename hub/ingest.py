"""Site events into PostgreSQL: each stored once by its id, the alarm state moved only by a newer event of its site."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import psycopg


class BadEvent(ValueError):
    """An event the hub cannot store (not JSON, a field missing or of the wrong type); the message says which."""


@dataclass(frozen=True, slots=True)
class Event:
    id: str
    site: str
    epoch: str
    seq: int
    kind: str
    at_ns: int
    data: dict[str, Any]


def parse(raw: bytes, subject: str) -> Event:
    """A site's event as the uplink sends it (gateway/uplink.py, alerting/uplink.py); the site in the id, the body
    and the subject must agree, so a site cannot speak for another even where the broker lets it publish."""
    doc = _load(raw, subject, "event")
    try:
        eid, site, seq, kind, at_ns, data = doc["id"], doc["site"], doc["seq"], doc["kind"], doc["at_ns"], doc["data"]
    except (KeyError, TypeError) as err:
        raise BadEvent(f"{subject}: not a site event ({type(err).__name__}: {err})") from None
    if not (isinstance(eid, str) and isinstance(site, str) and isinstance(kind, str) and isinstance(data, dict)):
        raise BadEvent(f"{subject}: id, site and kind must be strings and data an object")
    if not (_bigint(seq) and _bigint(at_ns)):
        raise BadEvent(f"{subject} {eid}: seq and at_ns must be 64-bit integers")
    if len(eid) > _ID_MAX or len(site) > _SITE_MAX or len(kind) > _SITE_MAX:
        # PostgreSQL refuses an index entry over ~2.7 kB (the id is the key): refused here, it is this event's fault
        raise BadEvent(f"{subject} {eid[:80]}: id, site or kind too long ({len(eid)}, {len(site)}, {len(kind)})")
    parts = eid.split(":")
    if len(parts) != 3 or parts[0] != site or parts[2] != str(seq):
        raise BadEvent(f"{subject} {eid}: the id is not <site>:<epoch>:<seq> of site {site!r}, seq {seq}")
    if subject.split(".")[-2:-1] != [site]:
        raise BadEvent(f"{subject} {eid}: published under another site's subject")
    if kind.startswith("alarm."):
        missing = [k for k, t in _ALARM_FIELDS.items() if not _is(data.get(k), t)]
        if not missing and not (_bigint(data["alarm_id"]) and -(2**31) <= data["level"] < 2**31):
            missing = ["alarm_id / level (out of range)"]
        if missing:
            raise BadEvent(f"{subject} {eid}: alarm event without a valid {', '.join(missing)}")
    elif kind.startswith("notice."):
        if not _bigint(data.get("notice_id")):
            raise BadEvent(f"{subject} {eid}: notice event without an integer notice_id")
    elif kind.startswith("hazard."):
        rec = data.get("record")
        if not _is(data.get("hazard_id"), int) or not isinstance(rec, dict):
            raise BadEvent(f"{subject} {eid}: hazard event without a valid hazard_id and record")
        missing = [k for k, t in _HAZARD_FIELDS.items() if not _is(rec.get(k), t)]
        ints = [data["hazard_id"], *(rec.get(k) for k in ("listing_due_ns", "report_due_ns", "reported_at_ns",
                                                           "found_at_ns"))]  # fmt: skip
        if not missing and not all(v is None or _bigint(v) for v in ints):
            missing = ["hazard_id / clock (out of range)"]
        if missing:
            raise BadEvent(f"{subject} {eid}: hazard record without a valid {', '.join(missing)}")
    return Event(eid, site, parts[1], seq, kind, at_ns, data)


_SITE_MAX = 64  # a site id (gateway/config/sections.py _ID), and an event's kind
_ID_MAX = 256  # <site>:<epoch>:<seq>, the epoch 16 hex digits (alerting/schema.py uplink_meta)


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")  # Python reads NaN and Infinity; jsonb refuses them


def _bigint(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and -(2**63) <= v < 2**63


def _is(v: Any, t: type | tuple[type, ...]) -> bool:
    # JSON's true is a Python int: as a level or a value PostgreSQL refuses it (a boolean is no integer there)
    return isinstance(v, t) and not isinstance(v, bool)


MAX_DEPTH = 32  # a site's event is 3 deep (a hazard's record in data); deeper is no site's, and costs the hub stack


def _load(raw: bytes, subject: str, what: str) -> dict[str, Any]:
    """The JSON object of a message, or BadEvent: what PostgreSQL would refuse is refused here, with the reason
    (refused there, it would come back as a database error and hold up every site's events behind it), and so is
    what would stop the consumer (nesting beyond Python's stack: RecursionError, which is no ValueError)."""
    try:
        doc = json.loads(raw, parse_constant=_no_constant)
    except (ValueError, RecursionError) as err:  # (UnicodeDecodeError is a ValueError)
        raise BadEvent(f"{subject}: not a site {what} ({type(err).__name__}: {err})") from None
    if not isinstance(doc, dict):
        raise BadEvent(f"{subject}: not a site {what} (not a JSON object)")
    why = _unstorable(doc)
    if why:
        raise BadEvent(f"{subject}: {why}")
    return doc


def _unstorable(doc: Any) -> str | None:
    """Why PostgreSQL could not take the document (None: it can), walked without recursion."""
    todo: list[tuple[Any, int]] = [(doc, 1)]
    while todo:
        v, depth = todo.pop()
        if isinstance(v, str):
            if "\x00" in v:
                return "a string holds a NUL character (PostgreSQL's text and jsonb cannot)"
            if not v.isascii():
                try:
                    v.encode("utf-8")
                except UnicodeEncodeError:  # "\ud800" is valid JSON, a lone surrogate no UTF-8 text can hold
                    return "a string holds a lone surrogate (not UTF-8 text)"
        elif isinstance(v, dict | list):
            if depth > MAX_DEPTH:
                return f"nested deeper than {MAX_DEPTH} levels"
            items = [*v.keys(), *v.values()] if isinstance(v, dict) else v
            todo.extend((x, depth + 1) for x in items)
    return None


_OPT_INT = (int, type(None))
_HAZARD_FIELDS: dict[str, type | tuple[type, ...]] = {
    "status": str,
    "klass": (str, type(None)),
    "listing": str,
    "listing_due_ns": _OPT_INT,
    "report_due_ns": _OPT_INT,
    "reported_at_ns": _OPT_INT,
    "found_at_ns": int,
    "unit_name": str,
    "description": str,
}


_ALARM_FIELDS: dict[str, type | tuple[type, ...]] = {
    "alarm_id": int,
    "rule": str,
    "device": str,
    "quantity": str,
    "state": str,
    "level": int,
    "source": str,
    "value": (int, float, type(None)),
    "threshold": (int, float, type(None)),
}


def parse_status(raw: bytes, subject: str) -> tuple[str, int, dict[str, Any]]:
    """A site's status (gateway/uplink.py): (site, at_ns, body); the subject's site and the body's must agree."""
    doc = _load(raw, subject, "status")  # refused here: refused by PostgreSQL, it would hold up every site's status
    site: Any = doc.get("site")
    at_ns: Any = doc.get("at_ns")
    if not isinstance(site, str) or not _bigint(at_ns):
        raise BadEvent(f"{subject}: a status needs a string site and a 64-bit integer at_ns")
    if len(site) > _SITE_MAX:  # (the statuses are stored together: one PostgreSQL refuses holds up every site's)
        raise BadEvent(f"{subject}: a site id of {len(site)} characters (at most {_SITE_MAX})")
    if subject.split(".")[-2:-1] != [site]:
        raise BadEvent(f"{subject}: status of {site!r} published under another site's subject")
    if not isinstance(doc.get("devices", {}), dict):
        raise BadEvent(f"{subject}: devices must be an object")
    return site, at_ns, doc


def store_status(conn: psycopg.Connection[Any], statuses: dict[str, tuple[int, str]]) -> None:
    """The latest status of each site; an older one (by the site's clock) than what is stored changes nothing,
    unless what is stored is from the future (a site clock that ran ahead and was set right)."""
    with conn.transaction():
        conn.cursor().executemany(
            "INSERT INTO site_status AS s (site, at_ns, body) VALUES (%s, %s, %s)"
            " ON CONFLICT (site) DO UPDATE SET at_ns = excluded.at_ns, body = excluded.body, received_at = now()"
            # a status stored from a site clock that ran ahead (beyond the hub's clock) does not block the next
            " WHERE s.at_ns <= excluded.at_ns OR s.at_ns > (extract(epoch FROM now()) * 1e9)::bigint + 60000000000",
            [(site, at_ns, body) for site, (at_ns, body) in statuses.items()],
        )


def pending_notices(conn: psycopg.Connection[Any], site: str) -> list[dict[str, Any]]:
    """The notices a site has not confirmed, oldest first, as the site's uplink takes them (alerting/notices.py)."""
    rows = conn.execute(
        "SELECT id, (extract(epoch FROM created_at) * 1e9)::bigint, sent_by, text, hazard_id, due FROM notices"
        " WHERE site = %s AND received_at_ns IS NULL ORDER BY id",
        (site,),
    ).fetchall()
    return [
        {"id": i, "sent_ns": ns, "sent_by": by, "text": t, "hazard_id": h, "due": d.isoformat() if d else None}
        for i, ns, by, t, h, d in rows
    ]


def _clean(text: str) -> str:
    # text columns hold neither NUL nor a lone surrogate (which a reason may quote); the raw bytes keep both
    return text.replace("\x00", "\\0").encode("utf-8", "backslashreplace").decode("utf-8")


def reject(conn: psycopg.Connection[Any], subject: str, raw: bytes, why: str) -> None:
    """Keep an event the hub cannot store, with the reason (dead letters: counted, never silently dropped)."""
    with conn.transaction():
        conn.execute(
            "INSERT INTO rejected_events (subject, raw, reason) VALUES (%s, %s, %s)",
            (_clean(subject), raw, _clean(why)),
        )


def apply(conn: psycopg.Connection[Any], events: list[Event]) -> int:
    """Store a batch in one transaction; the number of events new to the hub. A redelivered event (the same id)
    changes nothing: exactly-once state from at-least-once delivery. One statement stores the batch's events and
    returns the ids new to the hub; the projections of those go in one pipelined executemany each (row-by-row
    statements cost the hub a round trip per event, 282 CPU-ms per 1 000 events in bench/hub.py)."""
    if not events:
        return 0
    with conn.transaction():
        cur = conn.cursor()
        cur.execute(
            "INSERT INTO events (id, site, epoch, seq, kind, at_ns, data) SELECT * FROM unnest("
            "%s::text[], %s::text[], %s::text[], %s::bigint[], %s::text[], %s::bigint[], %s::jsonb[])"
            " ON CONFLICT (id) DO NOTHING RETURNING id",
            (
                [e.id for e in events],
                [e.site for e in events],
                [e.epoch for e in events],
                [e.seq for e in events],
                [e.kind for e in events],
                [e.at_ns for e in events],
                [json.dumps(e.data, ensure_ascii=False) for e in events],
            ),
        )
        fresh = {r[0] for r in cur.fetchall()}
        new: list[Event] = []
        for e in events:  # in the batch's order; an id twice in one batch counts once
            if e.id in fresh:
                fresh.discard(e.id)
                new.append(e)
        alarms = [_alarm_row(e) for e in new if e.kind.startswith("alarm.")]
        if alarms:
            cur.executemany(_ALARM_UPSERT, alarms)
        hazards = [_hazard_row(e) for e in new if e.kind.startswith("hazard.")]
        if hazards:
            cur.executemany(_HAZARD_UPSERT, hazards)
        received = [(e.at_ns, e.data["notice_id"], e.site) for e in new if e.kind == "notice.received"]
        if received:  # a notice of another site is not this site's to confirm: the site column guards it
            cur.executemany(
                "UPDATE notices SET received_at_ns = COALESCE(received_at_ns, %s) WHERE id = %s AND site = %s",
                received,
            )
        acked = [
            (e.at_ns, str(e.data.get("by") or ""), str(e.data.get("note") or ""), e.data["notice_id"], e.site)
            for e in new
            if e.kind == "notice.acked"
        ]
        if acked:
            cur.executemany(
                "UPDATE notices SET acked_at_ns = %s, acked_by = %s, ack_note = %s,"
                " received_at_ns = COALESCE(received_at_ns, %s) WHERE id = %s AND site = %s",
                [(a, b, c, a, d, e) for a, b, c, d, e in acked],
            )
    return len(new)


_HAZARD_UPSERT = """
        INSERT INTO site_hazards AS h (site, epoch, hazard_id, status, klass, listing, listing_due_ns, report_due_ns,
                                       reported_at_ns, found_at_ns, unit_name, description, record, changed_at_ns,
                                       last_seq)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
        ON CONFLICT (site, epoch, hazard_id) DO UPDATE SET
            status = excluded.status, klass = excluded.klass, listing = excluded.listing,
            listing_due_ns = excluded.listing_due_ns, report_due_ns = excluded.report_due_ns,
            reported_at_ns = excluded.reported_at_ns, record = excluded.record,
            changed_at_ns = excluded.changed_at_ns, last_seq = excluded.last_seq
        WHERE h.last_seq < excluded.last_seq
        """


def _hazard_row(ev: Event) -> tuple[Any, ...]:
    r = ev.data["record"]
    return (
        ev.site,
        ev.epoch,
        ev.data["hazard_id"],
        r["status"],
        r["klass"],
        r["listing"],
        r["listing_due_ns"],
        r["report_due_ns"],
        r["reported_at_ns"],
        r["found_at_ns"],
        r["unit_name"],
        r["description"],
        json.dumps(r, ensure_ascii=False, default=str),
        ev.at_ns,
        ev.seq,
    )


_ALARM_UPSERT = """
        INSERT INTO site_alarms AS a (site, epoch, alarm_id, rule, device, quantity, state, level, value, threshold,
                                      source, changed_at_ns, last_seq)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
        ON CONFLICT (site, epoch, alarm_id) DO UPDATE SET
            state = excluded.state, level = excluded.level, value = excluded.value, threshold = excluded.threshold,
            source = excluded.source, changed_at_ns = excluded.changed_at_ns, last_seq = excluded.last_seq
        WHERE a.last_seq < excluded.last_seq
        """


def _alarm_row(ev: Event) -> tuple[Any, ...]:
    d = ev.data
    return (
        ev.site,
        ev.epoch,
        d["alarm_id"],
        d["rule"],
        d["device"],
        d["quantity"],
        d["state"],
        d["level"],
        d.get("value"),
        d.get("threshold"),
        d["source"],
        ev.at_ns,
        ev.seq,
    )
