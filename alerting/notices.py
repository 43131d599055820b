"""Supervision notices (督办通知) from the regional hub: kept once by the hub's id, acknowledged by a manager."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

from alerting.db import audit, tx
from alerting.roles import Role, require
from telemetry.clock import Clock

# run inside the transaction of each receipt and acknowledgement: (connection, kind, at_ns, body); the uplink
# outbox reports them to the hub in that same transaction
NoticeHook = Callable[[sqlite3.Connection, str, int, dict[str, Any]], None]


class NoticeError(ValueError):
    """A refused notice operation; the message says why."""


def _malformed(n: Any) -> str | None:
    """Why a notice from the hub cannot be kept, or None: each field of the type its column takes."""
    if not isinstance(n, dict):
        return "a notice is an object"
    if not isinstance(n.get("id"), int) or not isinstance(n.get("text"), str) or not n["text"].strip():
        return "a notice needs an integer id and a text"
    for key, kinds in (("sent_ns", (int, type(None))), ("hazard_id", (int, type(None))), ("due", (str, type(None)))):
        if not isinstance(n.get(key), kinds):
            return f"a notice's {key} is of the wrong type"
    return None


class Notices:
    def __init__(self, conn: sqlite3.Connection, clock: Clock, hook: NoticeHook | None = None) -> None:
        self.conn = conn
        self.clock = clock
        self.hook = hook

    def receive(self, items: list[dict[str, Any]]) -> tuple[list[int], list[str]]:
        """Store the notices the hub sent that are new here: (their ids, what was wrong with the ones that could
        not be kept). One the site has is skipped (the hub sends a notice until it hears of the receipt), so a
        resend changes nothing; a malformed one does not hold back the others."""
        new: list[int] = []
        bad: list[str] = []
        for n in items:
            why = _malformed(n)
            if why is not None:
                bad.append(f"{why}: {str(n)[:200]}")
                continue
            nid, text = n["id"], n["text"]
            with tx(self.conn):
                if self.conn.execute("SELECT 1 FROM notices WHERE id = ?", (nid,)).fetchone():
                    continue
                now = self.clock()
                self.conn.execute(
                    "INSERT INTO notices (id, sent_ns, sent_by, text, hazard_id, due, received_ns)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (nid, n.get("sent_ns") or 0, str(n.get("sent_by") or "?"), text, n.get("hazard_id"),
                     n.get("due"), now),
                )  # fmt: skip
                audit(self.conn, now, "hub", "notice.received", f"notice:{nid}", None, {"by": n.get("sent_by")})
                if self.hook is not None:
                    self.hook(self.conn, "notice.received", now, {"notice_id": nid})
            new.append(nid)
        return new, bad

    def ack(self, notice_id: int, *, actor: str, role: Role, note: str) -> None:
        """The site's answer: read and in hand (签收), with what it is doing about it."""
        require(role, Role.MANAGER, "notice acknowledgement")
        if not note.strip():
            raise NoticeError("note: say what the site does about the notice")
        with tx(self.conn):
            row = self.conn.execute("SELECT acked_ns FROM notices WHERE id = ?", (notice_id,)).fetchone()
            if row is None:
                raise NoticeError(f"no notice {notice_id}")
            if row["acked_ns"] is not None:
                raise NoticeError(f"notice {notice_id} is acknowledged already")
            now = self.clock()
            self.conn.execute(
                "UPDATE notices SET acked_ns = ?, acked_by = ?, ack_note = ? WHERE id = ?",
                (now, actor, note, notice_id),
            )
            audit(self.conn, now, actor, "notice.ack", f"notice:{notice_id}", note)
            if self.hook is not None:
                self.hook(self.conn, "notice.acked", now, {"notice_id": notice_id, "by": actor, "note": note})

    def list(self, open_only: bool = False) -> list[dict[str, Any]]:
        sql = "SELECT * FROM notices" + (" WHERE acked_ns IS NULL" if open_only else "") + " ORDER BY id DESC"
        return [dict(r) for r in self.conn.execute(sql).fetchall()]
