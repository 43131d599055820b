"""The zh-CN console speaks Chinese: every page (overview with an alarm and a hazard from it, each device page, the
site plan, the login page) is scanned for Latin words; only device ids, unit symbols, standard codes and the
language switch may remain. One vocabulary: a hazard state reads the same in the console and in the ledger."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Page

from alerting.glossary import STATUS_ZH
from gateway.app import Gateway
from services import local
from services.local import Service
from simulators.runner import SiteSimulator
from tests.browser.test_console import CHROMIUM, PASSWORDS, _healthy, chromium, login, site, until

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium not installed")

WORD = re.compile(r"[A-Za-z][A-Za-z_]+")
# standard codes (GB, GB/T, GBZ, JGJ, DB …) and terms inside them (PC-TWA, PC-STEL of GBZ 2.1)
STANDARD_TOKENS = {"GB", "GBZ", "JGJ", "DB", "HJ", "PC", "TWA", "STEL", "MAC"}
# the product's name, the switch to English (written in English on purpose), the file formats a surveyor uploads
ALWAYS = {"SiteGW", "English", "CSV", "XLSX"}


def allowed(meta: dict) -> set[str]:
    ok = set(ALWAYS) | STANDARD_TOKENS
    for d in meta["devices"]:
        ok |= set(WORD.findall(d["id"])) | set(WORD.findall(d["name"] or ""))
    for q in meta["quantities"].values():
        if q["unit"] != "state":
            ok |= set(WORD.findall(q["unit"]))
    return ok


async def latin_words(page: Page, ok: set[str]) -> set[str]:
    text = await page.evaluate("document.body.innerText")
    return {w for w in WORD.findall(text) if w not in ok}


async def test_every_zh_page_is_chinese_and_one_state_has_one_name(
    tmp_path: Path, mosquitto: Service, influxdb: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, pw in PASSWORDS.items():
        monkeypatch.setenv(f"T_PW_{name.upper()}", pw)
    http = local.free_port()
    base = f"http://127.0.0.1:{http}"
    cfg = site(tmp_path, mosquitto.port, influxdb.port, http)
    async with (
        SiteSimulator(cfg, scenario="normal") as sim,
        Gateway(cfg, fsync=False) as gw,
        httpx.AsyncClient(base_url=base) as api,
        chromium() as browser,
    ):
        await until(lambda: _healthy(api), "the HTTP endpoint")
        page = await (await browser.new_context(viewport={"width": 1280, "height": 900})).new_page()
        await page.goto(base)
        await page.wait_for_selector("#login-form")
        login_words = await latin_words(page, ALWAYS)
        assert login_words == set(), login_words
        assert await page.is_hidden("#logout")  # nobody to sign out yet

        r = await api.post("/api/login", json={"username": "zhang", "password": PASSWORDS["zhang"]})
        auth = {"Authorization": f"Bearer {r.json()['token']}"}
        api.cookies.clear()
        meta = (await api.get("/api/console", headers=auth)).json()
        ok = allowed(meta)

        # an alarm and a hazard record from it, so the banner and the hazard list have something to say
        sim.set_values("GAS-01", {"lel": 30.0})
        alarm = await until(lambda: _alarm(gw), "gas.lel raised", 30)
        hz = (await api.post(f"/api/alarms/{alarm}/hazard", headers=auth)).json()
        await login(page, base, "zhang")
        await page.wait_for_selector(f"#banner .alarm[data-alarm-id='{alarm}']", timeout=10_000)
        await page.wait_for_selector(f".hazard[data-hazard-id='{hz['id']}']", timeout=40_000)
        found = {"overview": await latin_words(page, ok)}
        for dev in meta["devices"]:
            await page.goto(f"{base}/#/device/{dev['id']}")
            await page.wait_for_selector("#device h2", timeout=5_000)
            await page.wait_for_selector("#device td.v", timeout=10_000)
            found[dev["id"]] = await latin_words(page, ok)
        bad = {k: v for k, v in found.items() if v}
        assert not bad, f"Latin words on zh pages: {bad}"

        # in English too, no raw key or enum (a key the dictionaries lack comes out as itself: level_2, q_good …)
        await page.goto(base)
        await page.click("#lang")
        raw = re.compile(r"\b[a-z]+(?:_[a-z0-9]+)+\b")
        for where in ["", *(f"#/device/{d['id']}" for d in meta["devices"])]:
            await page.goto(f"{base}/{where}")
            await page.wait_for_selector("#main:not([hidden])", timeout=5_000)
            if where:
                await page.wait_for_selector("#device td.v", timeout=10_000)
            text = await page.evaluate("document.body.innerText")
            assert not raw.findall(text), (where, sorted(set(raw.findall(text))))
            if not where:  # English names are longer: in narrow tiles a value still stays on one line
                await page.set_viewport_size({"width": 760, "height": 900})  # two columns of the narrowest tiles
                wrapped = await page.evaluate(
                    "[...document.querySelectorAll('#tiles .v, #tiles .rate')]"
                    ".filter((e) => e.getClientRects().length > 1).map((e) => e.textContent)"
                )
                assert wrapped == [], wrapped
                await page.set_viewport_size({"width": 1280, "height": 900})
        await page.click("#lang")  # back to Chinese for what follows
        assert "可燃气体" in hz["description"] and "[S+]" not in hz["description"]  # no raw point, no tag

        # a refusal is said in Chinese too: an officer trying a manager's action
        await page.evaluate(
            f"api('POST', '/api/hazards/{hz['id']}/confirm', {{klass: 'general'}}).catch((e) => showError(e.message))"
        )
        await page.wait_for_selector("#error:not([hidden])", timeout=5_000)
        assert await page.inner_text("#error") == "需要项目经理权限（当前为安全员）"
        await page.evaluate(
            f"api('POST', '/api/hazards/{hz['id']}/submit', {{evidence: 'x'}}).catch((e) => showError(e.message))"
        )
        await page.wait_for_function("document.querySelector('#error').innerText.startsWith('隐患')", timeout=5_000)
        assert await page.inner_text("#error") == f"隐患 #{hz['id']} 当前为待核实，不能提交复查（整改中时才可以）"

        # one name per state: the console's word for the hazard's state is the ledger's
        await page.goto(base)
        shown = await page.inner_text(f".hazard[data-hazard-id='{hz['id']}'] .hstatus")
        assert shown == STATUS_ZH[hz["status"]] == "待核实"
        r = await api.post(f"/api/hazards/{hz['id']}/confirm", json={"klass": "general"}, headers=auth)
        assert r.status_code == 403  # an officer may not classify; the manager's word is tested in the API tests
        rows = list(csv.reader(io.StringIO((await api.get("/api/ledger.csv", headers=auth)).text.lstrip("\ufeff"))))
        assert rows[0][0] == "序号"


async def _alarm(gw: Gateway) -> int | None:
    return next((a.id for a in gw.alarms.lifecycle.open_alarms() if a.rule == "gas.lel"), None)
