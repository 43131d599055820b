"""What an alarm is: its ISA-18.2 states, the snapshot of one alarm, the events of its changes, and the refusals."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from alerting.rules import Level

NS = 1_000_000_000
SYSTEM = "system"


class AlarmState(StrEnum):
    PENDING = "pending"  # condition present, on-delay running: visible, never notified
    ACTIVE_UNACKED = "active_unacked"
    ACTIVE_ACKED = "active_acked"
    RTN_UNACKED = "rtn_unacked"  # returned to normal before anyone acknowledged it
    LATCHED = "latched"  # rule.latch: the condition cleared but a person must reset it after inspection
    NORMAL = "normal"  # closed (history row)


ACTIVE_STATES = frozenset({AlarmState.ACTIVE_UNACKED, AlarmState.ACTIVE_ACKED})

EventKind = Literal[
    "raised",
    "level_up",
    "level_down",
    "acked",
    "cleared",
    "closed",
    "latched",
    "reset",
    "shelved",
    "unshelved",
    "suppressed",
    "unsuppressed",
    "chattering",
    "comment",
]


@dataclass(frozen=True, slots=True)
class Alarm:
    """A snapshot of one alarm row. `level` is the alarm's severity (the candidate level while PENDING, the last
    active level once returned to normal); `max_level` the highest it reached."""

    id: int
    rule: str
    device: str
    quantity: str
    kind: str
    category: str
    state: AlarmState
    level: Level
    max_level: Level
    value: float
    threshold: float | None
    source: str
    title_zh: str
    title_en: str
    pending_ns: int | None
    raised_ns: int | None
    acked_ns: int | None
    acked_by: str | None
    cleared_ns: int | None
    closed_ns: int | None
    shelved_until_ns: int | None
    shelved_by: str | None
    shelve_reason: str | None
    suppressed_by: str | None  # comma-joined suppression reasons of the device, None when not suppressed
    chattering: bool
    raise_count: int  # how often this row was raised (first raise and re-raises from RTN / LATCHED)
    # when the value behind the last raise, level change or clear was measured (a survey's time, a device's clock);
    # `raised_ns` is when the gateway raised it. None for calendar rules and rows written before this column
    source_ns: int | None = None

    @property
    def open(self) -> bool:
        return self.state is not AlarmState.NORMAL

    @property
    def shelved(self) -> bool:
        return self.shelved_until_ns is not None

    @property
    def notifiable(self) -> bool:
        """Whether people should be chased about it now: active, unacknowledged, not shelved, not suppressed."""
        return self.state is AlarmState.ACTIVE_UNACKED and self.shelved_until_ns is None and self.suppressed_by is None

    @property
    def condition_level(self) -> Level:
        """The level the evaluator should restore after a restart: the alarm level while active, else NORMAL
        (a PENDING candidate had not served its on-delay; RTN / LATCHED alarms have no condition any more)."""
        return self.level if self.state in ACTIVE_STATES else Level.NORMAL


@dataclass(frozen=True, slots=True)
class AlarmEvent:
    kind: EventKind
    alarm: Alarm  # snapshot after the whole change (all events of one call carry the same snapshot)
    at_ns: int
    actor: str  # "system" for automatic changes
    text: str | None = None


class LifecycleError(Exception):
    """An operator action that the alarm's current state does not allow; the message says why (HTTP 409)."""


class UnknownAlarm(LifecycleError):
    """No alarm with that id (HTTP 404)."""


class BadRequest(ValueError, LifecycleError):
    """An argument that is never valid (blank reason, shelve duration out of range): HTTP 422. ValueError comes
    first in the bases so a handler lookup by MRO finds the ValueError (422) handler before the 409 one."""


Hook = Callable[[sqlite3.Connection, AlarmEvent], None]
