"""MQTT channel: one JSON message on a topic (site siren controller, LED board), QoS 1 by default."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

from alerting.notifiers.base import SENT, Message, Person, SendResult, event_json, report

log = logging.getLogger("sitegw.notify")


class Publisher(Protocol):
    """A broker connection that publishes and holds on (the gateway gives drivers.mqtt.client.HeldPublisher): it
    raises PermissionError for refused credentials, ConnectionError for the rest, OSError / ValueError for an
    unusable TLS file; its messages never carry the password."""

    @property
    def address(self) -> str: ...
    async def connect(self) -> None: ...
    async def publish(self, topic: str, payload: str | bytes, qos: int = 1, retain: bool = False) -> None: ...
    async def aclose(self) -> None: ...


class MqttNotifier:
    """Publishes each message on its topic through the gateway's held connection to the broker (a siren sounds
    within milliseconds of the alarm); the publisher tries a dead held connection once more on a fresh one, and
    the escalation engine owns any further retries."""

    def __init__(self, id: str, publisher: Publisher, topic: str, qos: int = 1, retain: bool = False) -> None:
        self.id = id
        self._pub = publisher
        self._topic = topic
        self._qos = qos
        self._retain = retain

    @property
    def connects(self) -> int:
        return int(getattr(self._pub, "connects", 0))

    async def warm(self) -> None:
        """Connect ahead of the first alarm (at start), so the first siren does not wait for a connection either.
        A broker that is not there yet is only logged: `send` connects when it has to."""
        try:
            await self._pub.connect()
        except (OSError, ValueError) as err:
            log.warning("channel %s: broker %s not reachable yet: %s", self.id, self._pub.address, err)

    async def send(self, msg: Message, to: Sequence[Person]) -> SendResult:
        payload = event_json(msg, to, names_only=True)
        try:
            await self._pub.publish(self._topic, payload, qos=self._qos, retain=self._retain)
        except PermissionError as err:  # refused credentials fail the same way next time
            return report(self.id, msg, SendResult(False, False, str(err)))
        except ConnectionError as err:  # refused, reset, timed out: may pass next time
            return report(self.id, msg, SendResult(False, True, str(err)))
        except (OSError, ValueError) as err:  # unreadable CA / cert / key file: configuration, not delivery
            return report(self.id, msg, SendResult(False, False, f"TLS setup failed: {err}"))
        return report(self.id, msg, SENT)

    async def aclose(self) -> None:
        await self._pub.aclose()
