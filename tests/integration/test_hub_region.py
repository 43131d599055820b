"""The regional hub for the people above the sites (issue 16), on the demo region's real processes: three site
gateways with simulators, a 3-node NATS cluster, PostgreSQL and two hub replicas. A major hazard confirmed at a
site appears at the hub with its same-day clock; each login sees its own part of the tree and nothing else; the
region's 附件1 figures are the sum of the sites' own; a site whose gateway dies shows offline."""

from __future__ import annotations

import asyncio
import io
import json
import signal
import time
import urllib.error
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import nats
from openpyxl import load_workbook

from alerting.ledger import STATS_ITEMS
from services.demo_region import Region, call, login, raise_major_hazard
from services.local import wait_for

TZ = ZoneInfo("Asia/Shanghai")


def refused(base: str, path: str, token: str) -> int:
    try:
        call(base, "GET", path, None, token)
    except urllib.error.HTTPError as err:
        return err.code
    return 200


async def status_as(region: Region, site: str, body: dict[str, Any]) -> None:
    """A status for `site` as the hub's login may publish it (a site's own would come from its gateway)."""
    assert region.cluster is not None
    nc = await nats.connect(servers=region.cluster.urls, user="hub", password=region.nats_passwords["hub"])
    try:
        await nc.publish(f"sitegw.{site}.status", json.dumps(body).encode())
        await nc.flush()
    finally:
        await nc.close()


def posted(base: str, path: str, body: Any, token: str) -> int:
    try:
        call(base, "POST", path, body, token)
    except urllib.error.HTTPError as err:
        return err.code
    return 200


