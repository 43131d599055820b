"""The regional hub's web page in Chromium (issue 16): a county's official logs in, sees only the county's site, a
major hazard confirmed at that site with its same-day report clock counting down, and drills down into the site."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.demo_region import Region, raise_major_hazard
from tests.browser.test_console import ARTIFACTS, CHROMIUM, chromium, until

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium not installed")


async def test_a_county_sees_its_major_hazard_and_its_clock_on_the_hub_page(region: Region) -> None:
    xw = region.sites[0]  # 玄武区's site; the county's login is "xuanwu"
    async with chromium() as browser:
        page = await browser.new_page(viewport={"width": 1600, "height": 1000})
        await page.goto(region.hub_url + "/")
        await page.fill("#login input[name=username]", "xuanwu")
        await page.fill("#login input[name=password]", "wrong-password")
        await page.click("#login button[type=submit]")
        await page.wait_for_function("document.querySelector('#error').textContent.length > 0")
        assert "wrong user name or password" in (await page.text_content("#error") or "")
        await page.fill("#login input[name=password]", region.hub_passwords["xuanwu"])
        await page.click("#login button[type=submit]")
        await page.wait_for_selector("#app:not([hidden])")
        hid = raise_major_hazard(xw)

        async def clock_row() -> list[str] | None:
            cells = await page.eval_on_selector_all("#majors tbody tr td", "tds => tds.map(t => t.textContent)")
            # counting down ("剩余 …"), or, when the run crosses the region's midnight, already overdue ("已超期 …")
            return cells if cells and cells[-1].startswith(("剩余", "已超期")) else None

        cells = await until(clock_row, "the major hazard with its same-day clock on the page", 30)
        assert cells[1] == xw.id and "力矩限制器" in cells[2] and cells[3] == "已判定"
        sites = await page.eval_on_selector_all("#sites tbody tr", "trs => trs.map(t => t.dataset.site)")
        assert sites == [xw.id]  # the county's one site, not the others of the province
        tree = await page.text_content("#tree") or ""
        assert "玄武区 滨江综合体项目" in tree and "苏州市" not in tree and "江宁区" not in tree
        await page.click(f"#sites tbody tr[data-site='{xw.id}']")
        await page.wait_for_selector("#detail:not([hidden])")
        detail = await page.text_content("#detail-body") or ""
        assert "力矩限制器" in detail
        await page.screenshot(path=str(ARTIFACTS / "hub-county.png"))
        assert await page.locator("#detail .notice-form").count() == 0  # a viewer sends no notices

        # the province's supervisor sends a supervision notice from the drill-down; the site's manager answers it
        # on the site's console; the hub shows the answer
        prov = await browser.new_page(viewport={"width": 1600, "height": 1000})
        await prov.goto(region.hub_url + "/")
        await prov.fill("#login input[name=username]", "sheng")
        await prov.fill("#login input[name=password]", region.hub_passwords["sheng"])
        await prov.click("#login button[type=submit]")
        await prov.click(f"#sites tbody tr[data-site='{xw.id}']")
        await prov.fill("#detail .notice-form textarea", "塔吊力矩限制器失效，立即停用并于今日报告")
        await prov.click("#detail .notice-form button[type=submit]")
        await prov.wait_for_selector(
            "#detail table.notices td:has-text('待收取'), #detail table.notices td:has-text('已收到')"
        )
        site = await browser.new_page(viewport={"width": 1600, "height": 1000})
        await site.goto(xw.base + "/")
        await site.fill("#login-form input[name=username]", "li")
        await site.fill("#login-form input[name=password]", xw.passwords["li"])
        await site.click("#login-form button[type=submit]")
        await site.wait_for_selector("#notices:not([hidden]) .notice.open", timeout=40_000)
        assert "立即停用" in (await site.text_content("#notices .notice-text") or "")
        await site.fill("#notices .notice-form input[name=note]", "已停用塔吊，更换限制器")
        await site.click("#notices .notice-form button[type=submit]")
        await site.wait_for_selector("#notices .notice:not(.open) .notice-ack")
        await site.screenshot(path=str(ARTIFACTS / "site-notice.png"))

        async def answered() -> str | None:
            await prov.click(f"#sites tbody tr[data-site='{xw.id}']")
            cells = await prov.eval_on_selector_all("#detail table.notices td", "tds => tds.map(t => t.textContent)")
            return next((c for c in cells if "更换限制器" in c), None)

        assert await until(answered, "the site's answer on the hub page", 30) == "li：已停用塔吊，更换限制器"
        await prov.screenshot(path=str(ARTIFACTS / "hub-notice.png"))
    assert hid == 1  # the site's first hazard
