"""Alarms: the model (states, snapshot, events), their rows in SQLite (store) and the ISA-18.2 lifecycle."""

from alerting.alarms.lifecycle import Lifecycle
from alerting.alarms.model import (
    ACTIVE_STATES,
    NS,
    SYSTEM,
    Alarm,
    AlarmEvent,
    AlarmState,
    BadRequest,
    EventKind,
    Hook,
    LifecycleError,
    UnknownAlarm,
)
from alerting.alarms.store import AlarmStore

__all__ = [
    "ACTIVE_STATES", "NS", "SYSTEM", "Alarm", "AlarmEvent", "AlarmState", "AlarmStore", "BadRequest", "EventKind",
    "Hook", "Lifecycle", "LifecycleError", "UnknownAlarm",
]  # fmt: skip
