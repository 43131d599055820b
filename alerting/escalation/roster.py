"""Who is on duty for a role at an instant, in the site's time zone."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from alerting.config import EscalationConfig
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
