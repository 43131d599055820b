"""The web console in a real Chromium (Playwright) against a running gateway fed by the simulators: live values over
SSE, an alarm in the banner, acknowledgement from the UI, the viewer's limits, both languages, wall and phone layouts;
plus the bounded history rings and per-client event queues behind it."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import shutil
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from playwright.async_api import Browser, Page, async_playwright

from gateway.api.live import STREAMS_PER_USER
from gateway.app import Gateway
from gateway.config import SiteConfig
from services import local
from services.local import Service
from simulators.runner import SiteSimulator
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

        # ---- over the live-stream limit: a console says why its stream is refused, and is live once one closes ----
        async with contextlib.AsyncExitStack() as held:
            for _ in range(STREAMS_PER_USER - 1):  # the officer's console holds the last of zhang's
                r = await held.enter_async_context(api.stream("GET", "/api/stream", headers=officer_h))
                assert r.status_code == 200
            second = await officer.context.new_page()  # another tab of the same session (English, as set above)
            asked: list[float] = []
            second.on("request", lambda q: asked.append(time.monotonic()) if q.url.endswith("/api/stream") else None)
            await second.goto(base)
            await second.wait_for_selector("#stream-state[data-state='refused']", timeout=10_000)
            said = await second.inner_text("#stream-state")
            assert "too many live streams of zhang: at most 8 at a time per user" in said and "again in 3 s" in said
            # it tries again every 3 s (an EventSource and a fetch), saying why all along: each watchdog tick (1 s)
            # started a retry chain of its own, and the requests grew without bound (a second review)
            t0, states = time.monotonic(), []
            while time.monotonic() - t0 < 12:
                states.append(await second.get_attribute("#stream-state", "data-state"))
                await asyncio.sleep(0.2)
            first, last = (sum(t0 + a <= t < t0 + a + 6 for t in asked) for a in (0, 6))
            assert last <= 6 and last <= first + 2, (first, last)
            assert states.count("refused") >= 0.8 * len(states), states
        await second.wait_for_selector("#stream-state[data-state='live']", timeout=10_000)
        await second.close()

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
