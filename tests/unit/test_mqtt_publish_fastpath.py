"""The session reader's own PUBLISH decoding (drivers/mqtt/publish.py, through drivers/mqtt/reader.py
`Inbox._take_publishes`) against paho's: the same byte streams, cut at random places, written into a real socket and
read by an Inbox with and without it, must give the same messages in the same order; paho's decoder (MQTT 3.1.1) is
the reference."""

from __future__ import annotations

import random
import socket
from typing import Any

import aiomqtt
import pytest

from drivers.mqtt.reader import RECV_BYTES, Inbox

PINGRESP = b"\xd0\x00"


def remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def publish(topic: bytes, payload: bytes, qos: int, mid: int = 0, dup: bool = False, retain: bool = False) -> bytes:
    """A PUBLISH packet as MQTT 3.1.1 section 3.3 lays it out (written here, not by paho, which decodes it)."""
    head = 0x30 | (0x08 if dup else 0) | (qos << 1) | (0x01 if retain else 0)
    body = len(topic).to_bytes(2, "big") + topic + (mid.to_bytes(2, "big") if qos else b"") + payload
    return bytes([head]) + remaining_length(len(body)) + body


class Wire:
    """An Inbox reading one end of a socket pair; the test writes the broker's bytes into the other end."""

    def __init__(self, fast: bool) -> None:
        self.client = aiomqtt.Client("127.0.0.1", 1)  # never connected: its paho client reads the pair's socket
        self.inbox = Inbox(self.client)
        self.inbox._fast = fast
        self.ours, self.broker = socket.socketpair()
        self.ours.setblocking(False)
        paho = self.client._client
        paho._sock = self.ours
        paho.manual_ack_set(True)  # as the session has it: a QoS 1 message is acknowledged after its fsync
        paho.on_socket_register_write = None  # what paho sends (a PUBREC) it writes at once, not from the loop
        self.got: list[tuple[str, bytes, int, int, bool]] = []

    def feed(self, data: bytes) -> None:
        self.broker.sendall(data)
        self.inbox.read()
        self.got.extend(self.inbox._items)
        self.inbox._items = []

    def close(self) -> None:
        self.broker.close()
        self.ours.close()


