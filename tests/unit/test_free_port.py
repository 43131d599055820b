"""The test services' port picker: never the same port twice in one run, never one the kernel may give to an
outgoing connection before the service binds it."""

from __future__ import annotations

import socket

from services.local import _ephemeral_low, free_port


def test_ports_are_distinct_bindable_and_below_the_ephemeral_range() -> None:
    low = _ephemeral_low()
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
    assert all(p < low for p in ports)
    for p in ports[:20]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", p))
