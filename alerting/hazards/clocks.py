"""Hazard clocks: the deadlines a record runs against (rectification, listed supervision, same-day report)."""

from __future__ import annotations

from alerting.db import tx
from alerting.hazards.model import ClockKind, DueClock
from alerting.hazards.store import HazardStore


class HazardClocks(HazardStore):
    """Each clock fires once when overdue (across restarts); stopping and resuming it follow the workflow."""

    # ---- clocks ---------------------------------------------------------------------------------------------

    def due_clocks(self, now_ns: int) -> list[DueClock]:
        """Every running clock, soonest first."""
        rows = self.conn.execute(
            "SELECT hazard_id, kind, due_ns FROM hazard_clock WHERE stopped_ns IS NULL ORDER BY due_ns, hazard_id"
        ).fetchall()
        return [DueClock(r["hazard_id"], r["kind"], r["due_ns"], now_ns >= r["due_ns"]) for r in rows]

    def fire_overdue(self, now_ns: int) -> list[DueClock]:
        """Clocks that are overdue and were never fired; marks them fired in the same tx (each fires once)."""
        with tx(self.conn):
            rows = self.conn.execute(
                "SELECT hazard_id, kind, due_ns FROM hazard_clock"
                " WHERE stopped_ns IS NULL AND fired_ns IS NULL AND due_ns <= ? ORDER BY due_ns, hazard_id",
                (now_ns,),
            ).fetchall()
            out = []
            for r in rows:
                hid, kind = r["hazard_id"], r["kind"]
                self.conn.execute(
                    "UPDATE hazard_clock SET fired_ns = ? WHERE hazard_id = ? AND kind = ?", (now_ns, hid, kind)
                )
                status = self.get(hid)["status"]
                self._log(hid, now_ns, "system", f"overdue:{kind}", status, status, f"{kind} overdue", None)
                out.append(DueClock(hid, kind, r["due_ns"], True))
            return out

    def _start_clock(self, hazard_id: int, kind: ClockKind, due_ns: int) -> None:
        # a new deadline is a new obligation: it may fire again even if the old one did
        self.conn.execute(
            "INSERT INTO hazard_clock(hazard_id, kind, due_ns) VALUES (?, ?, ?) ON CONFLICT(hazard_id, kind)"
            " DO UPDATE SET due_ns = excluded.due_ns, stopped_ns = NULL, fired_ns = NULL",
            (hazard_id, kind, due_ns),
        )

    def _stop_clock(self, hazard_id: int, kind: ClockKind, now: int) -> None:
        self.conn.execute(
            "UPDATE hazard_clock SET stopped_ns = ? WHERE hazard_id = ? AND kind = ? AND stopped_ns IS NULL",
            (now, hazard_id, kind),
        )

    def _resume_clock(self, hazard_id: int, kind: ClockKind) -> None:
        self.conn.execute(
            "UPDATE hazard_clock SET stopped_ns = NULL WHERE hazard_id = ? AND kind = ?", (hazard_id, kind)
        )
