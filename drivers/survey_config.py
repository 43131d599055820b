"""The survey driver's config: what a survey point's device entry may say, checked against the site's other points."""

from __future__ import annotations

from drivers.config import Claims, DeviceEntry


def check_device(at: str, d: DeviceEntry, claims: Claims) -> None:
    """A survey point: no line or broker, surveyed at a stated interval, its own id in the surveyors' files."""
    if d.line or d.unit_id is not None or d.broker or d.topic:
        raise ValueError(f"{at}: a survey point takes no 'line'/'unit_id'/'broker'/'topic'")
    if d.expected_interval_s is None:
        raise ValueError(
            f"{at}.expected_interval_s: required for a survey point (how often it is surveyed; "
            f"`up` drops to 0 after stale_factor x this without a survey)"
        )
    if d.timestamp is not None:
        raise ValueError(f"{at}.timestamp: a survey point's time is each row's survey time")
    other = claims.survey_keys.setdefault(d.key, d.id)
    if other != d.id:
        raise ValueError(f"{at}: survey point id {d.key!r} is already {other}")
