"""The reader's bound on messages unacknowledged (drivers/mqtt/reader.py `Inbox.cap`): a broker that sends more than
the window gets no more taken in; the socket is read again once acknowledgements bring it to half the window; and
the pause does not end a live connection by paho's keep-alive."""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import replace
from typing import Any

import aiomqtt
from paho.mqtt.client import _ConnectionState

from drivers.mqtt.client import BrokerParams, subscriber
from drivers.mqtt.reader import UNACKED_311, Inbox
from tests.unit.test_mqtt_publish_fastpath import publish


def wired(cap: int) -> tuple[Inbox, socket.socket, socket.socket]:
    """An Inbox taking PUBLISHes off one end of a socket pair, as the session runs it (manual acknowledgement)."""
    client = aiomqtt.Client("127.0.0.1", 1)  # never connected: its paho client reads the pair's socket
    ours, broker = socket.socketpair()
    ours.setblocking(False)
    paho = client._client
    paho._sock = ours
    paho.manual_ack_set(True)
    inbox = Inbox(client, cap=cap)
    inbox._fast = True
    return inbox, ours, broker


def messages(first: int, n: int) -> bytes:
    return b"".join(publish(b"site/gas/G1/data", str(k).encode(), 1, k) for k in range(first, first + n))


async def test_more_than_the_window_is_not_read_until_acknowledgements_make_room() -> None:
    inbox, ours, broker = wired(cap=10)
    loop = asyncio.get_running_loop()
    try:
        broker.sendall(messages(1, 30))  # a broker ignoring the window: 30 at once for a window of 10
        inbox.read()
        assert (len(inbox._items), inbox.pauses) == (30, 1)  # read in one wake, then the socket is left alone
        broker.sendall(messages(31, 5))
        inbox.read()  # (a read the loop had scheduled before the pause)
        assert len(inbox._items) == 30

        first = await inbox.next_batch(1000)
        assert [m[2] for m in first] == list(range(1, 11))  # no more than the window handed out
        waiting = asyncio.create_task(inbox.next_batch(1000))
        for _ in range(5):
            await asyncio.sleep(0)
        assert not waiting.done()  # the window is full: nothing more until acknowledged

        inbox.acked(10)
        second = await asyncio.wait_for(waiting, 5)
        assert [m[2] for m in second] == list(range(11, 21))
        assert inbox._paused is not None  # 10 out and 10 waiting: more than half the window

        inbox.acked(10)
        third = await inbox.next_batch(1000)
        assert [m[2] for m in third] == list(range(21, 31))
        inbox.acked(10)  # nothing out, nothing waiting: read again, and what the broker sent meanwhile comes
        assert inbox._paused is None
        rest = await asyncio.wait_for(inbox.next_batch(1000), 5)
        assert [m[2] for m in rest] == list(range(31, 36))
        assert (inbox.out, inbox.pauses) == (5, 1)
    finally:
        loop.remove_reader(ours.fileno())
        broker.close()
        ours.close()


async def test_a_broker_keeping_to_the_window_is_never_paused() -> None:
    inbox, ours, broker = wired(cap=10)
    try:
        for round_ in range(3):
            broker.sendall(messages(1 + 10 * round_, 10))
            inbox.read()
            batch = await inbox.next_batch(1000)
            assert len(batch) == 10
            inbox.acked(10)
        assert (inbox.pauses, inbox.out) == (0, 0)
    finally:
        broker.close()
        ours.close()


async def test_the_bound_is_the_window_announced_or_1000_on_mqtt_311() -> None:
    """MQTT 5: the window the gateway announces (receive_maximum); MQTT 3.1.1, where the broker keeps its own
    (Mosquitto's 20, or none): 1 000."""
    base = BrokerParams.at("127.0.0.1", 1)
    _, v311 = subscriber(base)
    _, v5 = subscriber(replace(base, protocol_v5=True, receive_maximum=100))
    assert (v311.cap, v5.cap) == (UNACKED_311, 100) == (1000, 100)


PINGRESP = b"\xd0\x00"


def _connected(inbox: Inbox, gone: list[Any]) -> None:
    """paho's state as on a connection with a 5 s keep-alive, writing its packets straight to the socket pair."""
    paho = inbox._paho
    paho._state = _ConnectionState.MQTT_CS_CONNECTED
    paho._keepalive = 5
    paho.on_socket_register_write = None
    paho.on_disconnect = lambda *a: gone.append(a)


def _a_keepalive_without_bytes(inbox: Inbox) -> None:
    """As if six seconds had passed since anything was read, a PINGREQ sent and no answer read (a 5 s keep-alive)."""
    paho = inbox._paho
    paho._last_bytes_received = paho._last_msg_out = paho._ping_t = time.monotonic() - 6


async def test_while_reading_is_paused_bytes_waiting_unread_keep_the_connection() -> None:
    # Found by a review: paused, the reader read nothing, the broker's PINGRESP included, and paho's keep-alive ended
    # the live connection after twice the keep-alive (the broker then sent its backlog again)
    inbox, ours, broker = wired(cap=10)
    gone: list[Any] = []
    _connected(inbox, gone)
    paho = inbox._paho
    try:
        broker.sendall(messages(1, 30))
        inbox.read()
        assert inbox._paused is not None and inbox._alive is not None
        broker.sendall(messages(31, 5) + PINGRESP)  # the broker is there: its answer waits behind its messages
        _a_keepalive_without_bytes(inbox)
        inbox._paused_alive()  # (its timer's call)
        paho.loop_misc()  # (aiomqtt's, every second): the keep-alive check
        assert (paho._sock, gone) == (ours, [])
        assert broker.recv(16) == b"\xc0\x00"  # a PINGREQ went out, as the keep-alive asks

        for _ in range(3):  # spooled and acknowledged: reading resumes, the answer is read
            batch = await asyncio.wait_for(inbox.next_batch(1000), 5)
            inbox.acked(len(batch))
        await asyncio.sleep(0)
        assert inbox._paused is None and paho._ping_t == 0
    finally:
        if inbox._alive is not None:
            inbox._alive.cancel()
        asyncio.get_running_loop().remove_reader(ours.fileno())
        broker.close()
        ours.close()


async def test_while_reading_is_paused_a_broker_silent_with_nothing_waiting_is_still_found_dead() -> None:
    inbox, ours, broker = wired(cap=10)
    gone: list[Any] = []
    _connected(inbox, gone)
    try:
        broker.sendall(messages(1, 30))
        inbox.read()
        assert inbox._paused is not None
        _a_keepalive_without_bytes(inbox)  # and nothing on the socket: no answer to the PINGREQ
        inbox._paused_alive()
        inbox._paho.loop_misc()
        assert inbox._paho._sock is None and "Keep alive timeout" in str(gone[0])  # ended by the keep-alive
        assert inbox._alive is not None
        inbox._paused_alive()  # the timer's next call: the connection is gone, it stops
        assert inbox._alive is None
    finally:
        if inbox._alive is not None:
            inbox._alive.cancel()
        broker.close()
        ours.close()
