"""What waits on the spool's fsync: acknowledgements, redelivery when it fails, and the batches that may wait."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, cast


def acknowledge(callbacks: list[Callable[[], object]]) -> None:
    """Run the callbacks an fsync made due. Those that acknowledge MQTT messages (drivers/mqtt/session.py BatchAck:
    `ack_all` and `acks`) are joined per connection, so the PUBACKs of every batch that shared the fsync leave in
    one socket write, not one per batch (a batch is often a single message); each connection's keep their order."""
    joined: dict[int, tuple[Callable[[list[Callable[[], object]]], None], list[Callable[[], object]]]] = {}
    other: list[Callable[[], object]] = []
    for cb in callbacks:
        ack_all = getattr(cb, "ack_all", None)
        if ack_all is None:
            other.append(cb)
        else:
            joined.setdefault(id(ack_all), (ack_all, []))[1].extend(cb.acks)  # type: ignore[attr-defined]
    try:
        for cb in other:
            cb()
    finally:  # one that raises must not keep the messages from their acknowledgement
        for ack_all, acks in joined.values():
            ack_all(acks)


def redeliver(callbacks: list[Callable[[], object]]) -> None:
    """The spool refused these callbacks' readings (its write or fsync failed): have their messages delivered again
    (an MQTT batch's BatchAck ends the connection they came on). Callbacks of anything else are dropped: nothing
    acknowledges a Modbus poll."""
    for cb in callbacks:
        again = getattr(cb, "redeliver", None)
        if again is not None:
            again()


def held(cb: Callable[[], object] | None) -> bool:
    """The batch's readings may wait for their fsync outside the spool: every message it came in is delivered
    again unless acknowledged (an MQTT BatchAck of QoS 1 messages on a persistent session)."""
    return getattr(cb, "redeliverable", False) is True


def unheld(cb: Callable[[], object] | None) -> Callable[[], object] | None:
    """`cb` for a batch that also carries readings nobody delivers again (a device's `up`, its health readings):
    written to the spool at once, not held."""
    if not held(cb):
        return cb
    copy: Callable[[], object] = dataclasses.replace(cast(Any, cb), redeliverable=False)  # (an MQTT BatchAck)
    return copy
