"""The session's socket reader over TLS (drivers/mqtt/reader.py `Inbox`): packets that arrived in one TLS record are
all read, also past the reader's per-wake limit, though decrypted bytes (and bytes it read off the socket already)
never wake the event loop.

Mosquitto writes each packet in a record of its own, so the broker here is a minimal MQTT 3.1.1 server over real
TLS (Python's ssl, the test CA of test_mqtt_security) that sends a burst of QoS 0 publishes in one write."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Callable
from pathlib import Path

import pytest

import drivers.mqtt.reader as mqtt_reader
from gateway.supervisor import run_stream
from telemetry.reading import Reading
from tests.integration.test_mqtt_ack import session
from tests.integration.test_mqtt_security import make_certs

TOPIC = "tls/site/formwork/FW-1/data"


async def _packet(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One MQTT packet: (type and flags byte, body)."""
    head = (await reader.readexactly(1))[0]
    length, shift = 0, 0
    while True:
        b = (await reader.readexactly(1))[0]
        length |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            break
    return head, await reader.readexactly(length)


def _publish(topic: str, payload: bytes) -> bytes:
    """A QoS 0 PUBLISH (remaining length under 128 bytes)."""
    body = len(topic).to_bytes(2, "big") + topic.encode() + payload
    assert len(body) < 128
    return bytes([0x30, len(body)]) + body


@pytest.mark.parametrize(("per_wake", "records"), [(1, "one"), (64, "one"), (64, "each")])
async def test_a_burst_in_one_tls_record_is_read_whole(
    tmp_path: Path, per_wake: int, records: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`records` "each": the burst as Mosquitto sends it, a TLS record per packet, all arriving together. A TLS
    recv returns one record at most, so a short read does not mean an empty socket there: the reader reads on
    until it finds nothing, and the burst is one batch."""
    make_certs(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(tmp_path / "server.crt", tmp_path / "server.key")
    n = 5
    packets = [
        _publish(TOPIC, json.dumps({"ts": 1795224600_000 + i, "data": {"settlement": float(i)}}).encode())
        for i in range(n)
    ]
    burst = b"".join(packets)

    async def broker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head, body = await _packet(reader)
                if head >> 4 == 1:  # CONNECT -> CONNACK
                    writer.write(bytes([0x20, 2, 0, 0]))
                elif head >> 4 == 8:  # SUBSCRIBE -> SUBACK (QoS 0 granted), then the burst in one write
                    writer.write(bytes([0x90, 3]) + body[:2] + b"\x00")
                    await writer.drain()
                    if records == "one":
                        writer.write(burst)  # one write, one TLS record: five packets
                    else:
                        for p in packets:  # a record each, sent together at the drain below
                            writer.write(p)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(broker, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    # the reader's limit per wake: 1 leaves four decrypted packets that no socket event announces
    monkeypatch.setattr(mqtt_reader, "READS_PER_WAKE", per_wake)
    got: list[float] = []
    all_in = asyncio.Event()

    sizes: list[int] = []

    async def submit(readings: list[Reading], on_spooled: Callable[[], object] | None = None) -> None:
        sizes.append(len(readings))
        got.extend(r.value for r in readings)
        if on_spooled:
            on_spooled()
        if len(got) >= n:
            all_in.set()

    s = session(
        port,
        submit,
        "tls/site/formwork/+/data",
        client_id="sitegw-tls-reads",
        keepalive_s=60,  # no keep-alive traffic within the test to wake the reader by chance
        tls_ca=str(tmp_path / "ca.crt"),
        use_tls=True,
    )
    task = asyncio.create_task(run_stream(s), name="mqtt-session")
    try:
        await asyncio.wait_for(all_in.wait(), 10)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        server.close()
        await server.wait_closed()
    assert got == [float(i) for i in range(n)]
    if per_wake > 1:
        assert sizes == [n]  # one wake, one batch
