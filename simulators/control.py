"""Tiny HTTP JSON control API on 127.0.0.1: set faults, pin and release values, read the served state."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from http import HTTPStatus
from typing import Any

from simulators.runner import SiteSimulator

log = logging.getLogger(__name__)
_MAX_BODY = 1 << 20


class ControlServer:
    """POST /fault, /set, /release with a JSON body; GET /state and /health. One request per connection."""

    def __init__(self, sim: SiteSimulator, port: int, host: str = "127.0.0.1") -> None:
        self.sim = sim
        self.host = host
        self.port = port
        self.server: asyncio.Server | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, self.host, self.port)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(10):
                method, path, body = await _read_request(reader)
            status, obj = await self._route(method, path, body)
        except (ValueError, UnicodeDecodeError, TimeoutError, asyncio.IncompleteReadError) as err:
            status, obj = HTTPStatus.BAD_REQUEST, {"error": str(err) or type(err).__name__}
        data = json.dumps(obj, ensure_ascii=False).encode()
        head = (
            f"HTTP/1.1 {status.value} {status.phrase}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
        )
        with contextlib.suppress(ConnectionError):  # the client may already be gone
            writer.write(head.encode() + data)
            await writer.drain()
            writer.close()
            await writer.wait_closed()

    async def _route(self, method: str, path: str, body: bytes) -> tuple[HTTPStatus, Any]:
        path = path.split("?", 1)[0].rstrip("/")
        if method == "GET" and path == "/health":
            return HTTPStatus.OK, {"status": "ok", "devices": len(self.sim.devices), "faults": self.sim.faults()}
        if method == "GET" and path == "/state":
            return HTTPStatus.OK, self.sim.state()
        if method != "POST" or path not in ("/fault", "/set", "/release"):
            return HTTPStatus.NOT_FOUND, {"error": f"no route {method} {path}"}
        data = json.loads(body or b"{}")
        if not isinstance(data, dict) or not isinstance(data.get("device"), str):
            raise ValueError('expected a JSON object with "device"')
        try:
            if path == "/fault":
                await self.sim.set_fault(data["device"], str(data.get("mode", "")))
            elif path == "/set":
                values = data.get("values")
                if not isinstance(values, dict):
                    raise ValueError('expected "values": {quantity: number}')
                self.sim.set_values(data["device"], {str(q): _number(v) for q, v in values.items()})
            else:
                self.sim.release(data["device"])
        except KeyError as err:
            return HTTPStatus.NOT_FOUND, {"error": err.args[0]}
        log.info("control: %s %s", path, data)
        return HTTPStatus.OK, {"ok": True, "device": data["device"], "current": self.sim.current(data["device"])}


def _number(v: Any) -> float:
    if not isinstance(v, int | float):  # bool is an int: true/false pin a state quantity to 1/0
        raise ValueError(f"not a number: {v!r}")
    return float(v)


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, bytes]:
    method, path, _version = (await reader.readline()).decode("latin-1").split(" ", 2)
    length = 0
    while (line := (await reader.readline()).decode("latin-1").strip()) != "":
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    if not 0 <= length <= _MAX_BODY:
        raise ValueError("bad Content-Length")
    return method.upper(), path, await reader.readexactly(length) if length else b""
