"""Message texts for people: one alarm, a digest of several, hazard clocks. Chinese first, the numbers with units."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from alerting import glossary
from alerting.alarms.model import Alarm
from alerting.rules import Level
from telemetry import quantities

_KIND_ZH = {k.removeprefix("kind_"): v for k, v in glossary.ZH.items() if k.startswith("kind_")}  # as the console
_EVENT_ZH = {
    "raised": "报警",
    "level_up": "报警升级",
    "repeat": "未确认报警 (重复提醒)",
    "acked": "已确认",
    "cleared": "已恢复正常",
}


Notice = tuple[int, str, str, dict[str, Any]]
"""A message before it is sent: (level or hazard id, subject, text, data)."""


@dataclass(frozen=True, slots=True)
class SiteInfo:
    """What a message says about where things are."""

    site_name: str
    tz: str
    console_url: str | None
    device_names: dict[str, str]  # device id -> "name (zone)"
    device_kinds: dict[str, str]
    units: dict[str, str]  # rule id -> unit of the compared value (%, mm/d, ppm TWA ...), not always the quantity's
    site_id: str = ""  # in every message's key, which must not repeat across sites (RFC 5322 §3.6.4 Message-ID)


def _fmt(v: float | None, unit: str) -> str:
    if v is None:
        return "-"
    return f"{v:.4g} {unit}".strip()


def local_time(ns: int | None, tz: str) -> str:
    if ns is None:
        return "-"
    return datetime.fromtimestamp(ns / 1e9, ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M:%S")


def alarm_message(
    a: Alarm, event: str, site: SiteInfo, actor: str | None = None, at_ns: int | None = None
) -> tuple[str, str, dict[str, Any]]:
    """(subject, text, data) for one event of one alarm; `at_ns`: when a level-up (or a repeat of one) happened,
    which its 时间 line gives (the alarm's first raise follows it)."""
    unit = site.units.get(a.rule)
    if unit is None:
        try:
            unit = quantities.lookup(a.quantity).unit
        except KeyError:
            unit = ""
    level = Level(a.level if event != "cleared" else a.max_level)
    kind = site.device_kinds.get(a.device, a.kind)  # health rules are of kind "any": name the device's kind
    kind = _KIND_ZH.get(kind, kind)
    dev = site.device_names.get(a.device, a.device)
    what = _EVENT_ZH.get(event, event)
    tag = f"【{level.zh}】" if event in ("raised", "level_up", "repeat") else f"【{what}】"
    subject = f"{tag}{kind} {dev} {a.title_zh} {_fmt(a.value, unit)}"
    lines = [
        f"{site.site_name} · {kind} {dev}",
        f"{a.title_zh} ({a.title_en})",
        f"状态: {what}, 级别 {level.zh} ({level.name.lower()})",
        f"数值: {_fmt(a.value, unit)}    阈值: {_fmt(a.threshold, unit)}",
        f"依据: {glossary.cite_zh(a.source)}",  # as a supervisor cites it; `data.source` keeps the tag
        f"时间: {local_time(at := at_ns or a.raised_ns or a.pending_ns, site.tz)}",
    ]
    if at != (first := a.raised_ns or a.pending_ns) and event in ("level_up", "repeat"):
        lines.append(f"首次报警时间: {local_time(first, site.tz)}")  # (a run of days' 报警 comes days after its 预警)
    measured = a.source_ns
    if measured is not None and abs(measured - (at or measured)) >= 60 * 1_000_000_000:
        # a back-dated survey or buffered data: when it was measured is not when the gateway raised it
        lines.append(f"测量时间: {local_time(measured, site.tz)} (报警时间见上)")
    if actor and event == "acked":
        lines.append(f"确认人: {actor}")
    if site.console_url and event in ("raised", "level_up", "repeat"):
        lines.append(f"确认 (acknowledge): {site.console_url.rstrip('/')}/alarms/{a.id}")
    lines.append(f"报警编号: {a.id}")
    data = {
        "type": "alarm",
        "event": event,
        "alarm_id": a.id,
        "rule": a.rule,
        "device": a.device,
        "kind": site.device_kinds.get(a.device, a.kind),
        "quantity": a.quantity,
        "level": int(level),
        "level_zh": level.zh,
        "state": str(a.state),
        "value": a.value,
        "threshold": a.threshold,
        "unit": unit,
        "source": a.source,
        "raised_ns": a.raised_ns,
        "source_ns": a.source_ns,
        "site": site.site_name,
    }
    return subject, "\n".join(lines), data


def digest(items: list[Notice]) -> Notice:
    """Merge several queued messages (level, subject, text, data) for one channel + recipients into one."""
    if len(items) == 1:
        return items[0]
    top = max(i[0] for i in items)
    subject = f"【{Level(top).zh}汇总】{len(items)} 条报警通知"
    text = "\n\n".join(f"{n}. {s}\n{t}" for n, (_, s, t, _) in enumerate(items, 1))
    return top, subject, text, {"type": "digest", "level": top, "items": [i[3] for i in items]}
