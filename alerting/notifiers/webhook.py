"""Generic JSON webhook: POST the event document to a URL, with optional headers whose values come from the env."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from alerting.notifiers.base import Message, Person, Scrubber, SendResult, event_json, report, url_secrets
from alerting.notifiers.jsonpost import JsonPoster, Reply, classify_status


class WebhookNotifier:
    def __init__(self, id: str, url: str, headers: Mapping[str, str], timeout_s: float) -> None:
        self.id = id
        self._url = url
        self._headers = dict(headers)
        self._scrub = Scrubber([*url_secrets(url), *headers.values()])
        self._http = JsonPoster(timeout_s, self._scrub)

    async def send(self, msg: Message, to: Sequence[Person]) -> SendResult:
        reply = await self._http.post(self._url, event_json(msg, to), {**self._headers, "X-SiteGW-Key": msg.key})
        result = classify_status(reply.status, reply.text) if isinstance(reply, Reply) else reply
        return report(self.id, msg, result)

    async def aclose(self) -> None:
        await self._http.aclose()
