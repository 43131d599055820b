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
            return cells if cells and cells[-1].startswith("剩余") else None

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
    assert hid == 1  # the site's first hazard
