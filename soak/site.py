"""The soak's copy of the demo site: free ports, its own spool and alarm state, generated logins."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from services import local

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "simulators" / "sites" / "demo.yaml"


@dataclass
class SoakSite:
    path: Path
    doc: dict[str, Any]
    mqtt_port: int
    influx_port: int
    http_port: int
    control_port: int
    env: dict[str, str] = field(default_factory=dict)

    @property
    def db(self) -> str:
        return str(self.doc["sink"]["database"])

    @property
    def state_file(self) -> Path:
        return self.path.parent / str(self.doc["alarms"]["state_file"])

    @property
    def dead_letter_topic(self) -> str:
        return str(self.doc["brokers"][0]["dead_letter_topic"])

    @property
    def siren_topic(self) -> str:
        return next(str(c["topic"]) for c in self.doc["escalation"]["channels"] if c["id"] == "siren")


def write_site(run: Path) -> SoakSite:
    """Copy demo.yaml into `run` the way services/demo.py does, but always on free ports (a soak may run beside
    a demo or the test suite)."""
    doc: dict[str, Any] = yaml.safe_load(DEMO.read_text(encoding="utf-8"))
    plan = doc["site"].get("plan") or {}
    if plan.get("image"):  # the copy lives elsewhere: the drawing stays where demo.yaml is
        plan["image"] = str(DEMO.parent / plan["image"])
    mqtt_port, influx_port, http_port, control_port = (local.free_port() for _ in range(4))
    doc["brokers"][0]["port"] = mqtt_port
    doc["brokers"][0]["client_id"] = f"sitegw-soak-{run.name}"[:60]
    doc["sink"]["url"] = f"http://127.0.0.1:{influx_port}"
    doc["http"] = {"host": "127.0.0.1", "port": http_port}
    for ln in doc["lines"]:
        if ln["type"] == "modbus_tcp":
            ln["port"] = local.free_port()
    env = {u["password_env"]: secrets.token_urlsafe(12) for u in doc["auth"]["users"]}
    path = run / "site.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return SoakSite(path, doc, mqtt_port, influx_port, http_port, control_port, env)
