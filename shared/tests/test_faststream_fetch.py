"""The consumer's FastStream subscriber fetches as before: what one fetch returns is handled at once, in order."""

from __future__ import annotations

import asyncio
from typing import Any

from dsi_shared.bus import Naming
from dsi_shared.consumer import TrackingConsumer
from faststream.nats import NatsBroker


class _Fetches:
    """A pull subscription whose second fetch raises the plain `asyncio.TimeoutError` nats-py 2.16 raises when a
    follow-up fetch finds nothing."""

    def __init__(self, subscriber: Any) -> None:
        self.subscriber = subscriber
        self.answers: list[Any] = [["m1"], TimeoutError(), ["m2"]]

    async def fetch(self, batch: int, timeout: float) -> list[Any]:
        if not self.answers:
            self.subscriber.running = False
            raise TimeoutError
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return list(answer)


async def test_messages_fetched_before_a_fetch_timeout_are_handled_at_once_and_in_order() -> None:
    consumer = TrackingConsumer(None, "payments", None, Naming(""), "DSI_MILESTONES", {},  # type: ignore[arg-type]
                                ack_wait=30, max_attempts=3)
    consumer.subscribe(NatsBroker())
    subscriber = consumer.subscriber
    handled: list[list[str]] = []

    async def consume(messages: list[str]) -> None:
        handled.append(messages)

    subscriber.subscription, subscriber.consume, subscriber.running = _Fetches(subscriber), consume, True
    await asyncio.wait_for(subscriber._consume_pull(), 5)
    assert handled == [["m1"], ["m2"]]  # FastStream 0.7.8's own loop lost m1 (redelivered after the ack wait)
