"""The console's survey import in a real Chromium: a report with a typo is refused and every wrong row and column
is listed; the corrected report imports; a viewer has no import at all."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from gateway.app import Gateway
from services import local
from services.local import Service
from tests.browser.test_console import ARTIFACTS, CHROMIUM, chromium
from tests.integration.test_survey_import import report
from tests.sites import write_site
from tests.surveys import PLAN, SURVEYS, survey_days

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium not installed")
PASSWORDS = {"wang": "Jiance-Yuan-5521", "screen": "Wall-Screen-7731"}


async def test_the_console_imports_a_report_or_lists_what_is_wrong(
    tmp_path: Path, influxdb: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, pw in PASSWORDS.items():
        monkeypatch.setenv(f"T_PW_{name.upper()}", pw)
    http = local.free_port()
    base = f"http://127.0.0.1:{http}"
    cfg = write_site(
        tmp_path / "site.yaml",
        influx_port=influxdb.port,
        http_port=http,
        devices=[
            {
                "id": "ZQT-3",
                "name": "冠梁 ZQT-3",
                "profile": "excavation_survey_v1",
                "expected_interval_s": 86400,
                "warning_values": {"horizontal_displacement": {"cumulative": 30, "rate_per_day": 3, "source": PLAN}},
            }
        ],
        auth={
            "users": [
                {"name": "wang", "role": "officer", "password_env": "T_PW_WANG"},
                {"name": "screen", "role": "viewer", "password_env": "T_PW_SCREEN"},
            ]
        },
    )
    days = survey_days()
    typo = list(SURVEYS)
    typo[7], typo[9] = "15,5 mm", "十九"
    (tmp_path / "typo.xlsx").write_bytes(report(days, typo))
    (tmp_path / "good.xlsx").write_bytes(report(days, SURVEYS))
    async with Gateway(cfg, fsync=False), chromium() as browser, httpx.AsyncClient(base_url=base) as api:
        for _ in range(100):
            if not local.port_free(http):
                break
            await asyncio.sleep(0.1)
        page = await browser.new_page(viewport={"width": 1280, "height": 900})
        await page.goto(f"{base}/")
        await page.fill("#login-form input[name=username]", "wang")
        await page.fill("#login-form input[name=password]", PASSWORDS["wang"])
        await page.click("#login-form button[type=submit]")
        await page.wait_for_selector("#surveys:not([hidden])", timeout=10_000)
        await page.set_input_files("#survey-file", str(tmp_path / "typo.xlsx"))
        await page.wait_for_selector("#survey-result ul.err li", timeout=10_000)
        items = await page.locator("#survey-result li").all_inner_texts()
        assert items == [
            "第 10 行，累计变化量(mm) 列：'15,5 mm' 不是数字",
            "第 12 行，累计变化量(mm) 列：'十九' 不是数字",
        ]
        assert "整份文件未导入" in await page.inner_text("#survey-result")
        await page.set_input_files("#survey-file", str(tmp_path / "good.xlsx"))
        await page.wait_for_selector("#survey-result p.ok", timeout=10_000)
        assert await page.inner_text("#survey-result p.ok") == "已导入 15 行：ZQT-3（导入编号 1）"
        await page.screenshot(path=str(tmp_path / "survey.png"))
        # the imported surveys raised the excavation alarms: the banner shows the 报警 with when it was measured
        await page.wait_for_selector("#banner .alarm", timeout=10_000)
        # the device page shows what the rules compare (the change from the baseline) beside the surveyed reading
        await page.goto(f"{base}/#/device/ZQT-3")
        cell = page.locator("#device td.v[data-quantity='horizontal_displacement']")
        await cell.wait_for(timeout=10_000)
        baselines = (await api.get("/api/baselines", headers=await _auth(api, "wang"))).json()
        assert [(b["device"], b["quantity"]) for b in baselines] == [("ZQT-3", "horizontal_displacement")]
        change = 30.0 - baselines[0]["value"]
        await page.wait_for_function(
            "document.querySelector(\"#device td.v[data-quantity='horizontal_displacement']\").innerText"
            ".startsWith('累计变化')",
            timeout=5_000,
        )
        assert await cell.inner_text() == f"累计变化 {'+' if change > 0 else ''}{change:.2f} mm (读数 30.00 mm)"
        # over days, against the point's 预警值 lines: 70 % and 100 % of 30 mm, and of 3 mm/d for the rate
        await page.wait_for_selector("#chart-days svg.chart circle.day", timeout=10_000)
        assert await page.locator("#chart-days circle.day").count() == len(SURVEYS)
        levels = "els => els.map(e => [Number(e.dataset.level), Math.round(Number(e.dataset.value) * 100) / 100])"
        # displacement is judged either way (|change|): the lines stand on both sides
        days_lines = sorted(await page.eval_on_selector_all("#chart-days .alarm-line", levels))
        assert days_lines == [[1, -21.0], [1, 21.0], [2, -30.0], [2, 30.0]]
        assert await page.locator("#chart-rate circle.day").count() == len(SURVEYS) - 1
        rate_lines = sorted(await page.eval_on_selector_all("#chart-rate .alarm-line", levels))
        assert [x for x in rate_lines if x[1] > 0] == [[1, 2.1], [2, 3.0]]
        await page.screenshot(path=str(ARTIFACTS / "console-excavation.png"), full_page=True)
        r = await api.post("/api/login", json={"username": "screen", "password": PASSWORDS["screen"]})
        assert r.status_code == 200
        viewer = await browser.new_page()
        await viewer.goto(f"{base}/")
        await viewer.fill("#login-form input[name=username]", "screen")
        await viewer.fill("#login-form input[name=password]", PASSWORDS["screen"])
        await viewer.click("#login-form button[type=submit]")
        await viewer.wait_for_selector("#main:not([hidden])", timeout=10_000)
        assert await viewer.is_hidden("#surveys")
        forced = await api.post(
            "/api/surveys",
            json={"filename": "x.csv", "content_b64": "eA=="},
            headers={"Authorization": f"Bearer {r.json()['token']}"},
        )
        assert forced.status_code == 403


async def _auth(api: httpx.AsyncClient, user: str) -> dict[str, str]:
    r = await api.post("/api/login", json={"username": user, "password": PASSWORDS[user]})
    api.cookies.clear()
    return {"Authorization": f"Bearer {r.json()['token']}"}
