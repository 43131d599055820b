"""The region's faults for real (issue 16), with three full site gateways: one site's uplink is cut (its TCP links
to every NATS node killed) while its gas detector leaks and its people work a major hazard; meanwhile a hub replica
is `kill -9`ed, PostgreSQL is killed and restarted and a NATS node is killed; two minutes later, after a second
leak, the link comes back. Then the account is exact: every event each site made is at the hub once, in the
site's order, and every alarm and hazard is in the state its site holds."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
import urllib.request
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest

from services.demo_region import Region, Site, call, login, raise_major_hazard
from services.local import wait_for
from tests.sites import reasons

TZ = ZoneInfo("Asia/Shanghai")


def cut_for_s() -> float:
    """How long the site stays cut off: two minutes (SITEGW_CUT_S to change it; mostly waiting, little CPU)."""
    return float(os.environ.get("SITEGW_CUT_S", "120"))


@pytest.fixture
def cuttable(tmp_path: Path) -> Iterator[Region]:
    r = Region(tmp_path / "region", offline_after_s=6.0, cuttable=True, behind_after_s=2.0)
    try:
        r.start()
        yield r
    finally:
        r.stop()


def gas(site: Site, lel: float) -> None:
    body = json.dumps({"device": "GAS-01", "values": {"lel": lel}}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{site.control}/set", data=body, method="POST")
    with urllib.request.urlopen(req, timeout=5):
        pass


def site_log(site: Site) -> tuple[int, dict[int, str], dict[int, tuple[str, str]]]:
    """From the site's own state file: how many events it made (alarm log and hazard history rows, notices received
    and acknowledged: one uplink event each), each alarm's state, each hazard's (status, listing)."""
    db = sqlite3.connect(site.dir / "state" / "sitegw.db")
    try:
        n = db.execute(
            "SELECT (SELECT count(*) FROM alarm_log) + (SELECT count(*) FROM hazard_history)"
            " + (SELECT count(*) FROM notices) + (SELECT count(*) FROM notices WHERE acked_ns IS NOT NULL)"
        ).fetchone()[0]
        # an alarm the hub knows of is one with an event (a pending one has none yet)
        alarms = dict(db.execute("SELECT id, state FROM alarm_alarms WHERE id IN (SELECT alarm_id FROM alarm_log)"))
        hazards = {r[0]: (r[1], r[2]) for r in db.execute("SELECT id, status, listing FROM hazard_record")}
        left = db.execute("SELECT count(*) FROM uplink_outbox").fetchone()[0]
    finally:
        db.close()
    assert left == 0, f"{site.id}: {left} events still in the outbox"
    return int(n), alarms, hazards


def test_a_site_cut_off_through_every_fault_catches_up_with_an_exact_account(cuttable: Region) -> None:
    region = cuttable
    assert region.pg is not None and region.cluster is not None
    xw, jn, gs = region.sites
    hub = region.hub_url
    tok = login(hub, "sheng", region.hub_passwords["sheng"])

    def online() -> dict[str, bool]:
        return {s["site"]: s["online"] for s in call(hub, "GET", "/api/sites", None, tok)["sites"]}

    wait_for(lambda: all(online().values()), 30, 0.5, "three sites online")
    jn.cut_uplink()
    t_cut = time.monotonic()
    # at 江宁区, cut off: the gas detector leaks (the alarm raised, acknowledged, cleared) and a major hazard is
    # reported, confirmed and assigned; its /health says the uplink is behind, the hub shows it offline
    gas(jn, 30.0)
    off = login(jn.base, "zhang", jn.passwords["zhang"])
    alarm = wait_for(lambda: [a for a in call(jn.base, "GET", "/api/alarms?open_only=true", None, off)
                              if a["rule"] == "gas.lel"], 30, 0.3, "gas.lel raised at 江宁区")[0]  # fmt: skip
    call(jn.base, "POST", f"/api/alarms/{alarm['id']}/ack", {"comment": "已到现场"}, off)
    h_jn = raise_major_hazard(jn)
    mgr = login(jn.base, "li", jn.passwords["li"])
    due = (datetime.now(TZ).date() + timedelta(days=5)).isoformat()
    call(jn.base, "POST", f"/api/hazards/{h_jn}/assign", {"responsible": "赵工", "measures": "更换", "deadline": due,
         "funds": 8000, "emergency_plan": "停用"}, mgr)  # fmt: skip
    gas(jn, 2.0)
    # and the province sends it a supervision notice it cannot fetch yet
    notice = call(hub, "POST", f"/api/sites/{jn.id}/notices", {"text": "立即排查燃气泄漏原因"}, tok)["id"]
    wait_for(lambda: "uplink_behind" in (reasons(jn.base) or {}), 30, 0.3, "/health at 江宁区: uplink_behind")
    wait_for(lambda: not online()[jn.id], 30, 0.5, "江宁区 offline at the hub")

    # the hub side's faults while the other sites go on: a replica killed mid-stream, PostgreSQL killed and
    # restarted, a NATS node killed
    raise_major_hazard(xw)
    region.hubs[0].send_signal(signal.SIGKILL)
    region.hubs[0].wait(10)
    raise_major_hazard(gs)
    region.pg.kill()
    region.pg.start()
    region.cluster.kill_node(region.cluster.nodes[1])
    h_xw2 = raise_major_hazard(xw)
    region.restart_hub(0)
    # half-way through the cut, a second leak at the cut-off site: raised and cleared while it is still alone
    time.sleep(max(0.0, cut_for_s() / 2 - (time.monotonic() - t_cut)))
    gas(jn, 30.0)
    wait_for(lambda: [a for a in call(jn.base, "GET", "/api/alarms?open_only=true", None, off)
                      if a["rule"] == "gas.lel" and a["id"] != alarm["id"]], 30, 0.3, "the second leak")  # fmt: skip
    gas(jn, 2.0)
    time.sleep(max(0.0, cut_for_s() - (time.monotonic() - t_cut)))
    assert "uplink_behind" in (reasons(jn.base) or {})  # still cut off until now

    jn.restore_uplink()  # back: the outbox drains by itself, oldest first
    wait_for(
        lambda: (r := reasons(jn.base)) is not None and "uplink_behind" not in r, 60, 0.3, "江宁区's uplink caught up"
    )
    wait_for(lambda: online()[jn.id], 30, 0.5, "江宁区 online again at the hub")
    got = wait_for(lambda: call(jn.base, "GET", "/api/notices", None, mgr), 30, 0.3, "the notice at 江宁区")
    assert [n["id"] for n in got] == [notice]  # once, though the hub offered it until the receipt came back

    for s in region.sites:
        made, alarms, hazards = site_log(s)

        def stored(site: str = s.id, n: int = made) -> list[tuple[Any, ...]] | None:
            with psycopg.connect(region.pg.dsn) as c:  # type: ignore[union-attr]
                rows = c.execute("SELECT seq FROM events WHERE site = %s ORDER BY seq", (site,)).fetchall()
            return rows if len(rows) >= n else None

        seqs = [r[0] for r in wait_for(stored, 60, 0.5, f"{s.id}'s {made} events at the hub")]
        assert seqs == list(range(1, made + 1)), s.id  # each once, none missing, in the site's order
        with psycopg.connect(region.pg.dsn) as c:
            hub_alarms = dict(c.execute("SELECT alarm_id, state FROM site_alarms WHERE site = %s", (s.id,)))
            hub_hazards = {r[0]: (r[1], r[2]) for r in c.execute(
                "SELECT hazard_id, status, listing FROM site_hazards WHERE site = %s", (s.id,))}  # fmt: skip
        assert hub_alarms == alarms, s.id
        assert hub_hazards == hazards, s.id
    # what the cut-off site did is all there: the leak's raise, ack and clear, and the hazard's steps
    with psycopg.connect(region.pg.dsn) as c:
        kinds = [r[0] for r in c.execute("SELECT kind FROM events WHERE site = %s ORDER BY seq", (jn.id,))]
    assert [k for k in kinds if k.startswith("alarm.")][:3] == ["alarm.raised", "alarm.acked", "alarm.cleared"]
    assert kinds.count("alarm.raised") >= 2  # both leaks
    assert [k for k in kinds if k.startswith("hazard.")] == ["hazard.report", "hazard.confirm", "hazard.assign"]
    assert kinds.count("notice.received") == 1
    with psycopg.connect(region.pg.dsn) as c:
        assert c.execute("SELECT received_at_ns IS NOT NULL FROM notices WHERE id = %s", (notice,)).fetchone() == (
            True,
        )
    assert h_xw2 == 2
    assert (region.pg.dir / "postgres.log").read_bytes().count(b"ready to accept connections") >= 2