def raw(base: str, path: str, token: str) -> bytes:
    import urllib.request

    req = urllib.request.Request(base + path, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        body: bytes = r.read()
        return body


def test_the_hub_shows_each_user_their_region_with_clocks_statistics_and_site_states(region: Region) -> None:
    xw, jn, gs = region.sites  # 玄武区 (中建), 江宁区 (another group), 姑苏区 in 苏州 (中建)
    hub, hub_b = region.hub_url, f"http://127.0.0.1:{region.hub_ports[1]}"
    tok = {u: login(hub, u, pw) for u, pw in region.hub_passwords.items()}

    # a major hazard at 玄武区 (self-check), taken through to 销号; one at 姑苏区 from an inspection, listed by the
    # county (挂牌督办); a general one at 江宁区
    h_xw = raise_major_hazard(xw)
    mgr = {s.id: login(s.base, "li", s.passwords["li"]) for s in region.sites}
    off = {s.id: login(s.base, "zhang", s.passwords["zhang"]) for s in region.sites}
    due = (datetime.now(TZ).date() + timedelta(days=7)).isoformat()
    call(xw.base, "POST", f"/api/hazards/{h_xw}/assign",
         {"responsible": "赵工", "measures": "更换力矩限制器", "deadline": due, "funds": 12000,
          "emergency_plan": "停用塔吊"}, mgr[xw.id])  # fmt: skip
    call(xw.base, "POST", f"/api/hazards/{h_xw}/submit", {"evidence": "已更换，附检测报告"}, off[xw.id])
    call(xw.base, "POST", f"/api/hazards/{h_xw}/accept", {"why": "复查合格"}, mgr[xw.id])
    h_gs = call(gs.base, "POST", "/api/hazards", {"unit_name": gs.project["name"], "description": "深基坑支护变形超限",
                "source": "inspection"}, off[gs.id])["id"]  # fmt: skip
    basis = {"version": "2024", "article": "8(四)", "text_zh": "起重机械安全装置不齐全、失效或者被违规拆除、破坏"}
    call(gs.base, "POST", f"/api/hazards/{h_gs}/confirm", {"klass": "major", "basis": basis}, mgr[gs.id])
    admin = login(gs.base, "admin", gs.passwords["admin"])  # the site records the authority's listing
    call(gs.base, "POST", f"/api/hazards/{h_gs}/list_supervision", {"level": "county"}, admin)
    h_jn = call(jn.base, "POST", "/api/hazards", {"unit_name": jn.project["name"], "description": "临边防护缺失",
                "source": "self_check"}, off[jn.id])["id"]  # fmt: skip
    call(jn.base, "POST", f"/api/hazards/{h_jn}/confirm", {"klass": "general"}, mgr[jn.id])

    site_rec = call(gs.base, "GET", f"/api/hazards/{h_gs}", None, mgr[gs.id])

    def at_hub() -> list[dict[str, Any]] | None:
        # the sites' events arrive independently: wait for both 姑苏区's listing and 玄武区's closing (销号)
        rows = call(hub, "GET", "/api/major-hazards", None, tok["sheng"])
        listed = any(r["site"] == gs.id and r["listing"] == "county" for r in rows)
        return rows if listed and all(r["site"] != xw.id for r in rows) else None

    majors = wait_for(at_hub, 30, 0.3, "姑苏区's major hazard listed, 玄武区's closed, at the hub")
    assert [(m["site"], m["hazard_id"]) for m in majors] == [(gs.id, h_gs)]  # 玄武区's is closed: not open
    clock = majors[0]["report_clock"]
    # the same-day report clock as the site runs it: due at the site's local midnight, still running
    assert clock["due_ns"] == site_rec["report_due_ns"] and clock["met_ns"] is None
    # the countdown is the due time less the hub's now (whatever the hour of the run, midnight included)
    assert abs(clock["left_s"] - (clock["due_ns"] - time.time_ns()) / 1e9) < 60
    listed = call(hub, "GET", "/api/listed-hazards", None, tok["sheng"])
    assert [(h["site"], h["listing"]) for h in listed] == [(gs.id, "county")]
    # 挂牌督办 by the county: its deadline as the site set it (the end of the 30th local day, domain.md §6.2)
    lc = listed[0]["listing_clock"]
    assert lc["due_ns"] == site_rec["listing_due_ns"] and abs(lc["left_s"] - (lc["due_ns"] - time.time_ns()) / 1e9) < 60
    assert 30 * 86400 - 120 < lc["left_s"] <= 31 * 86400  # about a month ahead

    # scopes: the county sees its site, the city its two, the group its two projects in two cities, the province all
    def sites_of(user: str, base: str = hub, q: str = "") -> list[str]:
        return [s["site"] for s in call(base, "GET", "/api/sites" + q, None, tok[user])["sites"]]

    assert sites_of("xuanwu") == [xw.id]
    assert sites_of("nanjing") == [xw.id, jn.id]
    assert sites_of("zhongjian") == [xw.id, gs.id]
    assert sorted(sites_of("sheng")) == sorted(s.id for s in region.sites)
    assert sites_of("sheng", hub_b, "?region=320500") == [gs.id]  # the other replica knows the session too
    assert refused(hub, "/api/sites?region=320500", tok["nanjing"]) == 403  # 苏州 is not 南京's
    assert refused(hub, f"/api/sites/{gs.id}", tok["xuanwu"]) == 404  # nor is its drill-down
    assert refused(hub, "/api/major-hazards", "not-a-session") == 401
    assert call(hub, "GET", "/api/major-hazards", None, tok["nanjing"]) == []  # 姑苏区's is not in 南京

    # every site online, its devices reported; the drill-down holds the open hazards and the status as sent
    states = wait_for(lambda: (s := call(hub, "GET", "/api/sites", None, tok["sheng"]))["totals"]["online"] == 3
                      and s, 30, 0.5, "three sites online at the hub")  # fmt: skip
    assert states["totals"]["major_open"] == 1 and states["totals"]["open_hazards"] == 2
    detail = call(hub, "GET", f"/api/sites/{gs.id}", None, tok["zhongjian"])
    assert [h["hazard_id"] for h in detail["hazards_open"]] == [h_gs]
    assert set(detail["status"]["devices"]) == {"FW-A01", "FW-A02", "GAS-01"}
    assert detail["county"] == "姑苏区" and detail["city"] == "苏州市" and detail["company"] == xw.project["company"]

    # 附件1 for this month, cumulative: the province's figures per city are the sums of the sites' own
    first = datetime.now(TZ).date().replace(day=1)
    nxt = (first + timedelta(days=32)).replace(day=1)
    month = first.strftime("%Y-%m")
    own = {s.id: call(s.base, "GET", f"/api/stats/monthly?since=2000-01-01&until={nxt}", None, mgr[s.id])
           for s in region.sites}  # fmt: skip
    assert own[xw.id]["self_check_found"] == 1 and own[xw.id]["self_check_rectified"] == 1
    assert own[gs.id]["inspection_found"] == 1 and own[gs.id]["listed"] == 1
    stats = call(hub, "GET", f"/api/stats/monthly?month={month}", None, tok["sheng"])["rows"]
    by = {r["name"]: r for r in stats}
    for key, _label in STATS_ITEMS:
        assert by["南京市"][key] == own[xw.id][key] + own[jn.id][key], key
        assert by["苏州市"][key] == own[gs.id][key], key
        assert by["合计"][key] == sum(o[key] for o in own.values()), key
    wb = load_workbook(io.BytesIO(raw(hub, f"/api/stats/monthly?month={month}&format=xlsx", tok["sheng"])))
    ws = wb.active
    assert ws is not None
    head = [c.value for c in ws[3]]
    assert head == ["序号", "项目", "南京市", "苏州市", "合计"]
    assert [[c.value for c in row][2:] for row in ws.iter_rows(min_row=4, max_row=3 + len(STATS_ITEMS))] == [
        [by["南京市"][k], by["苏州市"][k], by["合计"][k]] for k, _ in STATS_ITEMS
    ]
    assert refused(hub, "/api/stats/monthly", tok["zhongjian"]) == 403  # per region, not per group
    # 附件2 across the group's projects: its two classified hazards (the closed one included), none of 江宁's
    ledger = load_workbook(io.BytesIO(raw(hub, "/api/ledger.xlsx", tok["zhongjian"]))).active
    assert ledger is not None
    ids = [r[10] for r in ledger.iter_rows(min_row=6, values_only=True) if r[0] is not None]
    assert sorted(ids) == sorted([f"{xw.id}-{h_xw}", f"{gs.id}-{h_gs}"])

    # a supervision notice (督办通知) from the province down to 姑苏区: the site fetches it with its next status, a
    # manager acknowledges it there, and the hub sees the receipt and the answer; a viewer may not send one
    text = "请于3日内完成深基坑支护整改并书面报告"
    body = {"text": text, "hazard_id": h_gs, "due": due}
    assert posted(hub, f"/api/sites/{gs.id}/notices", body, tok["nanjing"]) == 403
    sent = call(hub, "POST", f"/api/sites/{gs.id}/notices", body, tok["sheng"])
    got = wait_for(lambda: call(gs.base, "GET", "/api/notices", None, mgr[gs.id]), 30, 0.3, "the notice at 姑苏区")
    assert [(n["id"], n["text"], n["hazard_id"], n["due"]) for n in got] == [(sent["id"], text, h_gs, due)]
    assert "省住建厅 安监处" in got[0]["sent_by"] and got[0]["acked_ns"] is None
    assert posted(gs.base, f"/api/notices/{sent['id']}/ack", {"note": "x"}, off[gs.id]) == 403  # an officer: no
    call(gs.base, "POST", f"/api/notices/{sent['id']}/ack", {"note": "已安排整改，3日内报告"}, mgr[gs.id])
    assert posted(gs.base, f"/api/notices/{sent['id']}/ack", {"note": "again"}, mgr[gs.id]) == 409

    def answered() -> list[dict[str, Any]] | None:
        ns = call(hub, "GET", "/api/notices", None, tok["sheng"])
        return ns if ns and ns[0]["acked_ns"] else None

    (n,) = wait_for(answered, 30, 0.3, "the site's answer at the hub")
    assert (
        n["site"] == gs.id and n["received_ns"] and n["acked_by"] == "li" and n["ack_note"] == "已安排整改，3日内报告"
    )
    assert call(hub, "GET", "/api/notices", None, tok["nanjing"]) == []  # 苏州's notice is not 南京's

    assert posted(hub, f"/api/sites/{gs.id}/notices", {"text": "   "}, tok["sheng"]) == 422  # says nothing
    assert posted(hub, "/api/sites/nj-typo-01/notices", {"text": "x"}, tok["sheng"]) == 404  # no such site

    # wrong passwords for one name lock out that name only (behind the region's proxy all logins share an address)
    for _ in range(5):
        assert posted(hub, "/api/login", {"username": "xuanwu", "password": "wrong"}, "") == 401
    assert posted(hub, "/api/login", {"username": "xuanwu", "password": region.hub_passwords["xuanwu"]}, "") == 401
    assert login(hub, "nanjing", region.hub_passwords["nanjing"])

    # a site whose state file was replaced (a new epoch, ids from 1 again): the old file's open hazards are
    # history, not work; the hub goes by the epoch each status carries
    detail = call(hub, "GET", f"/api/sites/{gs.id}", None, tok["sheng"])
    assert detail["status"]["epoch"] and [h["hazard_id"] for h in detail["hazards_open"]] == [h_gs]
    gs.procs[-1].send_signal(signal.SIGTERM)  # its gateway stops (else its next status brings its epoch back)
    gs.procs[-1].wait(20)
    # (two statuses PostgreSQL would refuse come first: refused at the door, they hold up nobody's status)
    asyncio.run(status_as(region, gs.id, {**detail["status"], "name": "bad\u0000name", "at_ns": time.time_ns()}))
    asyncio.run(status_as(region, gs.id, {**detail["status"], "at_ns": 2**70}))
    asyncio.run(status_as(region, gs.id, {**detail["status"], "epoch": "0000000000000000", "at_ns": time.time_ns()}))
    wait_for(lambda: call(hub, "GET", "/api/major-hazards", None, tok["sheng"]) == [], 30, 0.3, "old epoch set aside")

    # a site's gateway dies: the hub shows it offline once its status stops coming
    jn.procs[-1].send_signal(signal.SIGKILL)
    jn.procs[-1].wait(10)
    gone = wait_for(lambda: [s for s in call(hub, "GET", "/api/sites", None, tok["nanjing"])["sites"]
                             if not s["online"]], 30, 0.5, "江宁区's site offline at the hub")  # fmt: skip
    assert [s["site"] for s in gone] == [jn.id]

    # each replica's /healthz: consuming and connected; with the whole cluster gone, 503 and why
    health = call(hub_b, "GET", "/healthz")
    assert health["status"] == "ok" and health["nats_connected"] and health["problems"] == []
    assert region.cluster is not None
    region.cluster.stop()

    def refused_health() -> dict[str, Any] | None:
        try:
            call(hub, "GET", "/healthz")
        except urllib.error.HTTPError as err:
            return {"code": err.code, "why": str(err)}
        return None

    down = wait_for(refused_health, 30, 0.5, "/healthz 503 with the cluster gone")
    assert down["code"] == 503 and "not connected to the NATS cluster" in down["why"]
