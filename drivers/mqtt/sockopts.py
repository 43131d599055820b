"""TCP options for the session's broker connection (acknowledgements at once, no Nagle on our side); bytes unread."""

from __future__ import annotations

import contextlib
import fcntl
import socket
import struct
import termios
from typing import Any

_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)  # Linux only


def quick_ack(sock: Any) -> None:
    """Have the kernel acknowledge what the broker sent at once, not after its delayed-ACK timer.

    A broker that leaves Nagle's algorithm on (Mosquitto's default: set_tcp_nodelay false) holds its next PUBLISH
    until its last one is acknowledged at the TCP level. While the gateway holds its PUBACKs back to share one fsync
    (spool.ack_linger_messages), no data goes back to carry that acknowledgement, so it waits for the delayed-ACK
    timer: on Mosquitto 2.0 at 1 000 msg/s, holding 3 PUBACKs or more delayed every message by 8 ms (median) and
    16 ms (p90), against 0.2 ms acknowledging each at once (bench/README.md). TCP_QUICKACK is not sticky (the kernel
    drops it again), so it is set at every wake of the reader: one system call, against an fsync's ~90 µs. Linux
    only: elsewhere held PUBACKs still pace a Nagle broker (keep spool.ack_linger_messages at 2 there)."""
    if _QUICKACK is not None and sock is not None:
        try:  # not contextlib.suppress: this runs at every wake, and the context manager costs more than the call
            sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
        except (OSError, AttributeError):
            pass  # a closed socket (the read that follows reports it), or not a TCP socket


def no_delay(sock: Any) -> None:
    """Nagle's algorithm off on our side too: the PUBACKs of a batch go out in one write already (batch_acker),
    and a PUBACK held back for a TCP acknowledgement would hold the broker's window with it."""
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def unread_bytes(sock: Any) -> int:
    """Bytes the kernel holds for the socket, not yet read (encrypted ones too, on TLS); 0 when it cannot say."""
    try:
        got = fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0")
    except (OSError, ValueError, AttributeError):  # closed (fileno -1), or not a socket
        return 0
    n: int = struct.unpack("i", got)[0]
    return n
