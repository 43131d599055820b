"""The influxdb-client v2 write path (/api/v2/write) into a real VictoriaMetrics, read back via its export API."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import paho.mqtt.client as paho

from gateway.app import Gateway
from services.local import Service, vm_export, wait_for
from tests.sites import write_site


async def test_v2_path_into_victoriametrics(tmp_path: Path, mosquitto: Service, victoria: Service) -> None:
    cfg = write_site(
        tmp_path / "site.yaml",
        vm_port=victoria.port,
        mqtt_port=mosquitto.port,
        devices=[
            {
                "id": "FW-V2",
                "zone": "B区",
                "profile": "formwork_mqtt_v1",
                "broker": "b",
                "topic": "site/v2/formwork/+/data",
            }
        ],
    )
    t0 = 1795224600_000
    async with Gateway(cfg) as gw:
        await asyncio.wait_for(gw.sessions[0].connected.wait(), 10)
        c = paho.Client(paho.CallbackAPIVersion.VERSION2)
        c.connect("127.0.0.1", mosquitto.port)
        c.loop_start()
        for i in range(50):
            c.publish(
                "site/v2/formwork/FW-V2/data", json.dumps({"ts": t0 + i * 1000, "data": {"settlement": i * 0.5}}), qos=1
            ).wait_for_publish(5)
        c.loop_stop()
        c.disconnect()
        await asyncio.to_thread(wait_for, lambda: gw.metrics.mqtt_messages >= 50, 10, what="50 messages")
        assert await gw.flush(20)
        assert gw.metrics.write_failures == 0

    def exported() -> list[dict[str, object]]:
        got = vm_export(victoria.port, '{__name__="formwork_settlement",device="FW-V2"}')
        return got if got and len(got[0]["values"]) == 50 else []  # type: ignore[arg-type]

    series = await asyncio.to_thread(wait_for, exported, 20, what="50 samples in VictoriaMetrics")
    assert len(series) == 1
    s = series[0]
    assert s["metric"] == {"__name__": "formwork_settlement", "device": "FW-V2", "site": "t", "zone": "B区"}
    assert s["values"] == [i * 0.5 for i in range(50)]
    assert s["timestamps"] == [t0 + i * 1000 for i in range(50)]
