"""The web console in a real Chromium (Playwright) against a running gateway fed by the simulators: live values over
SSE, an alarm in the banner, acknowledgement from the UI, the viewer's limits, both languages, wall and phone layouts;
plus the bounded history rings and per-client event queues behind it."""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import shutil
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from playwright.async_api import Browser, Page, async_playwright

from gateway.app import Gateway
from gateway.config import SiteConfig
from gateway.history import History
from services import local
from services.local import Service
from simulators.runner import SiteSimulator
from telemetry.reading import Quality, Reading
from tests.sites import tiny_png, write_site

CHROMIUM = "/usr/lib/chromium/chromium"
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts"
PASSWORDS = {"zhang": "Anquan-Yuan-4412", "screen": "Wall-Screen-7731"}
NS = 1_000_000_000
T = TypeVar("T")

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium not installed")


def site(tmp_path: Path, mqtt: int, influx: int, http: int) -> SiteConfig:
    return write_site(
        tmp_path / "site.yaml",
        influx_port=influx,
        mqtt_port=mqtt,
        http_port=http,
        lines=[{"id": "crane", "type": "modbus_tcp", "host": "127.0.0.1", "port": local.free_port()}],
        devices=[
            {
                "id": "TC-01",
                "name": "1号塔吊",
                "zone": "北区",
                "profile": "tower_crane_tcp_v1",
                "line": "crane",
                "unit_id": 1,
                "poll_interval_s": 0.25,
                "timeout_s": 0.2,
                "position": {"x_m": 40, "y_m": 30},
                "jib_length_m": 50,
            },
            {
                "id": "FW-A01",
                "position": {"x_m": 90, "y_m": 20},
                "name": "高支模A区 测点01",
                "profile": "formwork_mqtt_v1",
                "broker": "b",
                "topic": "site/t/formwork/+/data",
                "expected_interval_s": 1.0,
            },
            {
                "id": "GAS-01",
                "position": {"x_m": 100, "y_m": 60},
                "name": "1号集水井",
                "zone": "有限空间",
                "profile": "gas_4in1_mqtt_v1",
                "broker": "b",
                "topic": "site/t/gas/+",
                "expected_interval_s": 1.0,
            },
        ],
        plan={"width_m": 120, "height_m": 80, "image": tiny_png(tmp_path / "plan.png").name},
        auth={
            "users": [
                {"name": "zhang", "role": "officer", "password_env": "T_PW_ZHANG", "display_name": "张安全"},
                {"name": "screen", "role": "viewer", "password_env": "T_PW_SCREEN"},
            ]
        },
    )


async def until(fn: Callable[[], Awaitable[T | None]], what: str, timeout_s: float = 20.0) -> T:
    for _ in range(int(timeout_s / 0.1)):
        got = await fn()
        if got:
            return got
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield browser
        finally:
            await browser.close()


async def login(page: Page, base: str, user: str, query: str = "") -> None:
    await page.goto(f"{base}/{query}")
    await page.fill("#login-form input[name=username]", user)
    await page.fill("#login-form input[name=password]", PASSWORDS[user])
    await page.click("#login-form button[type=submit]")
    await page.wait_for_selector("#tiles .tile[data-device='GAS-01']", timeout=10_000)
    await page.wait_for_selector("#stream-state[data-state='live']", timeout=10_000)
    assert await page.is_hidden("#login")


def value_cell(device: str, quantity: str) -> str:
    return f"#tiles .v[data-device='{device}'][data-quantity='{quantity}']"


