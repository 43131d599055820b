"""Bounded input: an oversized login body is refused before it is read, memory stays flat, readings keep flowing."""

from __future__ import annotations

import asyncio
import resource
import socket
from pathlib import Path

import pytest

from gateway.app import Gateway
from services import local
from services.local import Service, wait_for
from tests.sites import write_site

MB = 1024 * 1024


def _rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _post(port: int, path: str, headers: str, chunks: int, chunk: bytes) -> bytes:
    """A raw client: the request line and headers, then body chunks until the server answers or closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"POST {path} HTTP/1.1\r\nHost: gw\r\n{headers}\r\n".encode())
        try:
            for _ in range(chunks):
                s.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed: the rest of the body was never read
        s.settimeout(10)
        try:
            return s.recv(4096)
        except ConnectionResetError:
            return b""


async def test_a_200_mb_login_body_is_refused_and_readings_keep_flowing(
    tmp_path: Path, mosquitto: Service, influxdb: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("T_PW_ZHANG", "Anquan-Yuan-4412")
    http = local.free_port()
    cfg = write_site(
        tmp_path / "site.yaml",
        influx_port=influxdb.port,
        mqtt_port=mosquitto.port,
        http_port=http,
        devices=[{"id": "FW-1", "profile": "formwork_mqtt_v1", "broker": "b", "topic": "lim/x/fw/+/data"}],
        auth={"users": [{"name": "zhang", "role": "officer", "password_env": "T_PW_ZHANG"}]},
    )
    async with Gateway(cfg, fsync=False) as gw:
        await asyncio.to_thread(wait_for, lambda: not local.port_free(http), 10, what="the HTTP endpoint")
        before = _rss_mb()
        # declared: refused from the headers alone, nothing read
        head = f"Content-Type: application/json\r\nContent-Length: {200 * MB}\r\n"
        answer = await asyncio.to_thread(_post, http, "/api/login", head, 1, b"{" * 1024)
        assert answer.startswith(b"HTTP/1.1 413")
        # chunked, no length: refused as soon as the bytes pass the login limit (4 KiB)
        chunked = "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
        piece = b"%x\r\n%s\r\n" % (MB, b"a" * MB)
        answer = await asyncio.to_thread(_post, http, "/api/login", chunked, 200, piece)
        assert answer.startswith(b"HTTP/1.1 413")
        assert _rss_mb() - before < 50
        assert gw.metrics.http_refused["413"] == 2
        # the gateway goes on: a login of the right size works, and MQTT readings are still taken in
        import httpx

        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http}") as api:
            ok = await api.post("/api/login", json={"username": "zhang", "password": "Anquan-Yuan-4412"})
            assert ok.status_code == 200
            metrics = (await api.get("/metrics")).text
        assert 'sitegw_http_refused_total{code="413"} 2' in metrics
        import paho.mqtt.client as paho

        pub = paho.Client(paho.CallbackAPIVersion.VERSION2)
        pub.connect("127.0.0.1", mosquitto.port)
        pub.loop_start()
        try:
            await asyncio.wait_for(gw.sessions[0].connected.wait(), 10)
            pub.publish(
                "lim/x/fw/FW-1/data", b'{"ts": 1795224600000, "data": {"settlement": 1.5}}', qos=1
            ).wait_for_publish(5)
            await asyncio.to_thread(wait_for, lambda: gw.metrics.readings_by_driver["mqtt"] >= 1, 10, what="a reading")
        finally:
            pub.loop_stop()
            pub.disconnect()
