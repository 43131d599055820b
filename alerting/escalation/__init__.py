"""Escalation to supervisors in stages: schedule (tiers per alarm) → outbox (messages) → delivery (grouped, retried)."""

from alerting.escalation.delivery import Delivery
from alerting.escalation.outbox import Outbox
from alerting.escalation.pipeline import Escalation
from alerting.escalation.roster import Roster
from alerting.escalation.schedule import Schedule

__all__ = ["Delivery", "Escalation", "Outbox", "Roster", "Schedule"]
