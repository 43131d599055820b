"""The acknowledgements one fsync made due: each connection's MQTT batches joined into one PUBACK write."""

from __future__ import annotations

from collections.abc import Callable

from drivers.mqtt.session import BatchAck
from gateway.pipeline import acknowledge


def test_the_batches_of_one_connection_leave_in_one_write_in_their_order() -> None:
    writes: list[tuple[str, list[str]]] = []
    acked: list[str] = []

    def acker(conn: str) -> Callable[[list[Callable[[], object]]], None]:
        def ack_all(acks: list[Callable[[], object]]) -> None:
            writes.append((conn, [str(a()) for a in acks]))

        return ack_all

    a, b = acker("a"), acker("b")

    def mid(n: str) -> Callable[[], object]:
        return lambda: n

    callbacks: list[Callable[[], object]] = [
        BatchAck(a, [mid("1"), mid("2")]),
        lambda: acked.append("other"),  # not an MQTT batch (a test's or a tool's callback): called as it is
        BatchAck(b, [mid("x")]),
        BatchAck(a, [mid("3")]),
    ]
    acknowledge(callbacks)
    assert writes == [("a", ["1", "2", "3"]), ("b", ["x"])]
    assert acked == ["other"]


def test_single_message_batches_sharing_an_fsync_are_one_call() -> None:
    # the usual case at a few hundred messages a second: each message its own batch, several per fsync
    calls: list[int] = []
    acknowledge([BatchAck(lambda acks: calls.append(len(acks)), [lambda: None]) for _ in range(7)])
    assert calls == [1] * 7  # distinct ackers (one lambda each) stay apart
    calls.clear()

    def ack_all(acks: list[Callable[[], object]]) -> None:
        calls.append(len(acks))

    acknowledge([BatchAck(ack_all, [lambda: None]) for _ in range(7)])
    assert calls == [7]
