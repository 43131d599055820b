"""Stage 3, delivery: a group's queued messages go out as one digest, retried with backoff; every attempt logged."""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable, Mapping
from typing import Any

from alerting.config import EscalationConfig
from alerting.db import tx
from alerting.escalation.roster import Roster
from alerting.messages import digest
from alerting.notifiers import Message, Notifier, Refusal
from telemetry.clock import Clock

log = logging.getLogger("sitegw.escalation")


class Delivery:
    """Rows of esc_deliveries and the attempts to send them. At-least-once for the one message in flight at a crash
    (it carries a stable idempotency key); everything else exactly once."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        cfg: EscalationConfig,
        notifiers: Mapping[str, Notifier],
        roster: Roster,
        clock: Clock,
        on_delivery: Callable[[str, str], None] | None,
        site_id: str = "",
    ) -> None:
        self.conn = conn
        self.cfg = cfg
        self.notifiers = notifiers
        self.roster = roster
        self.clock = clock
        self.on_delivery = on_delivery  # (channel, status) for metrics
        self.window_ns = int(cfg.group_window_s * 1e9)
        # a message's key (X-SiteGW-Key, the email's Message-ID) must not repeat across gateways nor across a state
        # file recreated (RFC 5322 §3.6.4): the site, the state file's random epoch (made once, with the file), the row
        epoch = conn.execute("SELECT v FROM uplink_meta WHERE k = 'epoch'").fetchone()[0]
        self.key_prefix = f"sitegw:{site_id or 'site'}:{epoch}"

    def recover(self) -> None:
        """A crash while sending, or an outcome that could not be written: we cannot know whether it went out, so
        send it again (same key)."""
        with tx(self.conn):
            cur = self.conn.execute(
                "UPDATE esc_deliveries SET status = 'retry', next_try_ns = 0 WHERE status = 'sending'"
            )
        if cur.rowcount:
            log.warning("%d delivery(ies) whose outcome was never written: sent again under their key", cur.rowcount)

    def grouping(self, group_key: str, now: int) -> bool:
        """Whether a group was sent to within the window: its queued messages wait and go out as one digest. Only
        deliveries stamped up to now count: after the clock was set back, one stamped by the clock that ran ahead
        held every later message to the group until the clock caught up with it (a day, for a day's correction)."""
        last = self.conn.execute(
            "SELECT MAX(created_ns) FROM esc_deliveries WHERE group_key = ? AND created_ns <= ?", (group_key, now)
        ).fetchone()[0]
        return last is not None and last <= now < last + self.window_ns

    def open(self, group_key: str, rows: list[sqlite3.Row], now: int) -> int:
        """One delivery for a group's queued rows (in the caller's transaction, which marks the rows sent)."""
        items = [(r["level"], r["subject"], r["text"], json.loads(r["data"])) for r in rows]
        level, subject, text, data = digest(items)
        cur = self.conn.execute(
            "INSERT INTO esc_deliveries(channel, group_key, recipients, key, level, subject, text, data, items,"
            " status, attempts, created_ns) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'retry', 0, ?)",
            (rows[0]["channel"], group_key, rows[0]["recipients"], f"{self.key_prefix}:{rows[0]['id']}",
             level, subject, text, json.dumps(data, ensure_ascii=False), len(rows), now),
        )  # fmt: skip
        assert cur.lastrowid is not None
        return cur.lastrowid

    def due_retries(self, now: int) -> list[int]:
        # no backoff is longer than retry_max_s: a retry planned later than that was planned by a clock since set
        # back, and would wait for the clock to come back to it
        cap = now + int(self.cfg.retry_max_s * 1e9)
        if self.conn.execute(
            "SELECT 1 FROM esc_deliveries WHERE status = 'retry' AND next_try_ns > ? LIMIT 1", (cap,)
        ).fetchone():
            with tx(self.conn):
                n = self.conn.execute(
                    "UPDATE esc_deliveries SET next_try_ns = ? WHERE status = 'retry' AND next_try_ns > ?", (cap, cap)
                ).rowcount
            log.warning(
                "the clock was set back: %d retry(ies) planned by it moved to %s s from now", n, self.cfg.retry_max_s
            )
        rows = self.conn.execute(
            "SELECT id FROM esc_deliveries WHERE status = 'retry' AND COALESCE(next_try_ns, 0) <= ?", (now,)
        ).fetchall()
        return [r["id"] for r in rows]

    def next_due(self, now: int | None = None) -> int | None:
        """The earliest retry, or the end of the earliest window a queued message waits for (as `grouping`)."""
        now = self.clock() if now is None else now
        got = self.conn.execute(
            "SELECT MIN(t) FROM (SELECT MIN(next_try_ns) t FROM esc_deliveries WHERE status = 'retry'"
            " UNION ALL SELECT MIN((SELECT MAX(d.created_ns) FROM esc_deliveries d WHERE d.group_key = o.group_key"
            " AND d.created_ns <= ?)) + ? FROM esc_outbox o WHERE o.status = 'queued')",
            (now, self.window_ns),
        ).fetchone()[0]
        return None if got is None else int(got)

    def start(self, delivery_id: int) -> sqlite3.Row:
        """Mark a delivery as being sent (in the caller's transaction, committed before `send`): a crash from here
        on sends it again at the next start (`recover`), under the same key."""
        with tx(self.conn):
            self.conn.execute(
                "UPDATE esc_deliveries SET status = 'sending', attempts = attempts + 1 WHERE id = ?", (delivery_id,)
            )
            row: sqlite3.Row = self.conn.execute("SELECT * FROM esc_deliveries WHERE id = ?", (delivery_id,)).fetchone()
        return row

    async def send(self, d: sqlite3.Row) -> None:
        """One attempt at a started delivery; its outcome (sent, retry at, failed) is committed after it."""
        delivery_id = d["id"]
        n = self.notifiers.get(d["channel"])
        attempts = d["attempts"]
        refused: tuple[Refusal, ...] = ()
        if n is None:
            ok, retryable, detail = False, False, f"channel {d['channel']!r} is not configured"
        else:
            people = [self.roster.people[p] for p in json.loads(d["recipients"]) if p in self.roster.people]
            msg = Message(d["key"], d["level"], d["subject"], d["text"], json.loads(d["data"]))
            try:
                res = await n.send(msg, people)
                ok, retryable, detail = res.ok, res.retryable, res.detail
                refused = res.refused if ok else ()
            except Exception as err:  # a notifier bug must not stop escalation of other alarms
                log.exception("channel %s: unexpected error", d["channel"])
                ok, retryable, detail = False, True, f"{type(err).__name__}"
        now = self.clock()
        backoff = now + int(min(self.cfg.retry_max_s, self.cfg.retry_base_s * 2 ** (attempts - 1)) * 1e9)
        if ok and refused:
            status, nxt = "partial", None
        elif ok:
            status, nxt = "sent", None
        elif retryable and attempts < self.cfg.max_attempts:
            status, nxt = "retry", backoff
        else:
            status, nxt = "failed", None
        with tx(self.conn):
            if status == "partial":
                detail = self._resend(d, refused, detail, backoff)
            self.conn.execute(
                "UPDATE esc_deliveries SET status = ?, next_try_ns = ?, sent_ns = ?, last_error = ? WHERE id = ?",
                (status, nxt, now if ok else None, None if status == "sent" else detail, delivery_id),
            )
        if status == "failed":
            log.error("delivery %s on %s failed after %d attempt(s): %s", delivery_id, d["channel"], attempts, detail)
        elif status == "retry":
            log.warning("delivery %s on %s: %s; retrying", delivery_id, d["channel"], detail)
        elif status == "partial":
            log.warning("delivery %s on %s reached only some of its recipients: %s", delivery_id, d["channel"], detail)
        if self.on_delivery:
            self.on_delivery(d["channel"], status)

    def _resend(self, d: sqlite3.Row, refused: tuple[Refusal, ...], detail: str, at_ns: int) -> str:
        """A message the server took for some and refused for others: those it refused for now (4xx, RFC 5321
        §4.2.1) get it again, as a delivery of their own under the same backoff and attempt count; a 5xx is final
        for that person. In the caller's transaction; returns the detail to keep, saying what became of each."""
        again = sorted({p for r in refused if r.transient for p in r.people})
        if not again:
            return f"{detail}; not retried (refused for good)"
        if d["attempts"] >= self.cfg.max_attempts:
            return f"{detail}; not retried for {', '.join(again)}: {d['attempts']} attempt(s) made"
        cur = self.conn.execute(
            "INSERT INTO esc_deliveries(channel, group_key, recipients, key, level, subject, text, data, items, status,"
            " attempts, created_ns, next_try_ns, resend_of) SELECT channel, group_key, ?, key || '.' || attempts,"
            " level, subject, text, data, items, 'retry', attempts, created_ns, ?, COALESCE(resend_of, id)"
            " FROM esc_deliveries WHERE id = ?",
            (json.dumps(again), at_ns, d["id"]),
        )  # created_ns of the message it resends: its group's window is not reopened
        return f"{detail}; retrying to {', '.join(again)} as delivery {cur.lastrowid}"

    def listing(self, alarm_id: int | None = None, limit: int = 500) -> list[dict[str, Any]]:
        if alarm_id is None:
            rows = self.conn.execute("SELECT * FROM esc_deliveries ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        else:
            rows = self.conn.execute(
                "WITH mine AS (SELECT delivery_id FROM esc_outbox WHERE alarm_id = ?) SELECT * FROM esc_deliveries"
                " WHERE id IN mine OR resend_of IN mine ORDER BY id DESC LIMIT ?",
                (alarm_id, limit),
            ).fetchall()
        out = []
        for r in rows:
            x = dict(r)
            x["recipients"] = json.loads(x["recipients"])
            x.pop("data", None)
            out.append(x)
        return out
