"""The wall screen (?kiosk=1) in a real Chromium at 1920x1080 and 3840x2160 on a site of 200 gas detectors, first
with no alarm, then with 20 real alarms: nothing scrolls, nothing is cut off, and within one paging cycle every alarm
and every device is shown whole on the screen."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as paho
import pytest
from playwright.async_api import Page

from gateway.app import Gateway
from services import local
from services.local import Service
from tests.browser.test_console import ARTIFACTS, CHROMIUM, _healthy, chromium, until
from tests.sites import write_site

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium not installed")

N_DEVICES = 200
N_ALARMS = 20
PASSWORD = "Wall-Screen-7731"
IDS = [f"GAS-{i:03d}" for i in range(1, N_DEVICES + 1)]


def publish(port: int, lel: dict[str, float]) -> None:
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="wall-detectors")
    c.connect("127.0.0.1", port)
    c.loop_start()
    infos = []
    for dev, v in lel.items():
        lel_reading = {"gas": "EX", "value": v, "unit": "%LEL"}
        doc = {"sn": dev, "time": datetime.now(UTC).isoformat(), "readings": [lel_reading], "status": {"fault": 0}}
        infos.append(c.publish(f"site/w/gas/{dev}", json.dumps(doc), qos=1))
    for i in infos:
        i.wait_for_publish(10)
    c.loop_stop()
    c.disconnect()


# Everything of a section shown now: visible (not hidden) and wholly inside the viewport.
SHOWN = """(sel) => [...document.querySelectorAll(sel)].filter((e) => {
  if (e.closest('[hidden]')) return false;
  const r = e.getBoundingClientRect();
  return r.height > 0 && r.top >= -0.5 && r.left >= -0.5
    && r.bottom <= innerHeight + 0.5 && r.right <= innerWidth + 0.5;
}).map((e) => e.dataset.alarmId || e.dataset.device)"""


async def one_cycle(page: Page) -> tuple[set[str], set[str], list[int]]:
    """Alarm ids and device ids shown over one full paging cycle (driven by hand: wallFlip), and the page counts."""
    pages = [int(x) for x in (await page.evaluate("document.body.dataset.wallPages")).split(",")]
    alarms: set[str] = set()
    devices: set[str] = set()
    for _ in range(max(pages)):
        # a wall screen never scrolls: the document is exactly one screen
        assert await page.evaluate("document.documentElement.scrollHeight <= innerHeight + 1")
        alarms |= set(await page.evaluate(SHOWN, "#banner > .alarm"))
        devices |= set(await page.evaluate(SHOWN, "#tiles > .tile"))
        cut = await page.evaluate(
            "[...document.querySelectorAll('#banner > .alarm, #tiles > .tile, #hazard-list > .hazard')]"
            ".filter((e) => !e.closest('[hidden]')).filter((e) => { const r = e.getBoundingClientRect();"
            " return r.bottom > innerHeight + 0.5 || r.right > innerWidth + 0.5; }).length"
        )
        assert cut == 0, "an item is shown cut off"
        await page.evaluate("wallFlip()")
    return alarms, devices, pages


async def test_every_alarm_and_device_is_shown_within_one_paging_cycle(
    tmp_path: Path, mosquitto: Service, influxdb: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("T_PW_SCREEN", PASSWORD)
    http = local.free_port()
    base = f"http://127.0.0.1:{http}"
    gas = {"profile": "gas_4in1_mqtt_v1", "broker": "b", "expected_interval_s": 3600}
    cfg = write_site(
        tmp_path / "site.yaml",
        influx_port=influxdb.port,
        mqtt_port=mosquitto.port,
        http_port=http,
        devices=[{"id": d, "name": f"{i + 1}号检测点", "topic": f"site/w/gas/{d}", **gas} for i, d in enumerate(IDS)],
        auth={"users": [{"name": "screen", "role": "viewer", "password_env": "T_PW_SCREEN"}]},
    )
    ARTIFACTS.mkdir(exist_ok=True)
    async with Gateway(cfg, fsync=False) as gw, httpx.AsyncClient(base_url=base) as api, chromium() as browser:
        await until(lambda: _healthy(api), "the HTTP endpoint")
        await asyncio.to_thread(publish, mosquitto.port, dict.fromkeys(IDS, 2.0))
        await until(lambda: _seen(gw, N_DEVICES), "a reading from every detector", 30)

        screens: dict[str, Any] = {}
        for name, (w, h) in {"1080p": (1920, 1080), "4k": (3840, 2160)}.items():
            ctx = await browser.new_context(viewport={"width": w, "height": h})
            page = await ctx.new_page()
            await page.goto(f"{base}/?kiosk=1&page_s=3600")  # pages flipped by the test, not the clock
            await page.fill("#login-form input[name=username]", "screen")
            await page.fill("#login-form input[name=password]", PASSWORD)
            await page.click("#login-form button[type=submit]")
            await page.wait_for_selector(f"#tiles .tile[data-device='{IDS[-1]}']", state="attached", timeout=10_000)
            await page.wait_for_selector("#stream-state[data-state='live']", timeout=10_000)
            await page.wait_for_function("document.body.dataset.wallPages", timeout=5_000)
            alarms, devices, pages = await one_cycle(page)
            assert alarms == set() and devices == set(IDS), (name, len(devices), pages)
            assert await page.inner_text("#banner") == "无活动告警"
            screens[name] = (ctx, page)

        # 20 detectors at 30 %LEL: 报警 (GB/T 50493-2019 5.5.2)
        await asyncio.to_thread(publish, mosquitto.port, {d: 30.0 for d in IDS[:N_ALARMS]})
        await until(lambda: _alarms(api, gw), "20 gas alarms", 30)
        ids = {str(a.id) for a in gw.alarms.lifecycle.open_alarms()}
        assert len(ids) == N_ALARMS
        for name, (ctx, page) in screens.items():
            await page.wait_for_function(
                f"document.querySelectorAll('#banner > .alarm').length === {N_ALARMS}", timeout=10_000
            )
            await page.evaluate("wallLayout()")
            summary = await page.inner_text("#banner .alarm-summary")
            assert f"告警 {N_ALARMS} 条" in summary and f"报警 {N_ALARMS}" in summary
            alarms, devices, pages = await one_cycle(page)
            assert alarms == ids, (name, sorted(ids - alarms), pages)
            assert devices == set(IDS), (name, sorted(set(IDS) - devices)[:5], pages)
            if pages[0] > 1:
                assert "第 1/" in summary  # the summary says which page of alarms is shown
            await page.screenshot(path=str(ARTIFACTS / f"wall-{name}.png"))
            await ctx.close()


async def _seen(gw: Gateway, n: int) -> bool:
    return sum(1 for v in gw.metrics.up.values() if v == 1) >= n


async def _alarms(api: httpx.AsyncClient, gw: Gateway) -> bool:
    return len([a for a in gw.alarms.lifecycle.open_alarms() if a.rule == "gas.lel"]) >= N_ALARMS
