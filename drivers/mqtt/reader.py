"""The subscriber's socket reader: every packet that arrived, read in one system call, its messages as one batch."""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable
from typing import Any

import aiomqtt
from paho.mqtt.client import MQTTMessage
from paho.mqtt.enums import MQTTErrorCode, MQTTProtocolVersion

from drivers.mqtt.publish import Received, take_publishes
from drivers.mqtt.sockopts import no_delay, quick_ack, unread_bytes
from drivers.mqtt.window import ReadWindow

READS_PER_WAKE = 64  # packets read per wake of the socket at most: the loop's other callbacks wait meanwhile
NOT_UTF8_KEPT = 1000  # topics not in UTF-8 remembered for their dead letters' reason: a bound, not a leak
AT_ONCE = 4  # at most this many messages of a wake are handed over in the reader's callback (`on_batch`)
RECV_BYTES = 65536  # read off the socket at once; paho asks for a packet's bytes in three or more pieces
PAUSED_ALIVE_S = 1.0  # while reading is paused, how often bytes waiting unread count as received (`_paused_alive`)
# MQTT 3.1.1 announces no in-flight window (the broker has its own: Mosquitto's 20, or none with 0): the most
# messages taken in unacknowledged there, as on MQTT 5 the window announced (`Inbox.cap`)
UNACKED_311 = 1000

