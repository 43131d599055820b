"""The whole HTTP API fuzzed from its own OpenAPI schema (schemathesis) against a real running gateway (`sitegw run`,
real MQTT and InfluxDB), logged in as an admin: every answer is below 500. Bounded: a few examples per operation, no
shrinking, no example database. Cases that once found a 5xx are kept below as plain regression tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings

from services import local
from services.local import Service, wait_for
from tests.sites import http_up, start_gateway, write_site
from tests.surveys import PLAN

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "fuzz-" + "k" * 40  # a machine token (admin): /api/logout in the fuzzing cannot end it
AUTH = {"Authorization": f"Bearer {TOKEN}"}
EXAMPLES = int(os.environ.get("SITEGW_FUZZ_EXAMPLES", "25"))


@pytest.fixture(scope="module")
def gateway_url(tmp_path_factory: pytest.TempPathFactory, mosquitto: Service, influxdb: Service) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("fuzz")
    http = local.free_port()
    site = tmp / "site.yaml"
    write_site(
        site,
        influx_port=influxdb.port,
        mqtt_port=mosquitto.port,
        http_port=http,
        devices=[
            {"id": "GAS-F1", "profile": "gas_4in1_mqtt_v1", "broker": "b", "topic": "site/fz/gas/+"},
            {
                "id": "PIT-F1",
                "profile": "excavation_survey_v1",
                "expected_interval_s": 86400,
                "warning_values": {"horizontal_displacement": {"cumulative": 30, "rate_per_day": 3, "source": PLAN}},
            },
        ],
        auth={
            "users": [{"name": "li", "role": "manager", "password_env": "T_PW_FUZZ"}],
            "tokens": [{"name": "fuzzer", "role": "admin", "token_env": "T_FUZZ_TOKEN"}],
        },
    )
    proc = start_gateway(site, tmp / "gateway.log", {"T_PW_FUZZ": "pw-fuzz-1", "T_FUZZ_TOKEN": TOKEN})
    base = f"http://127.0.0.1:{http}"
    try:
        wait_for(lambda: http_up(base), 30, 0.2, "the gateway's HTTP API")
        yield base
    finally:
        proc.terminate()
        proc.wait(20)
        assert "Traceback" not in (tmp / "gateway.log").read_text(), "the gateway logged an unhandled error"


@pytest.fixture(scope="module")
def api_schema(gateway_url: str) -> Any:
    schema = schemathesis.openapi.from_url(f"{gateway_url}/openapi.json")
    # the live stream never ends (server-sent events): it is tested by the console tests, not fuzzed
    return schema.exclude(path="/api/stream")


def test_no_request_gets_a_server_error(api_schema: Any) -> None:
    """Each operation in its own bounded Hypothesis run; every 5xx is collected, then all are reported together."""
    found: list[str] = []
    operations = [r.ok() for r in api_schema.get_all_operations()]
    assert len(operations) >= 30, [op.label for op in operations]  # the schema describes the whole API

    for op in operations:

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            phases=[Phase.explicit, Phase.generate],  # no shrinking: the failing case is printed as it came
            suppress_health_check=list(HealthCheck),
        )
        @given(case=op.as_strategy())
        def run(case: Any) -> None:
            response = case.call(headers=AUTH, timeout=15)
            if response.status_code >= 500:
                found.append(
                    f"{case.method} {case.formatted_path} query={case.query} body={case.body!r} -> "
                    f"{response.status_code}: {response.text[:200]}"
                )
            elif response.status_code >= 400:
                try:
                    doc = response.json()
                except ValueError:
                    doc = None
                assert isinstance(doc, dict) and doc.get("detail"), (
                    f"{case.operation.label}: a refusal says why: {response.text!r}"
                )

        run()
    assert not found, "\n".join(found[:20])


# ---- cases that once answered 500, kept as regressions -------------------------------------------------------------

REGRESSIONS: list[tuple[str, str, dict[str, Any] | None, Any, int]] = [
    ("GET", "/openapi.json", None, None, 200),  # a forward reference in /health's return type
    ("GET", "/api/alarms", {"until": "9999-12-31"}, None, 200),  # OverflowError into SQLite; now clamped
    ("GET", "/api/alarms", {"since": "1000-01-01"}, None, 200),
    ("GET", "/api/alarms", {"limit": str(2**70)}, None, 422),
    # found by the fuzzing: ids beyond SQLite's 64-bit integers (OverflowError)
    ("GET", "/api/alarms/21173298118134027255808", None, None, 422),
    ("POST", "/api/alarms/1716832774225591854432256/comment", None, {"text": "["}, 422),
    ("GET", "/api/hazards/52488242479300893286756004275840614400", None, None, 422),
    # wrong JSON types in a hazard body (AttributeError on .strip() of an int)
    ("POST", "/api/hazards", None, {"unit_name": 5, "description": ["x"], "source": {}}, 422),
    ("POST", "/api/hazards", None, [1, 2], 422),  # a JSON body that is no object
]


@pytest.mark.parametrize(("method", "path", "params", "body", "code"), REGRESSIONS)
def test_former_server_errors_are_answered(
    gateway_url: str, method: str, path: str, params: dict[str, Any] | None, body: Any, code: int
) -> None:
    r = httpx.request(method, gateway_url + path, params=params, json=body, headers=AUTH, timeout=15)
    assert r.status_code == code, r.text
    if code == 200:
        assert r.json()["paths"] if path == "/openapi.json" else isinstance(r.json(), list)
    else:
        assert r.json()["detail"]


def test_a_hazard_action_with_wrong_json_types_names_the_fields(gateway_url: str) -> None:
    report = {"unit_name": "某项目", "description": "临边防护缺失", "source": "inspection"}
    hid = httpx.post(f"{gateway_url}/api/hazards", json=report, headers=AUTH, timeout=15).json()["id"]
    r = httpx.post(f"{gateway_url}/api/hazards/{hid}/confirm", json={"klass": "general"}, headers=AUTH, timeout=15)
    assert r.status_code == 200, r.text
    bad = {"responsible": 7, "measures": None, "deadline": 20250101}
    r = httpx.post(f"{gateway_url}/api/hazards/{hid}/assign", json=bad, headers=AUTH, timeout=15)
    assert r.status_code == 422
    assert all(f in r.json()["detail"] for f in ("responsible", "measures", "deadline")), r.text
    assert httpx.get(f"{gateway_url}/api/hazards/{hid}", headers=AUTH, timeout=15).json()["status"] == "confirmed"
