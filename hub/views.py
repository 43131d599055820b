"""What the hub's API shows, read from PostgreSQL: each site's state, major hazards' clocks, 挂牌督办 countdowns."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from psycopg import AsyncConnection

from alerting.glossary import CLASS_ZH, LISTING_ZH, STATUS_ZH
from hub.regions import RegionTree

NS = 1_000_000_000
# a site's current state file only: after a site's state file was replaced (a new epoch, ids from 1 again), the
# old file's open alarms and hazards are history, not work (the epoch comes with each status, gateway/uplink.py)
CURRENT = (
    " AND {t}.epoch = COALESCE((SELECT st.body->>'epoch' FROM site_status st WHERE st.site = {t}.site), {t}.epoch)"
)
OPEN = ("closed", "dismissed")  # a hazard in neither is open
RECTIFYING = ("rectifying", "reopened")  # its rectification deadline runs


def where(tree: RegionTree, site: str) -> dict[str, Any]:
    pl = tree.placement(site)
    names = {r.level: r.name for r in pl.path}
    return {
        "site": site,
        "project": pl.project.name if pl.project else None,
        "project_id": pl.project.id if pl.project else None,
        "company": pl.project.company if pl.project else None,
        "province": names.get("province"),
        "city": names.get("city"),
        "county": names.get("county"),
        "region": pl.path[-1].code,
    }


async def reporting_sites(conn: AsyncConnection[Any]) -> set[str]:
    """Every site the hub has heard from (events or status), placed in the tree or not."""
    cur = await conn.execute(
        "SELECT site FROM site_status UNION SELECT DISTINCT site FROM site_alarms"
        " UNION SELECT DISTINCT site FROM site_hazards"
    )
    return {r[0] for r in await cur.fetchall()}


async def site_states(
    conn: AsyncConnection[Any], tree: RegionTree, sites: list[str], offline_after_s: float, tz: ZoneInfo
) -> list[dict[str, Any]]:
    """One row per site, in the order given: online (a status within offline_after_s, by the hub's clock), health,
    devices online, active alarms by level, open and major hazards, and how many of its clocks are overdue."""
    now_ns = time.time_ns()
    today = datetime.now(tz).date().isoformat()
    out = {
        s: {
            **where(tree, s),
            "online": False,
            "last_seen": None,
            "health": None,
            "reasons": [],
            "devices_total": 0,
            "devices_online": 0,
            "alarms": {"1": 0, "2": 0, "3": 0},
            "open_hazards": 0,
            "major_open": 0,
            "overdue": 0,
        }
        for s in sites
    }
    cur = await conn.execute(
        "SELECT site, body, received_at, received_at > now() - make_interval(secs => %s) FROM site_status"
        " WHERE site = ANY(%s)",
        (offline_after_s, sites),
    )
    for site, body, seen, online in await cur.fetchall():
        devices = body.get("devices") or {}
        out[site].update(
            online=bool(online),
            last_seen=seen.isoformat(),
            health=body.get("health"),
            name=body.get("name"),
            reasons=body.get("reasons") or [],
            devices_total=len(devices),
            devices_online=sum(1 for v in devices.values() if v),
        )
    cur = await conn.execute(
        "SELECT site, level, count(*) FROM site_alarms WHERE site = ANY(%s)"
        + CURRENT.format(t="site_alarms")
        + " AND state IN ('active_unacked', 'active_acked') GROUP BY site, level",
        (sites,),
    )
    for site, level, n in await cur.fetchall():
        out[site]["alarms"][str(level)] = n
    cur = await conn.execute(
        "SELECT site, count(*), count(*) FILTER (WHERE klass = 'major'),"
        " count(*) FILTER (WHERE (report_due_ns < %s AND reported_at_ns IS NULL)"
        "   OR (listing <> 'none' AND listing_due_ns < %s)"
        "   OR (status = ANY(%s) AND record->>'deadline' < %s))"
        " FROM site_hazards WHERE site = ANY(%s) AND status <> ALL(%s)"
        + CURRENT.format(t="site_hazards")
        + " GROUP BY site",
        (now_ns, now_ns, list(RECTIFYING), today, sites, list(OPEN)),
    )
    for site, n, major, overdue in await cur.fetchall():
        out[site].update(open_hazards=n, major_open=major, overdue=overdue)
    return [out[s] for s in sites]


def _clock(due_ns: int | None, met_ns: int | None, now_ns: int) -> dict[str, Any] | None:
    """A deadline as the page shows it: due, met (when), seconds left (negative: overdue by that much)."""
    if due_ns is None:
        return None
    return {
        "due_ns": due_ns,
        "met_ns": met_ns,
        "left_s": None if met_ns is not None else round((due_ns - now_ns) / NS),
        "overdue": (met_ns or now_ns) >= due_ns,
    }


def _hazard(tree: RegionTree, row: tuple[Any, ...], now_ns: int) -> dict[str, Any]:
    site, epoch, hid, status, klass, listing, listing_due, report_due, reported, found, unit, desc, rec = row
    return {
        **where(tree, site),
        "key": f"{site}:{epoch}:{hid}",
        "hazard_id": hid,
        "status": status,
        "status_zh": STATUS_ZH.get(status, status),
        "klass": klass,
        "klass_zh": CLASS_ZH.get(klass, klass) if klass else "待判定",
        "listing": listing,
        "listing_zh": LISTING_ZH.get(listing, listing),
        "found_at_ns": found,
        "unit_name": unit,
        "description": desc,
        "deadline": rec.get("deadline"),
        "responsible": rec.get("responsible"),
        "report_clock": _clock(report_due, reported, now_ns),
        "listing_clock": None if listing == "none" else _clock(listing_due, rec.get("accepted_at_ns"), now_ns),
    }


_HAZARD_COLS = (
    "site, epoch, hazard_id, status, klass, listing, listing_due_ns, report_due_ns, reported_at_ns, found_at_ns,"
    " unit_name, description, record"
)


async def _open_hazards(
    conn: AsyncConnection[Any], tree: RegionTree, sites: list[str], which: str, order: str
) -> list[dict[str, Any]]:
    """The open hazards of these sites' current state files that `which` selects, in `order` (both ours)."""
    now_ns = time.time_ns()
    cur = await conn.execute(
        f"SELECT {_HAZARD_COLS} FROM site_hazards WHERE site = ANY(%s) AND {which} AND status <> ALL(%s)"
        + CURRENT.format(t="site_hazards")
        + f" ORDER BY {order}",
        (sites, list(OPEN)),
    )
    return [_hazard(tree, r, now_ns) for r in await cur.fetchall()]


async def major_hazards(conn: AsyncConnection[Any], tree: RegionTree, sites: list[str]) -> list[dict[str, Any]]:
    """Open major hazards (重大事故隐患), each with its same-day report clock, the unreported first."""
    return await _open_hazards(
        conn, tree, sites, "klass = 'major'", "reported_at_ns IS NOT NULL, report_due_ns, found_at_ns"
    )


async def listed_hazards(conn: AsyncConnection[Any], tree: RegionTree, sites: list[str]) -> list[dict[str, Any]]:
    """挂牌督办 hazards not yet closed, soonest deadline first, with the days left."""
    return await _open_hazards(conn, tree, sites, "listing <> 'none'", "listing_due_ns NULLS LAST, found_at_ns")


async def site_detail(
    conn: AsyncConnection[Any], tree: RegionTree, site: str, offline_after_s: float, tz: ZoneInfo
) -> dict[str, Any]:
    """Drill-down: the site's state, its latest status as sent, its active alarms and its open hazards."""
    now_ns = time.time_ns()
    (state,) = await site_states(conn, tree, [site], offline_after_s, tz)
    cur = await conn.execute("SELECT body FROM site_status WHERE site = %s", (site,))
    row = await cur.fetchone()
    cur = await conn.execute(
        "SELECT alarm_id, rule, device, quantity, state, level, value, threshold, source, changed_at_ns"
        " FROM site_alarms WHERE site = %s AND state <> 'normal'"
        + CURRENT.format(t="site_alarms")
        + " ORDER BY level DESC, changed_at_ns",
        (site,),
    )
    cols = ("alarm_id", "rule", "device", "quantity", "state", "level", "value", "threshold", "source", "changed_at_ns")
    alarms = [dict(zip(cols, r, strict=True)) for r in await cur.fetchall()]
    cur = await conn.execute(
        f"SELECT {_HAZARD_COLS} FROM site_hazards WHERE site = %s AND status <> ALL(%s)"
        + CURRENT.format(t="site_hazards")
        + " ORDER BY found_at_ns",
        (site, list(OPEN)),
    )
    hazards = [_hazard(tree, r, now_ns) for r in await cur.fetchall()]
    return {
        **state,
        "status": row[0] if row else None,
        "alarms_active": alarms,
        "hazards_open": hazards,
        "notices": await notices(conn, tree, [site]),
    }


async def notices(conn: AsyncConnection[Any], tree: RegionTree, sites: list[str]) -> list[dict[str, Any]]:
    """Supervision notices to these sites, newest first: sent (by whom), received at the site, acknowledged."""
    cur = await conn.execute(
        "SELECT id, site, created_at, sent_by, text, hazard_id, due, received_at_ns, acked_at_ns, acked_by, ack_note"
        " FROM notices WHERE site = ANY(%s) ORDER BY id DESC",
        (sites,),
    )
    out = []
    for nid, site, created, by, text, hid, due, rec, acked, acked_by, note in await cur.fetchall():
        out.append({**where(tree, site), "id": nid, "created_at": created.isoformat(), "sent_by": by, "text": text,
                    "hazard_id": hid, "due": due.isoformat() if due else None, "received_ns": rec,
                    "acked_ns": acked, "acked_by": acked_by, "ack_note": note})  # fmt: skip
    return out
