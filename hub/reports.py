"""The regional forms: 附件1 (monthly statistics) per region and the 附件2 ledger across projects, from the hub's data.

They are counted by the sites' own code (alerting/ledger.py) over the records and histories the sites sent, so a
region's figures are the sum of its sites' figures by construction, not by a second implementation."""

from __future__ import annotations

import io
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from psycopg import AsyncConnection

from alerting.ledger import STATS_ITEMS, clean_text, monthly_stats
from hub.regions import RegionTree

NS = 1_000_000_000


@dataclass(frozen=True)
class Unit:
    reporting_unit: str | None
    contact: str | None = None
    contact_phone: str | None = None


class RegionHazards:
    """The HazardSource of alerting/ledger.py over the hazard records of a set of sites, as the hub holds them.
    Ids are "<site>-<hazard id>" (unique across the region; the form's 隐患编号)."""

    def __init__(
        self, records: list[dict[str, Any]], histories: dict[str, list[dict[str, Any]]], tz: ZoneInfo, unit: Unit
    ) -> None:
        self.records = sorted(records, key=lambda r: (r["found_at_ns"], r["id"]))
        self.histories = histories
        self.tz = tz
        self.cfg = unit

    def clock(self) -> int:
        return time.time_ns()

    def query(
        self, status: Any = None, klass: Any = None, since_ns: int | None = None, until_ns: int | None = None
    ) -> list[dict[str, Any]]:
        return [
            r
            for r in self.records
            if (status is None or r["status"] == status)
            and (klass is None or r["klass"] == klass)
            and (since_ns is None or r["found_at_ns"] >= since_ns)
            and (until_ns is None or r["found_at_ns"] < until_ns)
        ]

    def history(self, hazard_id: Any) -> list[dict[str, Any]]:
        return self.histories.get(str(hazard_id), [])

    def local_date(self, ns: int) -> date:
        return datetime.fromtimestamp(ns // NS, self.tz).date()

    def local_datetime(self, ns: int) -> datetime:
        return datetime.fromtimestamp(ns // NS, self.tz).replace(tzinfo=None)


async def region_hazards(
    conn: AsyncConnection[Any], tree: RegionTree, sites: list[str], tz: ZoneInfo, unit: Unit
) -> dict[str, RegionHazards]:
    """Per site: its records (as last reported) and each record's history (from its hazard events, in order)."""
    recs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    cur = await conn.execute(
        "SELECT site, epoch, hazard_id, record, count(*) OVER (PARTITION BY site) >"
        " count(*) OVER (PARTITION BY site, epoch) FROM site_hazards WHERE site = ANY(%s)",
        (sites,),
    )
    rows = await cur.fetchall()
    # the form's 隐患编号: "<site>-<id>"; a site whose state file was replaced numbers from 1 again, so its
    # records carry their file's epoch too ("<site>-<epoch>-<id>"), and histories never mix
    replaced = {site for site, _e, _h, _r, several in rows if several}

    def key(site: str, epoch: str, hid: Any) -> str:
        return f"{site}-{epoch}-{hid}" if site in replaced else f"{site}-{hid}"

    for site, epoch, hid, rec, _several in rows:
        county = next((r.name for r in tree.placement(site).path if r.level == "county"), None)
        city = next((r.name for r in tree.placement(site).path if r.level == "city"), None)
        recs[site].append(
            {
                **rec,
                "id": key(site, epoch, hid),
                "prefecture": rec.get("prefecture") or city,
                "county": rec.get("county") or county,
            }
        )
    hist: dict[str, list[dict[str, Any]]] = defaultdict(list)
    cur = await conn.execute(
        "SELECT site, epoch, data->>'hazard_id', at_ns, data->>'action', data->>'to' FROM events"
        " WHERE site = ANY(%s) AND kind LIKE 'hazard.%%' ORDER BY site, epoch, seq",
        (sites,),
    )
    for site, epoch, hid, at_ns, action, to in await cur.fetchall():
        hist[key(site, epoch, hid)].append({"at_ns": at_ns, "action": action, "to_status": to})
    return {s: RegionHazards(recs.get(s, []), hist, tz, unit) for s in sites}


def merged(parts: list[RegionHazards], tz: ZoneInfo, unit: Unit) -> RegionHazards:
    recs = [r for p in parts for r in p.records]
    hist: dict[str, list[dict[str, Any]]] = {}
    for p in parts:
        hist.update(p.histories)
    return RegionHazards(recs, hist, tz, unit)


def stats_by_region(
    tree: RegionTree, per_site: dict[str, RegionHazards], region: str, since_ns: int, until_ns: int
) -> list[dict[str, Any]]:
    """附件1 block A for each region directly under `region` (or each project, under a county), then 合计."""
    node = tree.region(region)
    assert node is not None
    groups: list[tuple[str, str, list[str]]] = [
        (c.code, c.name, [s for s in tree.sites_under(c.code) if s in per_site]) for c in node.children
    ] or [(p.id, p.name, [s for s in p.sites if s in per_site]) for p in node.projects]
    rows: list[dict[str, Any]] = []
    total = dict.fromkeys((k for k, _ in STATS_ITEMS), 0)
    for code, name, sites in groups:
        counts = dict.fromkeys(total, 0)
        for s in sites:
            for k, v in monthly_stats(per_site[s], since_ns, until_ns).items():
                counts[k] += v
        for k, v in counts.items():
            total[k] += v
        rows.append({"code": code, "name": name, "sites": len(sites), **counts})
    rows.append({"code": region, "name": "合计", "sites": sum(int(r["sites"]) for r in rows), **total})
    return rows


def stats_by_region_xlsx(rows: list[dict[str, Any]], title: str) -> bytes:
    """附件1 block A as a workbook with one column per region and a 合计 column: 序号 | 项目 | region … | 合计."""
    from openpyxl import Workbook
    from openpyxl.styles import Alignment, Font

    wb = Workbook()
    ws = wb.active
    assert ws is not None
    ws.title = "调度表"
    # region names come from the hub's config: cleaned as the sites' forms clean user text (alerting/ledger.py), so
    # a character XML cannot hold gives a workbook that opens rather than one that does not
    ws.cell(1, 1, clean_text(title)).font = Font(bold=True, size=14)
    ws.merge_cells(start_row=1, start_column=1, end_row=1, end_column=2 + len(rows))
    ws.cell(1, 1).alignment = Alignment(horizontal="center")
    head = ["序号", "项目", *(clean_text(r["name"]) for r in rows)]
    for c, name in enumerate(head, start=1):
        ws.cell(3, c, name).font = Font(bold=True)
    ws.column_dimensions["B"].width = 46
    for i, (key, label) in enumerate(STATS_ITEMS, start=1):
        ws.cell(3 + i, 1, i)
        ws.cell(3 + i, 2, label)
        for c, r in enumerate(rows, start=3):
            ws.cell(3 + i, c, r[key])
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()
