"""One point's fifteen daily surveys against a designer's 预警值 (30 mm, 3 mm/d), and where each level belongs."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from alerting.rules import Level

TZ = ZoneInfo("Asia/Shanghai")
NS = 1_000_000_000
# the surveyor's daily cumulative change at point ZQT-3, mm (day 0 is the baseline survey)
SURVEYS = [0.0, 1.0, 2.5, 4.8, 7.1, 9.5, 12.0, 15.5, 17.0, 19.0, 21.0, 23.5, 26.0, 28.2, 30.0]
PLAN = {"standard": "XX基坑监测方案", "clause": "表3 冠梁水平位移", "confidence": "P"}
WARNING = {"horizontal_displacement": {"cumulative": 30, "rate_per_day": 3, "source": PLAN}}

Seen = list[tuple[str, str, Level, int | None]]  # (rule, event kind, level, source_ns) of the lifecycle's events


def survey_point() -> dict[str, Any]:
    """Point ZQT-3 as a site file lists it: the firm's results over MQTT, against the designer's 预警值."""
    return {
        "id": "ZQT-3",
        "profile": "excavation_point_mqtt_v1",
        "broker": "b",
        "topic": "monitoring/points",
        "expected_interval_s": 86400,
        "device_clock": {"max_age_s": 30 * 86400},  # the results arrive up to weeks late
        "warning_values": WARNING,
    }


def survey_days(days_ago: int = 20) -> list[datetime]:
    """09:00 site time on consecutive days, the first `days_ago` days back."""
    first = datetime.now(TZ).replace(hour=9, minute=0, second=0, microsecond=0) - timedelta(days=days_ago)
    return [first + timedelta(days=d) for d in range(len(SURVEYS))]


def assert_levels_on_their_surveys(seen: Seen, days: list[datetime]) -> None:
    """Each level carries the survey it was reached on (its source time), not the time the gateway heard of it:
    rate 预警 at 77 % (day 3), 报警 on the third day in a row above 70 % (day 5: GB 50497-2009's table note), held
    through 3.5 mm/d (day 7) and cleared when the rate falls back (day 8); again 预警 on day 11 and 报警 on day 13,
    cleared on day 14; cumulative 预警 at 21 mm (day 10), 报警 at 30 mm (day 14), never 危险."""

    def on(ns: int | None) -> int:
        assert ns is not None
        return next(i for i, d in enumerate(days) if int(d.timestamp()) * NS == ns)

    rate = [(kind, int(lv), on(src)) for r, kind, lv, src in seen if r == "exc.horizontal_displacement_rate"]
    cumulative = [(kind, int(lv), on(src)) for r, kind, lv, src in seen if r == "exc.horizontal_displacement"]
    assert [(k, lv, d) for k, lv, d in rate if k in ("raised", "level_up")] == [
        ("raised", 1, 3),
        ("level_up", 2, 5),
        ("raised", 1, 11),
        ("level_up", 2, 13),
    ]
    assert [d for k, _, d in rate if k == "cleared"] == [8, 14]
    assert cumulative[:2] == [("raised", 1, 10), ("level_up", 2, 14)]
    assert not [r for r, _, lv, _ in seen if lv >= Level.DANGER and r.startswith("exc.horizontal")]
