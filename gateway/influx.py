"""The database writers: InfluxDB 1.x /write (aiohttp) and the v2 API (influxdb-client)."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

BODY_SLICE = 64 * 1024


class SlicedBody(aiohttp.BytesPayload):
    """A request body handed to the socket 64 KiB at a time, the event loop free between slices. In one piece, a
    second's lines (1 MB at 10k readings/s) held the loop for up to 5 ms while the kernel delivered them over
    loopback: the alarms that arrived meanwhile were the alarm latency's tail."""

    async def write(self, writer: Any) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(self, writer: Any, content_length: int | None) -> None:
        view = memoryview(self._value)[:content_length]
        for i in range(0, len(view), BODY_SLICE):
            await writer.write(view[i : i + BODY_SLICE])
            await asyncio.sleep(0)


class WriteError(Exception):
    """A write the database did not accept. `retryable` says whether sending the same lines again can succeed."""

    def __init__(self, message: str, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class InfluxV1Writer:
    """InfluxDB 1.x: POST /write?db=&precision=ns, raw line protocol (1.6.7 has no /api/v2/write).

    aiohttp rather than httpx: measured on the same machine, a 100-line POST cost 2.1 CPU-ms with httpx and 0.43 with
    aiohttp, which was a third of a Modbus site's CPU (`bench/peer_thingsboard.py`). aiohttp is already installed for
    influxdb-client's async API.
    """

    def __init__(
        self,
        url: str,
        database: str,
        retention_policy: str | None = None,
        username: str | None = None,
        password: str | None = None,
        timeout_s: float = 10.0,
        create_database: bool = True,
    ) -> None:
        self.url = url.rstrip("/")
        self.database = database
        self.rp = retention_policy
        self.create_database = create_database
        self._auth = aiohttp.BasicAuth(username, password or "") if username else None
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None  # made on first use, inside the running event loop
        self._db_ready = False
        self.target = f"{self.url} db={database}"

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout, auth=self._auth)
        return self._session

    async def _post(self, path: str, params: dict[str, str], data: bytes | None = None) -> tuple[int, str]:
        """(status, first 300 characters of the body); connection problems and timeouts become a retryable error."""
        try:
            payload = None if data is None else SlicedBody(data)
            async with self._http().post(f"{self.url}{path}", params=params, data=payload) as r:
                body = "" if r.status == 204 else (await r.text(errors="replace"))[:300]
                return r.status, body
        except (aiohttp.ClientError, OSError, TimeoutError) as err:
            raise WriteError(f"{self.target}: {type(err).__name__}: {err}", retryable=True) from err

    async def _ensure_db(self) -> None:
        if self._db_ready or not self.create_database:
            return
        # CREATE DATABASE is idempotent in 1.x; it is how a fresh server gets the database
        status, _ = await self._post("/query", {"q": f'CREATE DATABASE "{self.database}"'})
        if status in (401, 403):
            raise WriteError(f"{self.target}: not allowed to create the database ({status})", retryable=True)
        self._db_ready = status == 200

    async def write(self, data: bytes) -> None:
        params = {"db": self.database, "precision": "ns"}
        if self.rp:
            params["rp"] = self.rp
        await self._ensure_db()
        status, body = await self._post("/write", params, data)
        if status == 204:
            return
        if status == 404 and "database not found" in body:
            self._db_ready = False
            raise WriteError(f"{self.target}: database not found", retryable=True)
        # 400: bad line or field type conflict; 413: batch too large (the writer splits it)
        retryable = status >= 500 or status in (401, 403, 404, 408, 429)
        raise WriteError(f"{self.target}: HTTP {status}: {body}", retryable=retryable)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


class InfluxV2Writer:
    """InfluxDB 2.x/3.x (and VictoriaMetrics) through influxdb-client's async write API, precision ns."""

    def __init__(self, url: str, org: str, bucket: str, token: str | None, timeout_s: float = 10.0) -> None:
        from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync

        self.bucket = bucket
        self.org = org
        self.target = f"{url} bucket={bucket}"
        self._client = InfluxDBClientAsync(url=url, token=token or "", org=org, timeout=int(timeout_s * 1000))
        self._api = self._client.write_api()

    async def write(self, data: bytes) -> None:
        from aiohttp import ClientError
        from influxdb_client.client.exceptions import InfluxDBError
        from influxdb_client.domain.write_precision import WritePrecision

        try:
            await self._api.write(bucket=self.bucket, org=self.org, record=data, write_precision=WritePrecision.NS)  # type: ignore[arg-type]
        except InfluxDBError as err:
            status = getattr(getattr(err, "response", None), "status", None) or 0
            retryable = status >= 500 or status in (0, 401, 403, 404, 408, 429)
            raise WriteError(
                f"{self.target}: HTTP {status}: {err.message if hasattr(err, 'message') else err}", retryable=retryable
            ) from err
        except (ClientError, OSError, TimeoutError) as err:
            raise WriteError(f"{self.target}: {type(err).__name__}: {err}", retryable=True) from err

    async def aclose(self) -> None:
        await self._client.close()  # type: ignore[no-untyped-call]