def stream(rng: random.Random, n: int) -> tuple[bytes, list[tuple[str, bytes, int, int]]]:
    """n packets: QoS 0 and 1 PUBLISHes (topics with CJK, payloads whose length takes 1 to 3 bytes, one longer than
    a read), PINGRESPs between them; and the messages they carry."""
    packets, messages = [], []
    for _ in range(n):
        if rng.random() < 0.1:
            packets.append(PINGRESP)
            continue
        topic = f"site/{rng.choice(['塔吊', 'gas', 'jk'])}/C{rng.randrange(10 ** rng.randrange(1, 40))}/data"
        size = rng.choice([0, 1, 90, 120, 126, 16_370, 16_400, 2_097_000 // 32, RECV_BYTES + 7])
        payload = rng.randbytes(size)
        qos = rng.randrange(2)
        mid = rng.randrange(1, 65536) if qos else 0
        retain = rng.random() < 0.2  # (taken by paho, told apart: drivers/mqtt/session.py `_retained`)
        packets.append(publish(topic.encode(), payload, qos, mid, dup=rng.random() < 0.2, retain=retain))
        messages.append((topic, payload, mid, qos, retain))
    return b"".join(packets), messages


def cuts(rng: random.Random, data: bytes) -> list[bytes]:
    """The stream as the socket might give it: pieces from 1 byte to 3 reads long."""
    out, pos = [], 0
    while pos < len(data):
        step = rng.choice([1, 2, 5, 100, 183, 4096, RECV_BYTES, 3 * RECV_BYTES])
        out.append(data[pos : pos + step])
        pos += step
    return out


@pytest.mark.parametrize("seed", range(12))
async def test_the_same_messages_as_paho_whatever_the_cuts(seed: int) -> None:
    rng = random.Random(seed)
    data, messages = stream(rng, 60)
    pieces = cuts(rng, data)
    results: dict[bool, list[Any]] = {}
    for fast in (False, True):
        w = Wire(fast)
        try:
            for piece in pieces:
                w.feed(piece)
            results[fast] = w.got
            if fast:
                assert w.inbox.taken > 0  # the fast way was taken (paho's reads those that arrive cut)
            else:
                assert w.inbox.taken == 0
        finally:
            w.close()
    assert results[False] == messages  # paho reads the stream as written
    assert results[True] == messages


async def test_whole_packets_never_reach_paho() -> None:
    """Site rates: each message arrives whole; every one is taken off the buffer, none through paho's reader, and
    paho's keep-alive still sees that bytes arrived."""
    w = Wire(fast=True)
    paho = w.client._client
    read = paho._packet_read
    paho_reads: list[int] = []

    def counting() -> Any:
        paho_reads.append(1)
        return read()

    paho._packet_read = counting  # type: ignore[method-assign]
    paho._last_bytes_received = 0.0
    try:
        for i in range(50):
            w.feed(publish(f"bench/crane/C{i:04d}/data".encode(), b'{"load": %d}' % i, 1, i + 1))
        assert [m[2] for m in w.got] == list(range(1, 51))
        assert w.got[7] == ("bench/crane/C0007/data", b'{"load": 7}', 8, 1, False)
        assert w.inbox.taken == 50 and paho_reads == []
        assert paho._last_bytes_received > 0
    finally:
        w.close()


async def test_what_it_does_not_decode_is_left_to_paho() -> None:
    """A QoS 2 PUBLISH (paho answers PUBREC and holds it for the PUBREL), a PINGRESP, and a packet cut by the end of
    the read go to paho; the messages around them come in order either way."""
    w = Wire(fast=True)
    paho = w.client._client
    try:
        a = publish(b"t/a", b"1", 1, 11)
        q2 = publish(b"t/q2", b"2", 2, 12)
        b = publish(b"t/b", b"3", 0)
        c = publish(b"t/c", b"x" * 300, 1, 13)
        w.feed(a + q2 + PINGRESP + b + c[:50])
        w.feed(c[50:])
        assert [m[0] for m in w.got] == ["t/a", "t/b", "t/c"]
        assert 12 in paho._in_messages  # paho's: waiting for its PUBREL
        w.broker.settimeout(5)
        assert w.broker.recv(100) == b"\x50\x02\x00\x0c"  # paho's PUBREC for mid 12 (and no PUBACK: manual)
        assert w.inbox.taken == 2  # t/a and t/b; t/c came cut and paho read it
    finally:
        w.close()


async def test_a_malformed_packet_ends_the_connection_as_paho_would() -> None:
    """An empty topic is malformed in MQTT 3.1.1: paho says so and the connection ends; the message before it is
    delivered, nothing after it is."""
    ended: dict[bool, Any] = {}
    got: dict[bool, Any] = {}
    for fast in (False, True):
        w = Wire(fast)
        try:
            w.feed(publish(b"t/ok", b"1", 1, 1) + publish(b"", b"2", 1, 2) + publish(b"t/after", b"3", 1, 3))
            got[fast] = w.got
            ended[fast] = w.client._client._sock is None
        finally:
            w.close()
    assert got[True] == got[False] == [("t/ok", b"1", 1, 1, False)]
    assert ended[True] and ended[False]


class ResetOnce:
    """A socket whose first recv fails as a reset connection does, then reads on (what review found swallowed)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.failed = False

    def recv(self, n: int) -> bytes:
        if not self.failed:
            self.failed = True
            raise ConnectionResetError(104, "Connection reset by peer")
        return self.sock.recv(n)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)


@pytest.mark.parametrize("fast", [False, True])
async def test_a_read_error_ends_the_connection_either_way(fast: bool) -> None:
    """paho meets the error (and logs it) whether or not the reader's own decoding read first; nothing after it
    is handed out."""
    w = Wire(fast)
    paho = w.client._client
    paho._sock = ResetOnce(w.ours)
    try:
        w.feed(publish(b"t/after", b"1", 1, 1))
        assert w.got == []
        assert paho._sock is None  # paho ended the connection
    finally:
        w.close()


async def test_without_manual_acknowledgement_paho_decodes() -> None:
    """The reader never sends a PUBACK: with paho acknowledging on receipt (not how the session runs it), every
    PUBLISH stays paho's, and paho acknowledges it."""
    client = aiomqtt.Client("127.0.0.1", 1)
    assert not Inbox(client)._fast
    client._client.manual_ack_set(True)
    assert Inbox(client)._fast


@pytest.mark.parametrize("fast", [False, True])
async def test_a_connection_ended_in_the_same_wake_keeps_its_qos0_messages(fast: bool) -> None:
    """Messages read just before the connection ended: a QoS 1 one is not handed out (its acknowledgement would go
    nowhere; the broker delivers it again), a QoS 0 one is (it would never come again, and needs none)."""
    w = Wire(fast)
    w.client._connected.set_result(None)  # as after CONNACK: the disconnect is reported (aiomqtt's on_disconnect)
    try:
        w.feed(publish(b"t/q0", b"0", 0) + publish(b"t/q1", b"1", 1, 1) + publish(b"", b"bad", 1, 2))
        assert w.client._disconnected.done()
        assert w.got == [("t/q0", b"0", 0, 0, False)]
    finally:
        w.close()
        w.client._disconnected.exception()  # retrieved: no "never retrieved" warning
