"""Site configs for tests, written to a temp dir with the ports of the services the test started."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import yaml

from gateway.config import SiteConfig, load_config


def write_site(
    path: Path,
    *,
    influx_port: int | None = None,
    vm_port: int | None = None,
    mqtt_port: int | None = None,
    devices: list[dict[str, Any]],
    lines: list[dict[str, Any]] | None = None,
    spool: dict[str, Any] | None = None,
    http_port: int | None = None,
    plan: dict[str, Any] | None = None,
    broker: dict[str, Any] | None = None,
    **extra: Any,
) -> SiteConfig:
    for d in devices:
        if "broker" in d:
            d.setdefault("expected_interval_s", 1.0)
    doc: dict[str, Any] = {"site": {"id": "t", "name": "测试 工地,A=1"}, "devices": devices}
    if plan is not None:
        doc["site"]["plan"] = plan
    if lines:
        doc["lines"] = lines
    if mqtt_port:
        doc["brokers"] = [
            {
                "id": "b",
                "host": "127.0.0.1",
                "port": mqtt_port,
                "dead_letter_topic": "t/deadletter",
                "client_id": f"sitegw-test-{path.parent.name}"[:60],
                **(broker or {}),
            }
        ]
    if influx_port:
        doc["sink"] = {
            "type": "influxdb_v1",
            "url": f"http://127.0.0.1:{influx_port}",
            "database": f"db_{path.parent.name}"[:60].replace("-", "_"),
        }
    elif vm_port:
        doc["sink"] = {"type": "influxdb_v2", "url": f"http://127.0.0.1:{vm_port}", "org": "o", "bucket": "b"}
    doc["spool"] = {"dir": "spool", **(spool or {})}
    if http_port:
        doc["http"] = {"port": http_port}
    doc.update(extra)
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return load_config(path)


def db_of(cfg: SiteConfig) -> str:
    return cfg.sink.database  # type: ignore[union-attr]


def officer_site(path: Path, influx_port: int, monkeypatch: Any, password: str) -> tuple[SiteConfig, int]:
    """A site with one survey point, an HTTP endpoint on a free port and one officer, `zhang`, with `password`."""
    from services import local

    monkeypatch.setenv("T_PW_ZHANG", password)
    http = local.free_port()
    cfg = write_site(
        path / "site.yaml",
        influx_port=influx_port,
        http_port=http,
        devices=[{"id": "P1", "profile": "excavation_survey_v1", "expected_interval_s": 86400}],
        auth={"users": [{"name": "zhang", "role": "officer", "password_env": "T_PW_ZHANG"}]},
    )
    return cfg, http


def tiny_png(path: Path, w: int = 40, h: int = 30) -> Path:
    """A real PNG (grey, w x h) for site-plan drawings in tests."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + b"\xc8" * (3 * w) for _ in range(h))
    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    )
    return path


ROOT = Path(__file__).resolve().parents[1]


def start_gateway(site: Path, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """`sitegw run SITE` as its own process (what an operator starts), its output appended to `log`."""
    with open(log, "ab") as fh:
        return subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "run", str(site)],
            stdout=fh,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env={**os.environ, **(env or {})},
        )


def http_up(base: str) -> bool:
    """The gateway's /healthz answers (False while it is not listening yet)."""
    try:
        return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def health(base: str) -> dict[str, Any] | None:
    """GET /health once the gateway has swept (ready or degraded); None while it does not answer or is starting,
    so that a check for a reason's absence cannot pass on a gateway that is not up."""
    try:
        doc: dict[str, Any] = httpx.get(f"{base}/health", timeout=3).json()
    except (httpx.TransportError, ValueError):
        return None
    return doc if doc.get("status") in ("ready", "degraded") else None


def reasons(base: str) -> dict[str, dict[str, Any]] | None:
    """/health's reasons by code (each with its detail); None as for `health`."""
    doc = health(base)
    return None if doc is None else {r["code"]: r for r in doc["reasons"]}
