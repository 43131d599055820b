"""Who is on duty for a role at an instant, in the site's time zone."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from datetime import time as dtime
from zoneinfo import ZoneInfo

from alerting.config import _DAYS, EscalationConfig
from alerting.notifiers import Person


@dataclass
class Roster:
    """The people of the escalation config and their duty windows."""

    cfg: EscalationConfig
    tz: str

    def __post_init__(self) -> None:
        self.people = {p.id: Person(p.id, p.name, p.mobile, p.email) for p in self.cfg.people}

    def on_duty(self, role: str, now_ns: int) -> list[Person]:
        t = datetime.fromtimestamp(now_ns / 1e9, ZoneInfo(self.tz))
        out: dict[str, Person] = {}
        for d in self.cfg.duty:
            if d.role == role and d.covers(t.weekday(), t.time()):
                for pid in d.people:
                    out[pid] = self.people[pid]
        return list(out.values())


def uncovered(cfg: EscalationConfig) -> dict[str, list[str]]:
    """Per role, the hours of the week nobody holds it ("sun 07:00-19:00"), for check-config: a gap showed only when
    an alarm fell into it. Exact: whether a duty covers a time changes only at a start or an end."""
    out: dict[str, list[str]] = {}
    for role in dict.fromkeys(d.role for d in cfg.duty):
        duties = [d for d in cfg.duty if d.role == role]
        cuts = sorted({dtime(0, 0), *(d.start for d in duties), *(d.end for d in duties)})
        gaps: list[str] = []
        for day, name in enumerate(_DAYS):
            open_at: dtime | None = None
            for i, t in enumerate(cuts):
                nobody = not any(d.covers(day, t) for d in duties)
                if nobody and open_at is None:
                    open_at = t
                if open_at is not None and (not nobody or i == len(cuts) - 1):
                    end = t if not nobody else None
                    gaps.append(f"{name} {open_at:%H:%M}-{'24:00' if end is None else f'{end:%H:%M}'}")
                    open_at = None
        if gaps:
            out[role] = gaps
    return out