async def test_console_live_values_alarm_ack_roles_languages_and_layouts(
    tmp_path: Path, mosquitto: Service, influxdb: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, pw in PASSWORDS.items():
        monkeypatch.setenv(f"T_PW_{name.upper()}", pw)
    http = local.free_port()
    base = f"http://127.0.0.1:{http}"
    cfg = site(tmp_path, mosquitto.port, influxdb.port, http)
    ARTIFACTS.mkdir(exist_ok=True)
    async with (
        SiteSimulator(cfg, scenario="normal") as sim,
        Gateway(cfg, fsync=False) as gw,
        httpx.AsyncClient(base_url=base) as api,
        chromium() as browser,
    ):
        await until(lambda: _healthy(api), "the HTTP endpoint")
        # without a login the console page loads (it asks for one) but the stream is refused
        assert (await api.get("/")).status_code == 200
        assert (await api.get("/api/stream")).status_code == 401
        r = await api.post("/api/login", json={"username": "zhang", "password": PASSWORDS["zhang"]})
        officer_h = {"Authorization": f"Bearer {r.json()['token']}"}
        api.cookies.clear()

        officer = await (await browser.new_context(viewport={"width": 1280, "height": 900})).new_page()
        errs: list[str] = []
        officer.on("console", lambda m: errs.append(m.text))
        officer.on("pageerror", lambda e: errs.append(str(e)))
        await login(officer, base, "zhang")

        # ---- live values: pinned simulator values reach the tiles over SSE, and they match /api/latest ----
        sim.set_values("GAS-01", {"co": 3.0})
        await officer.wait_for_function(
            f"document.querySelector(\"{value_cell('GAS-01', 'co')}\")?.textContent === '3.00 ppm'", timeout=10_000
        )
        sim.set_values("GAS-01", {"co": 5.0})  # the same tile, no reload: it changes with the stream
        await officer.wait_for_function(
            f"document.querySelector(\"{value_cell('GAS-01', 'co')}\")?.textContent === '5.00 ppm'", timeout=10_000
        )
        sim.set_values("TC-01", {"wind_speed": 4.2})
        await officer.wait_for_function(
            f"document.querySelector(\"{value_cell('TC-01', 'wind_speed')}\")?.textContent === '4.20 m/s'",
            timeout=10_000,
        )
        latest = (await api.get("/api/latest", headers=officer_h)).json()
        shown = float(await officer.get_attribute(value_cell("TC-01", "wind_speed"), "data-raw") or "nan")
        assert math.isclose(latest["TC-01"]["wind_speed"]["value"], shown, rel_tol=1e-6)
        assert math.isclose(shown, 4.2, rel_tol=1e-6)
        assert "ok" in (await officer.get_attribute("#tile-TC-01", "class") or "")
        # the device page draws recent history from memory
        await officer.click("#tile-TC-01")
        await officer.wait_for_selector("#device svg.chart polyline", timeout=10_000)
        # drawn against the alarm lines of the crane's rules: tc.moment_ratio 90 / 100 / 110 % (GB 5144-2006)
        assert await officer.get_attribute("#device svg.chart", "data-quantity") == "load_moment_ratio"
        lines = await officer.eval_on_selector_all(
            "#device svg.chart .alarm-line", "els => els.map(e => [Number(e.dataset.level), Number(e.dataset.value)])"
        )
        assert sorted(lines) == [[1, 90.0], [2, 100.0], [3, 110.0]], lines

        # ---- the crane drawn live: jib at the slew angle, trolley at the radius, within a second of the reading ----
        jib = 50.0  # jib_length_m of the site file: the jib as drawn
        for slew, radius in ((90.0, 20.0), (215.5, 35.0)):
            sim.set_values("TC-01", {"slew_angle": slew, "radius": radius})

            async def served(s: float = slew, r: float = radius) -> bool:
                v = (await api.get("/api/latest", headers=officer_h)).json()["TC-01"]
                return bool(v["slew_angle"]["value"] == s and v["radius"]["value"] == r)

            await until(served, f"slew {slew} in the API", 10)
            await officer.wait_for_function(  # the page follows within a second of the gateway having it
                f"(() => {{ const e = document.querySelector('#device svg.crane'); return e && "
                f"e.dataset.slew === '{slew:.2f}' && e.dataset.radius === '{radius:.2f}'; }})()",
                timeout=1_000,
            )
            jib_g = officer.locator("#device svg.crane .jib")
            assert await jib_g.get_attribute("transform") == f"rotate({slew:.2f})"
            trolley_y = float(await officer.locator("#device svg.crane .trolley").get_attribute("y") or "nan")
            assert math.isclose(trolley_y, -radius * 100 / jib - 4, abs_tol=0.01)
            assert await officer.locator(f"#tile-TC-01 svg.crane[data-slew='{slew:.2f}']").count() == 1
        await officer.screenshot(path=str(ARTIFACTS / "console-crane.png"), full_page=True)
        await officer.click("#device .back")

        # ---- the site plan: every placed device, coloured, the crane's jib pointing at its slew ----
        await officer.wait_for_selector("#plan svg.siteplan", timeout=5_000)
        placed = await officer.eval_on_selector_all("#plan svg .pt", "els => els.map(e => e.dataset.device)")
        assert sorted(placed) == ["FW-A01", "GAS-01", "TC-01"]
        end = await officer.eval_on_selector(
            "#plan .pt[data-device='TC-01'] .jib", "e => [e.getAttribute('x2'), e.getAttribute('y2')]"
        )
        rad = math.radians(215.5)
        assert math.isclose(float(end[0]), 40 + math.sin(rad) * jib, abs_tol=0.01)
        assert math.isclose(float(end[1]), 30 - math.cos(rad) * jib, abs_tol=0.01)
        assert "ok" in (await officer.get_attribute("#plan .pt[data-device='TC-01']", "class") or "")
        await officer.screenshot(path=str(ARTIFACTS / "console-plan.png"), full_page=True)
        assert await officer.locator("#plan svg image").get_attribute("href") == "/api/plan/image"
        img = await api.get("/api/plan/image", headers=officer_h)
        assert img.status_code == 200 and img.headers["content-type"] == "image/png"
        assert img.content == (tmp_path / "plan.png").read_bytes()
        assert (await api.get("/api/plan/image")).status_code == 401
        await officer.click("#plan .pt[data-device='GAS-01'] .dot")
        await officer.wait_for_selector("#device h2", timeout=5_000)
        assert "GAS-01" in await officer.inner_text("#device h2")
        assert "60 分钟" in await officer.inner_text("#device h3.history")  # gas: the last hour
        await officer.click("#device .back")
        # a formwork point during a pour: its settlement over the 2 h the gateway keeps
        await officer.click("#plan .pt[data-device='FW-A01'] .dot")
        await officer.wait_for_selector("#device svg.chart[data-quantity='settlement']", timeout=10_000)
        assert "120 分钟" in await officer.inner_text("#device h3.history")
        await officer.click("#device .back")

        # ---- a gas leak: the alarm appears in the banner within 2 s of being raised in the API ----
        sim.set_values("GAS-01", {"lel": 30.0})

        async def lel_alarm() -> dict[str, Any] | None:
            rows = (await api.get("/api/alarms", params={"open_only": "true"}, headers=officer_h)).json()
            return next((a for a in rows if a["rule"] == "gas.lel" and a["state"] == "active_unacked"), None)

        alarm = await until(lel_alarm, "gas.lel raised in the API", 30)
        row = f"#banner .alarm[data-alarm-id='{alarm['id']}']"
        await officer.wait_for_selector(row, timeout=2_000)
        assert await officer.get_attribute(row, "data-state") == "active_unacked"
        assert "lvl-2" in (await officer.get_attribute(row, "class") or "")
        text = await officer.inner_text(row)
        assert "报警" in text and alarm["title_zh"] in text and "25.00 %LEL" in text and "GB/T 50493" in text
        await officer.wait_for_selector("#tile-GAS-01.lvl-2", timeout=2_000)  # the tile takes the alarm's colour
        assert await officer.evaluate("document.body.dataset.sounding") == "true"  # the beep repeats while unacked
        await officer.click("#mute")
        assert await officer.evaluate("document.body.dataset.sounding") == "false"
        assert await officer.get_attribute("html", "lang") == "zh-CN"
        assert await officer.inner_text("#overview h2") == "设备"

        # ---- the viewer: a wall screen (kiosk) and a phone; no usable ack button, a forced request is 403 ----
        wall_ctx = await browser.new_context(viewport={"width": 1920, "height": 1080})
        wall = await wall_ctx.new_page()
        await login(wall, base, "screen", "?kiosk=1")
        await wall.wait_for_selector(row, timeout=5_000)
        assert await wall.evaluate("document.body.classList.contains('kiosk')")
        assert not await wall.is_visible("#lang") and not await wall.is_visible(f"{row} .ack")
        assert await wall.evaluate("getComputedStyle(document.body).fontSize") == "24px"
        await wall.screenshot(path=str(ARTIFACTS / "console-wall.png"))
        if os.environ.get("SITEGW_UPDATE_README_SHOT"):  # refresh the README's picture on purpose, not every run
            (ROOT / "docs" / "img").mkdir(parents=True, exist_ok=True)
            shutil.copyfile(ARTIFACTS / "console-wall.png", ROOT / "docs" / "img" / "console-wall.png")

        phone = await (await browser.new_context(viewport={"width": 390, "height": 844})).new_page()
        await login(phone, base, "screen")
        await phone.wait_for_selector(row, timeout=5_000)
        assert await phone.is_disabled(f"{row} .ack")
        boxes = await phone.evaluate(
            "[...document.querySelectorAll('#tiles .tile')].map(e => e.getBoundingClientRect())"
            ".map(r => [Math.round(r.x), Math.round(r.right), Math.round(r.y)])"
        )
        assert len(boxes) == 3
        assert len({x for x, _, _ in boxes}) == 1 and len({y for _, _, y in boxes}) == 3  # one column
        assert all(right <= 390 for _, right, _ in boxes)
        await phone.screenshot(path=str(ARTIFACTS / "console-phone.png"), full_page=True)
        forced = await phone.evaluate(
            f"fetch('/api/alarms/{alarm['id']}/ack', {{method: 'POST', headers: {{'Content-Type': "
            "'application/json'}, body: '{}'}).then(r => r.status)"
        )
        assert forced == 403
        await phone.evaluate(f"ack({alarm['id']})")  # the console's own ack path shows the refusal plainly
        await phone.wait_for_selector("#error:not([hidden])", timeout=5_000)
        assert "403" in await phone.inner_text("#error")
        assert gw.alarms.lifecycle.get(alarm["id"]).state == "active_unacked"

        # ---- the officer acknowledges in the UI: the API says active_acked, every console follows ----
        await officer.click(f"{row} .ack")

        async def acked() -> bool:
            a = (await api.get(f"/api/alarms/{alarm['id']}", headers=officer_h)).json()
            return bool(a["state"] == "active_acked" and a["acked_by"] == "zhang")

        await until(acked, "the alarm acknowledged in the API", 10)
        await officer.wait_for_selector(f"{row}[data-state='active_acked']", timeout=5_000)
        await wall.wait_for_selector(f"{row}[data-state='active_acked']", timeout=5_000)
        assert await officer.locator(f"{row} .ack").count() == 0

        # ---- English ----
        await officer.click("#lang")
        assert await officer.get_attribute("html", "lang") == "en"
        assert await officer.inner_text("#overview h2") == "Devices"
        text = await officer.inner_text(row)
        assert "Alarm" in text and "acknowledged" in text and alarm["title_en"] in text
        assert await officer.inner_text("#lang") == "中文"

        # ---- the gateway's own faults show on every console: the alarm database locked by another process ----
        assert await wall.is_hidden("#gw-health")
        other = sqlite3.connect(cfg.alarms.state_file, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            sim.set_values("GAS-01", {"lel": 60.0})  # 危险: its raise meets the lock
            await wall.wait_for_selector("#gw-health:not([hidden])", timeout=15_000)
            assert "报警数据库无法写入" in await wall.inner_text("#gw-health")
            await officer.wait_for_selector("#gw-health:not([hidden])", timeout=15_000)
            assert "alarm database refuses writes" in await officer.inner_text("#gw-health")
        finally:
            other.execute("ROLLBACK")
            other.close()
        await wall.wait_for_selector("#gw-health", state="hidden", timeout=15_000)
        await wall.wait_for_selector(f"{row}.lvl-3", timeout=5_000)  # the raise stored once the lock was gone

        # ---- a wall screen showing the site plan: the whole plan on one screen, every placed device on it ----
        await wall.goto(f"{base}/?kiosk=1&view=plan")
        await wall.wait_for_selector("#plan svg.siteplan .pt[data-device='GAS-01']", timeout=10_000)
        assert await wall.is_hidden("#overview")
        # the plan is redrawn with every reading: measure, in one go, one that is laid out
        got = await wall.wait_for_function(
            "(() => { const e = document.querySelector('#plan svg.siteplan');"
            " const r = e && e.getBoundingClientRect(); return r && r.height > 0 ? r.toJSON() : null; })()"
        )
        box = await got.json_value()
        assert box["height"] > 500 and box["bottom"] <= 1080 + 0.5  # fills the screen below the alarms, no scroll
        assert await wall.evaluate("document.documentElement.scrollHeight <= innerHeight + 1")
        assert "lvl-3" in (await wall.get_attribute("#plan .pt[data-device='GAS-01']", "class") or "")
        await wall_ctx.close()


async def _healthy(api: httpx.AsyncClient) -> bool:
    try:
        return (await api.get("/healthz")).status_code == 200
    except httpx.TransportError:
        return False


# ---- the stores behind the console, without a browser -------------------------------------------------------------


def test_history_ring_is_bounded_in_points_and_time_and_keeps_the_newest() -> None:
    h = History(window_s=60.0, max_points=10)  # buckets of 6 s
    t0 = 1_750_000_000 * NS
    for i in range(2000):  # 500 s of a crane polled 4 times a second
        h.add([Reading("TC-01", "load", float(i), t0 + i * NS // 4)])
    s = h.series("TC-01", "load", minutes=60)
    pts = s["points"]
    assert 1 < len(pts) <= 10
    assert pts[-1][1] == 1999.0  # the newest value is never lost to bucketing
    assert pts[-1][0] - pts[0][0] <= 60 * NS
    assert all(a[0] < b[0] for a, b in itertools.pairwise(pts))
    assert s["rate_per_day"] == pytest.approx(4 * 86400, rel=0.01)  # 4 units per second
    # a late reading does not go back into the past of the ring
    h.add([Reading("TC-01", "load", -1.0, t0)])
    assert h.series("TC-01", "load", 60)["points"] == pts
    # NaN is shown as null, and bad points do not count towards the rate
    h.add([Reading("GAS-01", "lel", math.nan, t0, Quality.BAD)])
    assert h.series("GAS-01", "lel", 60) == {
        "device": "GAS-01",
        "quantity": "lel",
        "points": [[t0, None, 2]],
        "rate_per_day": None,
    }


def test_history_holds_its_point_budget_whatever_the_number_of_devices() -> None:
    h = History(window_s=7200.0, max_points=1440, budget_points=2_000, series=200)  # 10 points a series
    t0 = 1_750_000_000 * NS
    for i in range(0, 7200, 5):  # 2 h of 200 series, one reading every 5 s
        h.add([Reading(f"GAS-{k:04d}", "lel", float(i), t0 + i * NS) for k in range(200)])
    assert h.points() <= 2_000
    s = h.series("GAS-0199", "lel", minutes=120)
    assert 2 <= len(s["points"]) <= 10
    assert s["points"][-1][1] == 7195.0  # coarser, but the newest value is there
    assert s["rate_per_day"] == pytest.approx(86400, rel=0.01)
    small = History(window_s=7200.0, max_points=1440, budget_points=2_000, series=1)  # a small site keeps full detail
    for i in range(0, 7200, 5):
        small.add([Reading("TC-01", "load", float(i), t0 + i * NS)])
    assert len(small.series("TC-01", "load", minutes=120)["points"]) == 1440


def test_history_rings_share_their_arrays_and_never_mix_their_points() -> None:
    # every ring is a slice of three shared arrays: series added later (growing the arrays) and rings wrapping
    # around keep their own points, each series its own values
    h = History(window_s=60.0, max_points=8, budget_points=10_000, series=3)
    t0 = 1_750_000_000 * NS
    for i in range(100):  # a new series joins every 30 s; each wraps its 8 points many times
        h.add([Reading(f"D{k}", "q", k * 1000.0 + i, t0 + i * NS) for k in range(1 + i // 30)])
    assert len(h._arena[0]) == 4 * 8  # four rings of 8 points, no array of their own
    for k in range(4):
        pts = h.series(f"D{k}", "q", minutes=1)["points"]
        assert pts[-1][1] == k * 1000.0 + 99 and all(int(v) // 1000 == k for _, v, _ in pts), k
        assert all(a[0] < b[0] for a, b in itertools.pairwise(pts))


def test_history_keeps_9_bytes_a_point_for_weeks_of_uptime_and_shows_7_digits() -> None:
    # times are uint32 ms after a ring's t0 and values float32: 60 days of a reading a minute never overflow (the
    # ring moves t0 up), every time shown is the reading's to the ms, every value to 7 significant digits
    h = History(window_s=7200.0, max_points=200, budget_points=1_000, series=2)
    t0 = 1_750_000_000 * NS + 123_456_789  # not on a whole second: times are kept to the ms
    minute = 60 * NS
    days = 60
    for i in range(days * 1440):
        h.add([Reading("TC-01", "load", 20.9 + (i % 7), t0 + i * minute)])
    assert h._arena[0].itemsize == 4 and h._arena[1].itemsize == 4 and h._arena[2].itemsize == 1
    pts = h.series("TC-01", "load", minutes=120)["points"]
    last = days * 1440 - 1
    assert len(pts) == 121  # two hours a minute apart, both ends in
    assert [ts for ts, _, _ in pts] == [(t0 + k * minute) // 1_000_000 * 1_000_000 for k in range(last - 120, last + 1)]
    assert [v for _, v, _ in pts] == [round(20.9 + (k % 7), 1) for k in range(last - 120, last + 1)]
    # quiet for 60 days, then a reading: only it is shown; a value beyond float32 shows as null, like NaN
    h.add([Reading("TC-01", "load", 123.456789, t0 + (last + 60 * 1440) * minute)])
    assert h.series("TC-01", "load", minutes=120)["points"] == [
        [(t0 + (last + 60 * 1440) * minute) // 1_000_000 * 1_000_000, 123.4568, 0]
    ]
    h.add([Reading("TC-01", "load", 1e39, t0 + (last + 60 * 1440 + 1) * minute, Quality.UNCERTAIN)])
    assert h.series("TC-01", "load", minutes=120)["points"][-1][1:] == [None, 1]
    with pytest.raises(ValueError, match="window_s"):
        History(window_s=8 * 86400.0)


async def test_slow_client_queue_is_bounded_and_told_to_resync() -> None:
    h = History()
    slow = h.hub.subscribe()
    fast = h.hub.subscribe()
    t0 = 1_750_000_000 * NS
    got: list[str] = []
    for i in range(1000):
        h.add([Reading("GAS-01", "lel", float(i), t0 + i * NS)])
        frame = await fast.next(1.0)
        assert frame is not None
        got.append(frame)
        assert len(slow.queue) <= h.hub.queue_events
    assert all(f.startswith("event: reading\n") for f in got)
    assert got[-1].endswith('["GAS-01","lel",999.0,' + str(t0 + 999 * NS) + ',"good"]]\n\n')
    # the slow client missed events: its queue was emptied with a resync marker first, then newer events follow
    first = await slow.next(1.0)
    assert first is not None and first.startswith("event: resync\n")
    assert slow.dropped > 0 and len(slow.queue) < h.hub.queue_events
    h.hub.unsubscribe(slow)
    h.hub.unsubscribe(fast)
    assert await fast.next(0.05) is None  # nothing more: the stream would send a heartbeat
    h.add([Reading("GAS-01", "lel", 1.0, t0 + 2000 * NS)])
    assert not fast.queue
