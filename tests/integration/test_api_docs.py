"""docs/api.md is executed: every ```http example is sent, in order, to a real running gateway, and the answer's
status and the fields the ```json block after it shows must match. A request body the docs show is one that works."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config import SiteConfig, load_config
from services.local import Service
from tests.integration import test_api as harness
from tests.integration.test_api import running, until
from tests.surveys import WARNING

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"
BLOCK = re.compile(r"```http\n(?P<req>.*?)```\s*```json\n// (?P<status>\d{3})\n(?P<resp>.*?)```", re.S)


def examples() -> list[dict[str, Any]]:
    """(method, path, user, body, status, expected) of every example, in the document's order."""
    out = []
    for m in BLOCK.finditer(DOC.read_text(encoding="utf-8")):
        head, _, body = m["req"].partition("\n\n")
        lines = head.strip().splitlines()
        method, path = lines[0].split(" ", 1)
        user = None
        for h in lines[1:]:
            if h.lower().startswith("authorization:"):
                user = re.fullmatch(r"Authorization: Bearer <(\w+)'s token>", h)[1]  # type: ignore[index]
        expected = json.loads(m["resp"]) if m["resp"].strip() else None
        out.append(
            {
                "method": method,
                "path": path,
                "user": user,
                "body": json.loads(body) if body.strip() else None,
                "status": int(m["status"]),
                "expected": expected,
                "line": DOC.read_text(encoding="utf-8")[: m.start()].count("\n") + 1,
            }
        )
    return out


def subset(expected: Any, got: Any, where: str = "") -> None:
    """Every field the docs show is in the answer with that value (lists: element by element)."""
    if isinstance(expected, dict):
        assert isinstance(got, dict), f"{where}: expected an object, got {got!r}"
        for k, v in expected.items():
            assert k in got, f"{where}.{k}: missing in {sorted(got)}"
            subset(v, got[k], f"{where}.{k}")
    elif isinstance(expected, list):
        assert isinstance(got, list) and len(got) >= len(expected), f"{where}: {got!r}"
        for i, v in enumerate(expected):
            subset(v, got[i], f"{where}[{i}]")
    else:
        assert expected == got, f"{where}: the docs say {expected!r}, the gateway answered {got!r}"


def test_the_document_has_an_example_for_every_request_body() -> None:
    shown = {(e["method"], re.sub(r"/\d+", "/{id}", e["path"])) for e in examples()}
    for route in (
        ("POST", "/api/login"),
        ("POST", "/api/logout"),
        ("POST", "/api/alarms/{id}/ack"),
        ("POST", "/api/alarms/{id}/comment"),
        ("POST", "/api/alarms/{id}/shelve"),
        ("POST", "/api/alarms/{id}/unshelve"),
        ("POST", "/api/alarms/{id}/reset"),
        ("POST", "/api/alarms/{id}/hazard"),
        ("POST", "/api/devices/FW-A01/suppress"),
        ("DELETE", "/api/devices/FW-A01/suppress/maintenance"),
        ("PUT", "/api/baselines/FW-A01/settlement"),
        ("DELETE", "/api/baselines/FW-A01/settlement"),
        ("POST", "/api/surveys"),
        ("POST", "/api/inspections"),
        ("PUT", "/api/plan/image"),
        ("POST", "/api/hazards"),
        *(("POST", f"/api/hazards/{{id}}/{a}") for a in ("confirm", "assign", "list_supervision", "mark_reported",
                                                           "submit", "accept", "reject", "reopen", "dismiss")),
    ):  # fmt: skip
        assert route in shown, f"docs/api.md has no example for {route}"


async def test_every_example_in_the_api_document_runs_as_shown(
    tmp_path: Path, mosquitto: Service, influxdb: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(harness, "site", _site_with_a_survey_point)
    async with running(tmp_path, mosquitto, influxdb, monkeypatch) as s:
        # what the document says is there: alarm 1 (gas 30 %LEL), alarm 2 (the crane's bypass key, latched)
        await s.gas(lel=30.0)
        await until(lambda: s.alarm("gas.lel", "GAS-01"), "gas.lel alarm")
        await s.crane(bypass=1)
        await until(lambda: s.alarm("tc.bypass_switch", "TC-M1"), "bypass alarm")
        s.clock.advance(1)
        await s.crane(bypass=0)
        await until(lambda: s.alarm("tc.bypass_switch", "TC-M1", lambda a: a.state == "latched"), "latched")
        assert [a.id for a in s.gw.alarms.lifecycle.open_alarms()] == [1, 2]

        ran = 0
        for ex in examples():
            where = f"docs/api.md line {ex['line']}: {ex['method']} {ex['path']}"
            headers = {} if ex["user"] is None else await s.as_(ex["user"])
            r = await s.api.request(ex["method"], ex["path"], json=ex["body"], headers=headers)
            s.api.cookies.clear()
            assert r.status_code == ex["status"], f"{where}: {r.status_code} {r.text}"
            if ex["expected"] is not None:
                subset(ex["expected"], r.json(), where)
            if ex["path"] == "/api/logout":
                s.headers.pop(ex["user"], None)
            s.clock.advance(60)
            ran += 1
        assert ran >= 33
        # the drawing the admin uploaded is the one served, and the upload is audited
        img = await s.api.get("/api/plan/image", headers=await s.as_("view"))
        assert img.status_code == 200 and img.headers["content-type"] == "image/png" and len(img.content) == 72
        assert [a[1] for a in s.audit("target = 'plan:image'")] == ["plan.image"]


def _site_with_a_survey_point(tmp_path: Path, mqtt: int, influx: int, http: int) -> SiteConfig:
    """The API tests' site plus ZQT-3, an excavation survey point with its design 预警值 (for /api/surveys and
    /api/inspections)."""
    _original_site(tmp_path, mqtt, influx, http)
    path = tmp_path / "site.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["site"]["plan"] = {"width_m": 120, "height_m": 80}  # for PUT /api/plan/image
    data["devices"].append(
        {"id": "ZQT-3", "profile": "excavation_survey_v1", "expected_interval_s": 86400, "warning_values": WARNING}
    )
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return load_config(path)


_original_site = harness.site
