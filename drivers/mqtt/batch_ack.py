"""A batch of MQTT messages acknowledged once its readings are spooled (the pipeline calls it)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

OnSpooled = Callable[[], object]  # its return value is ignored


def ack_each(fns: list[OnSpooled]) -> None:
    for fn in fns:
        fn()


def counting(
    ack_all: Callable[[list[OnSpooled]], None], acked: Callable[[int], None]
) -> Callable[[list[OnSpooled]], None]:
    """`ack_all` that tells the reader how many of its messages were acknowledged (reader.py `Inbox.acked`): it
    takes in no more than its window unacknowledged."""

    def counted(acks: list[OnSpooled]) -> None:
        try:
            ack_all(acks)
        finally:
            acked(len(acks))

    return counted


def connection_gone() -> None:
    """A connection that has ended: the broker delivers what it left unacknowledged again at the next one."""


@dataclass(frozen=True, slots=True)
class BatchAck:
    """Acknowledges a batch's messages once their readings are spooled. `messages` tells the pipeline how many
    messages wait on it: it lets acknowledgements wait a few ms to share an fsync, but only a few of them, since a
    broker sends no more than its in-flight window unacknowledged."""

    ack_all: Callable[[list[OnSpooled]], None]
    acks: list[OnSpooled]
    # when the readings could not be spooled: ends the connection the messages came on (client.py redeliverer)
    redeliver: Callable[[], None] = connection_gone
    # every message is QoS 1 on the session's persistent connection: until acknowledged, the broker keeps it and
    # delivers it again, so its readings may wait outside the spool until their fsync (gateway/acks.py held)
    redeliverable: bool = False
    # how many of this broker's messages may wait for one fsync: half the window announced on MQTT 5
    # (client.py subscriber); 0: the pipeline's ack_linger_messages, below a window the broker chooses
    hold: int = 0

    @property
    def messages(self) -> int:
        return len(self.acks)

    def __call__(self) -> None:
        self.ack_all(self.acks)
