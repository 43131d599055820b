"""Alarm engine (issue 3): rules, lifecycle, escalation, hazards."""
