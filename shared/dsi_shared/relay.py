"""Outbox relay: the service's notification log → JetStream, in order, each message published once.

`Nats-Msg-Id = <service>:<notification id>` lets JetStream drop a re-publish inside its duplicate window;
outside it, consumers' tracking records do (DESIGN.md §2). The relay resumes from the last message of its
own subjects in its stream, so a crash between publish and any local checkpoint can never skip an event.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import nats
from eventsourcing.persistence import Notification
from nats.js import JetStreamContext
from nats.js.api import RawStreamMsg
from opentelemetry import trace

from dsi_shared import events
from dsi_shared.bus import Naming, segment, service_stream
from dsi_shared.contracts import Contract
from dsi_shared.store import ServiceApplication
from dsi_shared.telemetry import MESSAGES_OUT, extract, inject, tracer

log = logging.getLogger(__name__)
MSG_ID = "Nats-Msg-Id"
T = TypeVar("T")


def outgoing(contract: Contract, notification_id: int, domain_event: Any) -> tuple[str, bytes] | None:
    """The contract subject and CloudEvent body a recorded domain event is published as; None: it is not in the
    service's contract and stays in its store. The auditor uses it too, to hand downstream re-derivations exactly
    what the bus carried."""
    model = contract.model_for(domain_event)
    if model is None:
        return None
    state = dict(vars(domain_event))
    timestamp = state.pop("timestamp")
    state["aggregate_id"] = state.pop("originator_id")
    # consumers of several subjects use it to apply an aggregate's facts in the order they happened
    state["aggregate_version"] = state.pop("originator_version")
    return model.subject, events.encode(contract.service, notification_id, model.subject, model.payload(state),
                                        time=timestamp, subject=str(state["aggregate_id"]),
                                        dataschema=model.dataschema())


class Relay:
    def __init__(self, app: ServiceApplication, contract: Contract, js: JetStreamContext, naming: Naming,
                 batch: int = 200, idle_poll: float = 0.5, observe: Callable[[Any], None] | None = None) -> None:
        """`observe` sees every recorded domain event once it is published (or kept back): service metrics."""
        self.app, self.contract, self.js, self.naming, self.observe = app, contract, js, naming, observe
        service = self.service = contract.service
        self.batch, self.idle_poll = batch, idle_poll
        self.stream = naming.stream(service_stream(service))
        self.subjects = naming.subject(f"dsi.{segment(service)}.>")
        self.position = 0
        self.tracer = tracer(service)
        self._wake = asyncio.Event()
        self.stopping = asyncio.Event()

    def wake_threadsafe(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.call_soon_threadsafe(self._wake.set)

    async def resume_position(self) -> int:
        """The notification id of the last event this service published (0 if none)."""
        last: RawStreamMsg | None
        try:
            last = await self.js.get_last_msg(self.stream, self.subjects)
        except nats.js.errors.NotFoundError:
            return 0
        sequence = last.seq or 0
        while True:  # step back past any message the relay did not publish (an operator's replay of a dead letter)
            msg_id = (last.headers or {}).get(MSG_ID, "") if last is not None else ""
            service, _, position = msg_id.rpartition(":")
            if service == self.service and position.isascii() and position.isdigit():
                return int(position)
            sequence -= 1
            if sequence < 1:
                return 0
            try:
                last = await self.js.get_msg(self.stream, sequence)
            except nats.js.errors.NotFoundError:
                last = None

    async def run(self) -> None:
        self.position = await self._retrying(self.resume_position)
        log.info("relay %s resumes after notification %d", self.service, self.position)
        while not self.stopping.is_set():
            published = await self.publish_pending()
            if not published:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), self.idle_poll)
                except TimeoutError:
                    pass

    async def publish_pending(self) -> int:
        notifications = await asyncio.to_thread(
            self.app.recorder.select_notifications, start=self.position, limit=self.batch, inclusive_of_start=False
        )
        for notification in notifications:
            await self._retrying(functools.partial(self._publish, notification))
            self.position = notification.id
        return len(notifications)

    async def _publish(self, notification: Notification) -> None:
        domain_event, trace_context = self.app.tracing_mapper.decode_notification(notification)
        if self.observe is not None:
            self.observe(domain_event)
        message = outgoing(self.contract, notification.id, domain_event)
        if message is None:
            return  # not in the contract: kept in this service's store only
        contract_subject, body = message
        with self.tracer.start_as_current_span(
            f"publish {contract_subject}", context=extract(trace_context), kind=trace.SpanKind.PRODUCER
        ) as span:
            span.set_attribute("messaging.system", "nats")
            span.set_attribute("messaging.destination.name", contract_subject)
            span.set_attribute("dsi.notification_id", notification.id)
            headers = {MSG_ID: f"{self.service}:{notification.id}", **inject()}
            await self.js.publish(self.naming.subject(contract_subject), body, headers=headers, timeout=5)
        MESSAGES_OUT.add(1, {"service": self.service, "subject": contract_subject})

    async def _retrying(self, operation: Callable[[], Awaitable[T]]) -> T:
        """Keep trying while NATS is unreachable: nothing is skipped, order is kept."""
        delay = 0.2
        while True:
            try:
                return await operation()
            except (TimeoutError, nats.errors.Error, OSError) as exc:
                if self.stopping.is_set():
                    raise
                log.warning("relay %s waiting for NATS: %s", self.service, type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
