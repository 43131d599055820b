"""The subscriber's socket reader: every packet that arrived, read in one system call, its messages as one batch."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import aiomqtt
from paho.mqtt.client import MQTTMessage
from paho.mqtt.enums import MQTTErrorCode

from drivers.mqtt.sockopts import no_delay, quick_ack

READS_PER_WAKE = 64  # packets read per wake of the socket at most: the loop's other callbacks wait meanwhile
RECV_BYTES = 65536  # read off the socket at once; paho asks for a packet's bytes in three or more pieces

Received = tuple[str, bytes, int, int]  # a message as the session takes it: topic, payload, mid, qos


class Inbox:
    """Installs the session's reader on an aiomqtt client (before it connects) and holds what it received.

    - **Every packet that has arrived, not one per event-loop turn.** paho 2's loop_read reads one packet whatever
      it is asked (its max_packets is ignored), so aiomqtt's reader gave the gateway one message per loop turn: a
      burst of 20 was 20 turns, each with its own wake of the session and the pipeline, and a gas message behind it
      waited for all of them. This reader goes on until the socket has nothing more (at most READS_PER_WAKE packets).
    - **One recv for all of them.** paho reads a packet's first byte, its length a byte at a time and then the rest,
      each with its own recv, and one more that finds nothing: five system calls per message at site rates. Here
      paho's reads are served from one RECV_BYTES read per wake (`_recv`, paho's own `_sock_recv` otherwise).
    - **The messages straight to the session.** aiomqtt wraps each in a Message of its own and queues it, and the
      session waited for each with the queue's getter; here paho's message goes into a list and the session is woken
      once per wake with all of them (`next_batch`).

    Errors end the connection as aiomqtt's own reader does. aiomqtt and paho are pinned (< 3):
    tests/integration/test_mqtt_ack.py checks a burst comes as one batch, in one read, its PUBACKs in one send, and
    a message longer than a read; tests/integration/test_mqtt_tls_reads.py a burst over TLS."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self._paho = paho = client._client
        self._items: list[Received] = []
        self._waiter: asyncio.Future[None] | None = None
        self._ended = False
        # the bytes read off `_buf_sock` and not yet taken by paho: [_pos:]
        self._buf = b""
        self._pos = 0
        self._buf_sock: Any = None
        self._drained = False  # the last recv took less than asked (plain TCP): the socket was empty then
        self.recvs = 0  # system calls made, for the tests
        paho.on_message = self._on_message
        paho._sock_recv = self._recv  # type: ignore[method-assign]
        opened = paho.on_socket_open  # aiomqtt's: adds its reader and starts its keep-alive task
        assert opened is not None

        def on_socket_open(c: Any, userdata: Any, sock: Any) -> None:
            opened(c, userdata, sock)
            no_delay(sock)
            # paho calls this from the thread it connects in; queued after aiomqtt's own, so this reader replaces it
            client._loop.call_soon_threadsafe(client._loop.add_reader, sock.fileno(), self.read)

        paho.on_socket_open = on_socket_open

    # ---- paho's side: bytes in, messages out

    def _recv(self, bufsize: int) -> bytes:
        """paho's `_sock_recv`: `bufsize` bytes at most, from what was read off the socket at once."""
        paho = self._paho
        sock = paho._sock
        if sock is None:
            raise ConnectionError("self._sock is None")
        if self._pos >= len(self._buf) or self._buf_sock is not sock:
            try:
                data = sock.recv(RECV_BYTES)
            except ssl.SSLWantReadError as err:  # the same translations as paho's own _sock_recv
                raise BlockingIOError() from err
            except ssl.SSLWantWriteError as err:
                paho._call_socket_register_write()
                raise BlockingIOError() from err
            self.recvs += 1
            # less than asked: the socket was empty then. Not over TLS, whose recv returns one record at most
            # (Mosquitto writes a record per packet): there the loop reads on until it finds nothing
            self._drained = len(data) < RECV_BYTES and not isinstance(sock, ssl.SSLSocket)
            if len(data) <= bufsize:  # all of it (or b"": the broker closed the connection)
                self._buf, self._pos = b"", 0
                return data
            self._buf, self._pos, self._buf_sock = data, 0, sock
        pos = self._pos
        out = self._buf[pos : pos + bufsize]
        self._pos = pos + len(out)
        return out

    def _buffered(self) -> bool:
        return self._pos < len(self._buf) and self._buf_sock is self._paho._sock

    def _on_message(self, _c: Any, _u: Any, m: MQTTMessage) -> None:
        # once the connection is ended (a spool failure, a broken socket) nothing more is handed out or acknowledged
        # on it: the broker delivers what came after again on the next connection
        if self.client._disconnected.done():
            return
        self._items.append((m.topic, m.payload, m.mid, m.qos))  # type: ignore[arg-type]  # paho's payload is bytes

    def read(self) -> None:
        """The socket's reader (the event loop calls it when the socket is readable)."""
        paho = self._paho
        try:
            quick_ack(paho._sock)
            for _ in range(READS_PER_WAKE):
                sock = paho._sock
                if sock is None:
                    break
                rc = paho._packet_read()
                if rc > 0:  # an error: handled as paho's loop_read does (closes, reports the disconnect)
                    paho._loop_rc_handle(rc)
                    break
                if (
                    not self._buffered()
                    and not _decrypted(sock)
                    and (self._drained or rc == MQTTErrorCode.MQTT_ERR_AGAIN)
                ):
                    break  # nothing more: what arrives later wakes the loop again (its epoll is level-triggered)
            else:
                # READS_PER_WAKE taken and more may wait: what is left on the socket wakes the loop again, what was
                # read off it already does not, so it is taken on the next loop turn
                if paho._sock is not None and (self._buffered() or _decrypted(paho._sock)):
                    self.client._loop.call_soon(self.read)
        except Exception as err:  # a broken connection (BrokenPipe, ...): ended as aiomqtt's own reader ends it
            if not self.client._disconnected.done():
                self.client._disconnected.set_exception(err)
        if self._items and self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # ---- the session's side

    def watch(self) -> None:
        """Call once connected: the end of the connection ends `next_batch` (aiomqtt renews its future at connect)."""
        self.client._disconnected.add_done_callback(self._end)

    def _end(self, _f: object) -> None:
        self._ended = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def next_batch(self, limit: int) -> list[Received]:
        """The messages received so far, at least one (it waits for it), at most `limit`; MqttError once the
        connection has ended and its messages are taken."""
        while not self._items:
            if self._ended:
                raise aiomqtt.MqttError("Disconnected during message iteration") from (
                    self.client._disconnected.exception()
                )
            self._waiter = self.client._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        batch = self._items
        if len(batch) > limit:
            batch, self._items = batch[:limit], batch[limit:]
        else:
            self._items = []
        return batch


def _decrypted(sock: Any) -> bool:
    # bytes TLS has read off the socket and decrypted but nobody has taken yet: they never wake the loop
    return hasattr(sock, "pending") and sock.pending() > 0