log = logging.getLogger("sitegw.mqtt")


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
    - **A QoS 0 / 1 PUBLISH taken off the buffer here** (`_take_publishes`; on MQTT 5 one without properties), not
      through paho's packet reader, handler, MQTTMessage, logging and callback locks: those were about an eighth of
      the gateway's CPU per message at site rates (33 of ~270 µs at 1 000 msg/s), where every message is a wake of
      its own (see `_take_publishes`). Everything else (CONNACK, SUBACK, PINGRESP, QoS 2, a packet cut by the end of
      a read, an MQTT 5 PUBLISH with properties) is paho's, read from the same buffer.
    - **A few messages handed over in this callback** (`on_batch`, the session's `handle_now`) while the session
      waits for them: no task to wake. A wake of more than AT_ONCE, or one that left data on the socket, wakes the
      session's task instead, so that a burst makes big batches.

    - **Above a rate, a window** (drivers/mqtt/window.py: when it opens and ends). Paced messages each went
      through the session and the pipeline alone: one batch, one pass of cold code per message (the MQTT path's
      CPU per message was 229 µs paced against 85 µs for messages taken one after another, bench/mqtt_cost.py).
      A message waits at most `window_s` longer (an alarm's too); below the rate nothing waits. The socket is
      still read as data comes: a reader that paused instead left the broker's TCP acknowledgements waiting too,
      and with Nagle's algorithm on (Mosquitto's default) the broker held its messages for them (the alarm
      latency's median went from 2.5 to 7.3 ms at 2 500 msg/s, not 2 ms more).

    - **No more than `cap` messages unacknowledged** (the window announced on MQTT 5): a broker sends no more, but
      Mosquitto 2.0.11 sent a whole backlog after a reconnect once the first PUBACK came (18 000 messages against
      a window of 1 000: its inflight quota, as in eclipse-mosquitto/mosquitto#2301), and the gateway held 68 000 of
      them decoded in memory (200 MB). With more than `cap` handed out or waiting here, the socket is not read
      (`_pause`) until acknowledgements bring that to half; the broker's messages wait in TCP and in the broker,
      and count as received for paho's keep-alive (`_paused_alive`): its PINGRESP waits unread behind them.

    Errors end the connection as aiomqtt's own reader does. aiomqtt and paho are pinned (< 3):
    tests/integration/test_mqtt_ack.py checks a burst comes as one batch, in one read, its PUBACKs in one send, and
    a message longer than a read; tests/integration/test_mqtt_tls_reads.py a burst over TLS."""

    def __init__(
        self, client: aiomqtt.Client, window_s: float = 0.0, above: int = 1500, cap: int = UNACKED_311
    ) -> None:
        self.client = client
        self.cap = cap  # messages handed out and not yet acknowledged, at most (`acked`, `_pause`)
        self.out = 0  # handed to the session (`next_batch`, `on_batch`) and not yet acknowledged
        self._paused: int | None = None  # the socket's descriptor while it is not read (`_pause`)
        self.pauses = 0  # times the socket was not read for a broker beyond the window (metrics, tests)
        self._alive: asyncio.TimerHandle | None = None  # `_paused_alive`, while paused
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
        self.taken = 0  # PUBLISH packets taken off the buffer here, not by paho (`_take_publishes`), for the tests
        # only with manual acknowledgement (subscriber() sets it): otherwise paho's handler sends a QoS 1 message's
        # PUBACK, which this never does. On MQTT 5 a PUBLISH has a properties' length after its packet id: one
        # with properties (a topic alias, a device's user properties) is paho's to decode
        self._fast = bool(paho._manual_ack)
        self._v5 = paho._protocol == MQTTProtocolVersion.MQTTv5
        self._error: OSError | None = None  # a read error met by `read`, for paho's next read to meet
        # the session's handler of a wake's messages in this callback (True: handled), tried when the session
        # waits for them (`next_batch`); the session's task takes them otherwise
        self.on_batch: Callable[[list[Received]], bool] | None = None
        self._topics: dict[bytes, str] = {}  # a device's topic comes again and again: decoded once
        self.not_utf8: set[str] = set()  # topics that came not in UTF-8, as taken (`_on_message`), for dead letters
        self.window = ReadWindow(window_s, above)  # when what is read waits for a window's end (`_pace`)
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
        if self._error is not None:  # what `read` met first: paho reports it (its log line) and ends the connection
            err, self._error = self._error, None
            raise err
        if self._pos >= len(self._buf) or self._buf_sock is not self._paho._sock:
            data = self._fill()
            if len(data) <= bufsize:  # all of it (or b"": the broker closed the connection)
                self._buf, self._pos = b"", 0
                return data
        pos = self._pos
        out = self._buf[pos : pos + bufsize]
        self._pos = pos + len(out)
        return out

    def _fill(self) -> bytes:
        """One read off the socket into the buffer (BlockingIOError: nothing there)."""
        paho = self._paho
        sock = paho._sock
        if sock is None:
            raise ConnectionError("self._sock is None")
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
        self._buf, self._pos, self._buf_sock = data, 0, sock
        return data

    def _take_publishes(self, limit: int) -> int:
        """Take the complete QoS 0 and 1 PUBLISH packets at the head of the buffer as messages (`limit` at most), not
        through paho (drivers/mqtt/publish.py says why and what it leaves to paho); how many."""
        # (called by `read` only with `_fast` on and paho between packets)
        if self._buf_sock is not self._paho._sock:
            return 0  # the buffer is an old connection's
        gone = self.client._disconnected.done()  # as in _on_message: nothing handed out on an ended connection
        n, pos = take_publishes(self._buf, self._pos, limit, self._v5, self._topics, None if gone else self._items)
        if n:
            self._pos = pos
            self.taken += n
            self._paho._last_bytes_received = time.monotonic()  # paho's time_func; its keep-alive reads it
        return n

    def _buffered(self) -> bool:
        return self._pos < len(self._buf) and self._buf_sock is self._paho._sock

    def _on_message(self, _c: Any, _u: Any, m: MQTTMessage) -> None:
        # once the connection is ended (a spool failure, a broken socket) nothing more is handed out or acknowledged
        # on it: the broker delivers what came after again on the next connection
        if self.client._disconnected.done():
            return
        try:
            topic = m.topic
        except UnicodeDecodeError:
            # MQTT wants topics in UTF-8, and Mosquitto refuses others from publishers, but nats-server 2.9's MQTT
            # passes them on. paho's `topic` raised here, the connection ended, the broker sent the message again on
            # the next, and so on for good: taken with its bytes shown as \xNN, it is dead-lettered and acknowledged
            # like any message the session cannot use (its dead letter says why: `not_utf8`)
            topic = m._topic.decode("utf-8", "backslashreplace")
            if len(self.not_utf8) < NOT_UTF8_KEPT:
                self.not_utf8.add(topic)
        self._items.append((topic, m.payload, m.mid, m.qos, m.retain))  # type: ignore[arg-type]  # (bytes)

    def read(self) -> None:
        """The socket's reader (the event loop calls it when the socket is readable)."""
        if self._paused is not None:
            return  # (a read the loop had scheduled before the pause)
        paho = self._paho
        burst = False  # READS_PER_WAKE taken and more waiting
        before = len(self._items)
        try:
            quick_ack(paho._sock)
            budget = READS_PER_WAKE
            while budget > 0:
                sock = paho._sock
                if sock is None:
                    break
                if self._fast and paho._in_packet["command"] == 0:
                    if not self._buffered():
                        try:
                            self._fill()
                        except BlockingIOError:
                            break  # nothing there
                        except OSError as err:
                            self._error = err  # paho's read below meets it, and ends the connection its way
                    taken = self._take_publishes(budget)
                    if taken:
                        budget -= taken
                        if not self._buffered() and not _decrypted(sock) and self._drained:
                            break
                        continue
                budget -= 1
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
                burst = True
                if paho._sock is not None and (self._buffered() or _decrypted(paho._sock)):
                    self.client._loop.call_soon(self.read)
        except Exception as err:  # a broken connection (BrokenPipe, ...): ended as aiomqtt's own reader ends it
            if not self.client._disconnected.done():
                self.client._disconnected.set_exception(err)
                paho._sock_close()  # (aiomqtt's exit leaves an ended connection's socket open)
        if self.out + len(self._items) > self.cap:
            self._pause()
        if self.window.window_s and self._pace(len(self._items) - before):
            return  # handed over at the window's end (`_window_ended`)
        self._hand_over(burst)

    def _pause(self) -> None:
        """Stop reading the socket: more than `cap` messages are unacknowledged (see the class)."""
        sock = self._paho._sock
        if sock is None or self.client._disconnected.done():
            return
        self._paused = fd = sock.fileno()
        self.client._loop.remove_reader(fd)
        self.pauses += 1
        if self._alive is None:
            self._alive = self.client._loop.call_later(PAUSED_ALIVE_S, self._paused_alive)
        if self.pauses == 1:
            log.warning(
                "the broker sent more than %d messages unacknowledged (the in-flight window): reading paused until "
                "they are spooled and acknowledged (seen with Mosquitto 2.0.11 sending a backlog after a reconnect)",
                self.cap,
            )

    def _paused_alive(self) -> None:
        """While the socket is not read, paho's keep-alive sees no bytes come, the broker's PINGRESP included (it
        waits unread behind the messages): after twice the keep-alive it ended a live connection, and the broker
        then sent its backlog again. Bytes waiting on the socket came from the broker: they count as received. A
        broker gone while reading is paused is found once reading resumes (its messages wait for the spool meanwhile,
        unacknowledged); one silent with nothing waiting is found by the keep-alive as before."""
        self._alive = None
        sock = self._paho._sock
        if self._paused is None or sock is None or sock.fileno() != self._paused or self.client._disconnected.done():
            return
        if unread_bytes(sock) > 0:
            with self._paho._msgtime_mutex:
                self._paho._last_bytes_received = time.monotonic()  # (paho's time_func)
        self._alive = self.client._loop.call_later(PAUSED_ALIVE_S, self._paused_alive)

    def _resume(self) -> None:
        fd, self._paused = self._paused, None
        sock = self._paho._sock
        if fd is None or sock is None or sock.fileno() != fd or self.client._disconnected.done():
            return  # the connection has ended: the next one has a reader of its own
        self.client._loop.add_reader(fd, self.read)
        self.client._loop.call_soon(self.read)  # what was read off the socket already does not wake the loop

    def acked(self, n: int) -> None:
        """`n` messages handed out were acknowledged (the session's ack_all): room for more."""
        self.out -= n
        if self._paused is not None and self.out + len(self._items) <= self.cap // 2:
            self._resume()
        waiter = self._waiter
        if waiter is not None and not waiter.done() and self._items and self.out < self.cap:
            waiter.set_result(None)

    def _hand_over(self, burst: bool) -> None:
        """What was received to the session: in this callback (`on_batch`) or by waking its task."""
        if self._items and self.client._disconnected.done():
            # the connection ended in this wake: its QoS 1 messages are not handed out either (their acknowledgements
            # would go nowhere; the broker delivers them again on the next connection); QoS 0 ones would never come
            # again, and need no acknowledgement
            self._items = [m for m in self._items if m[3] == 0]
        waiter = self._waiter
        if self._items and waiter is not None and not waiter.done() and self.out < self.cap:
            handle = self.on_batch
            # only a few, as at site rates where each message is a wake of its own: more (a burst, a backlog) go to
            # the session's task, and what the next reads bring joins its batch meanwhile (one spool write and one
            # evaluation for hundreds): handed over read by read, flat-out ingest fell 4-7 % (interleaved pairs)
            if handle is not None and not burst and len(self._items) <= AT_ONCE:
                n = len(self._items)
                self.out += n  # before: the pipeline may acknowledge them in the call (`acked`)
                try:
                    if handle(self._items):
                        self._items = []
                        return
                    self.out -= n
                except Exception as err:  # a bug: raised in the session's task (where the supervisor sees it)
                    self._items = []  # never acknowledged: delivered again on the next connection
                    waiter.set_exception(err)
                    return
            waiter.set_result(None)

    def _pace(self, taken: int) -> bool:
        """After a wake that took `taken` messages: True when they wait for the read window's end."""
        action = self.window.wake(time.monotonic(), taken, bool(self._items))
        if action == "hold":
            return True
        if action == "open":
            self.client._loop.call_later(self.window.window_s, self._window_ended)
            return True
        return False

    def _window_ended(self) -> None:
        self.window.ended()
        self._hand_over(burst=False)

    # ---- the session's side

    def watch(self) -> None:
        """Call once connected: the end of the connection ends `next_batch` (aiomqtt renews its future at connect)."""
        self.client._disconnected.add_done_callback(self._end)

    def _end(self, _f: object) -> None:
        self._ended = True
        # QoS 1 messages still here (a window, a busy session) are not handed out: their acknowledgements would go
        # nowhere, and the broker delivers them again on the next connection
        self._items = [m for m in self._items if m[3] == 0]
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def next_batch(self, limit: int) -> list[Received]:
        """The messages received so far, at least one (it waits for it), at most `limit` and no more than leaves
        `cap` unacknowledged (it waits for acknowledgements: `acked`); MqttError once the connection has ended and
        its messages are taken."""
        while not self._items or (self.out >= self.cap and not self._ended):
            if self._ended and not self._items:
                raise aiomqtt.MqttError("Disconnected during message iteration") from (
                    self.client._disconnected.exception()
                )
            self._waiter = self.client._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        if not self._ended:
            limit = min(limit, self.cap - self.out)
        batch = self._items
        if len(batch) > limit:
            batch, self._items = batch[:limit], batch[limit:]
        else:
            self._items = []
        self.out += len(batch)
        return batch


def _decrypted(sock: Any) -> bool:
    # bytes TLS has read off the socket and decrypted but nobody has taken yet: they never wake the loop
    return hasattr(sock, "pending") and sock.pending() > 0
