"""Stored baselines (初始值) that excavation and formwork cumulative change is measured from."""

from __future__ import annotations

import math
import sqlite3
from dataclasses import dataclass
from typing import Any

from alerting.db import audit, tx
from telemetry import quantities
from telemetry.clock import Clock


@dataclass(frozen=True, slots=True)
class Baseline:
    """A point's baseline: the value, who set it when and why, and the reading it was taken from (if any)."""

    device: str
    quantity: str
    value: float
    set_ns: int
    set_by: str
    why: str | None
    reading_ts_ns: int | None


def _target(device: str, quantity: str) -> str:
    return f"baseline:{device}/{quantity}"


def _from_row(r: sqlite3.Row) -> Baseline:
    return Baseline(r["device"], r["quantity"], r["value"], r["set_ns"], r["set_by"], r["why"], r["reading_ts_ns"])


class Baselines:
    """The initial reading (初始值) of each excavation / formwork point that cumulative change is measured from.
    Set, shown and reset through the API, with who and when; every change audited.

    `get` is served from an in-memory cache so the evaluator can call it on every reading. The cache follows
    the writes of this instance; writes by another connection (another process) are not seen until `reload()`,
    so one process should own one instance. A write made inside a caller's outer transaction may still be rolled
    back, so until that transaction ends `get` reads the table and the cache is rebuilt afterwards.
    """

    def __init__(self, conn: sqlite3.Connection, clock: Clock) -> None:
        self.conn = conn
        self.clock = clock
        self._cache: dict[tuple[str, str], Baseline] = {}
        self._stale = False  # written inside an outer transaction whose outcome is not known yet
        self.reload()

    def reload(self) -> None:
        rows = self.conn.execute("SELECT * FROM baseline_current").fetchall()
        self._cache = {(r["device"], r["quantity"]): _from_row(r) for r in rows}
        self._stale = False

    def set(
        self,
        device: str,
        quantity: str,
        value: float,
        actor: str,
        why: str | None = None,
        reading_ts_ns: int | None = None,
    ) -> Baseline:
        """Set (or replace) the baseline of a point; returns it. The old value, if any, goes to the history."""
        if not device or not actor:
            raise ValueError("device and actor are required")
        try:
            quantities.lookup(quantity)
        except KeyError as err:
            raise ValueError(str(err.args[0])) from None
        if not math.isfinite(value):
            raise ValueError(f"a baseline must be a finite number, got {value}")
        value = float(value)  # an int from the API would read back from the REAL column as a float
        now = self.clock()
        outer = self.conn.in_transaction
        with tx(self.conn) as c:
            old = c.execute(
                "SELECT value FROM baseline_current WHERE device = ? AND quantity = ?", (device, quantity)
            ).fetchone()
            old_value: float | None = None if old is None else old["value"]
            c.execute(
                "INSERT OR REPLACE INTO baseline_current(device, quantity, value, set_ns, set_by, why, reading_ts_ns)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (device, quantity, value, now, actor, why, reading_ts_ns),
            )
            c.execute(
                "INSERT INTO baseline_history(device, quantity, action, at_ns, actor, why, old, new, reading_ts_ns)"
                " VALUES (?, ?, 'set', ?, ?, ?, ?, ?, ?)",
                (device, quantity, now, actor, why, old_value, value, reading_ts_ns),
            )
            detail: dict[str, Any] = {"old": old_value, "new": value, "reading_ts_ns": reading_ts_ns}
            audit(c, now, actor, "baseline.set", _target(device, quantity), why, detail)
        b = Baseline(device, quantity, value, now, actor, why, reading_ts_ns)
        self._after_write(outer, (device, quantity), b)
        return b

    def get(self, device: str, quantity: str) -> Baseline | None:
        if self._stale:
            if self.conn.in_transaction:
                r = self.conn.execute(
                    "SELECT * FROM baseline_current WHERE device = ? AND quantity = ?", (device, quantity)
                ).fetchone()
                return None if r is None else _from_row(r)
            self.reload()
        return self._cache.get((device, quantity))

    def reset(self, device: str, quantity: str, actor: str, why: str) -> None:
        """Remove a point's baseline; cumulative rules then wait for a new one. A reason is required because a
        reset re-zeroes the cumulative change the alarms are judged on. KeyError if the point has none."""
        if not why or not why.strip():
            raise ValueError("resetting a baseline needs a reason (why)")
        if not actor:
            raise ValueError("actor is required")
        now = self.clock()
        outer = self.conn.in_transaction
        with tx(self.conn) as c:
            old = c.execute(
                "SELECT value FROM baseline_current WHERE device = ? AND quantity = ?", (device, quantity)
            ).fetchone()
            if old is None:
                raise KeyError(f"no baseline for {device}/{quantity}")
            c.execute("DELETE FROM baseline_current WHERE device = ? AND quantity = ?", (device, quantity))
            c.execute(
                "INSERT INTO baseline_history(device, quantity, action, at_ns, actor, why, old, new, reading_ts_ns)"
                " VALUES (?, ?, 'reset', ?, ?, ?, ?, NULL, NULL)",
                (device, quantity, now, actor, why, old["value"]),
            )
            audit(c, now, actor, "baseline.reset", _target(device, quantity), why, {"old": old["value"]})
        self._after_write(outer, (device, quantity), None)

    def _after_write(self, outer: bool, key: tuple[str, str], b: Baseline | None) -> None:
        if outer:
            self._stale = True
        elif b is None:
            self._cache.pop(key, None)
        else:
            self._cache[key] = b

    def all(self) -> list[Baseline]:
        """Every baseline, by device then quantity."""
        if self._stale and self.conn.in_transaction:
            found = [_from_row(r) for r in self.conn.execute("SELECT * FROM baseline_current").fetchall()]
        else:
            if self._stale:
                self.reload()
            found = list(self._cache.values())
        return sorted(found, key=lambda b: (b.device, b.quantity))

    def history(self, device: str, quantity: str) -> list[dict[str, Any]]:
        """Every set and reset of a point, oldest first: action, at_ns, actor, why, old, new, reading_ts_ns."""
        rows = self.conn.execute(
            "SELECT action, at_ns, actor, why, old, new, reading_ts_ns FROM baseline_history"
            " WHERE device = ? AND quantity = ? ORDER BY id",
            (device, quantity),
        ).fetchall()
        return [dict(r) for r in rows]
