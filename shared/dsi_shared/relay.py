"""Outbox relay: the service's notification log → JetStream, in order, each message published once.

`Nats-Msg-Id = <service>:<notification id>` lets JetStream drop a re-publish inside its duplicate window;
outside it, consumers' tracking records do (DESIGN.md §2). The relay resumes from the last message of its
own subjects in its stream, so a crash between publish and any local checkpoint can never skip an event.

Publishes are pipelined: up to `window` (env DSI_RELAY_WINDOW, default 256) are in flight on one connection, sent
in notification order, and `position` advances only over a contiguous prefix of acknowledged ones. A message sent
while its predecessor is unacknowledged carries `Nats-Expected-Last-Msg-Id: <predecessor>`, so JetStream stores
it only right after its predecessor: if one in the middle of a window is lost (a connection dropped with later
ones still buffered), the later ones are refused instead of landing ahead of it. The stream thus always holds an
ordered, gap-free prefix of the relay's events, which `resume_position` relies on; after any failure the relay
drops its window, resumes from the stream and sends again from there.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import nats
from eventsourcing.persistence import InterfaceError, Notification, OperationalError
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
EXPECTED_LAST = "Nats-Expected-Last-Msg-Id"
# NATS away, or the store away for a moment (a connection cut, the database refusing): send again from the stream's
# last message once both are back, rather than end the worker and with it the whole service
RETRYABLE = (TimeoutError, nats.errors.Error, OSError, OperationalError, InterfaceError)
T = TypeVar("T")
# (subject with the deployment prefix, body, headers) → returns once JetStream acknowledged it
Send = Callable[[str, bytes, dict[str, str]], Awaitable[None]]


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


@dataclass
class _Read:
    """A notification read but not yet settled: its publish under way (None: kept back, not in the contract)."""

    notification_id: int
    domain_event: Any
    subject: str | None = None
    ack: asyncio.Task[None] | None = None


class Relay:
    def __init__(self, app: ServiceApplication, contract: Contract, js: JetStreamContext, naming: Naming,
                 batch: int = 200, idle_poll: float = 0.5, observe: Callable[[Any], None] | None = None,
                 send: Send | None = None, window: int | None = None) -> None:
        """`observe` sees every recorded domain event once it is published (or kept back): service metrics.
        `send` publishes one message and returns once JetStream acknowledged it (default: nats-py's)."""
        self.app, self.contract, self.js, self.naming, self.observe = app, contract, js, naming, observe
        service = self.service = contract.service
        self.batch, self.idle_poll = batch, idle_poll
        self.send = send or self._jetstream_send
        self.window = max(1, window or int(os.environ.get("DSI_RELAY_WINDOW", "256")))
        self.stream = naming.stream(service_stream(service))
        self.subjects = naming.subject(f"dsi.{segment(service)}.>")
        self.position = 0  # every notification up to here is on the stream (or kept back)
        self._read = 0  # every notification up to here is sent (or kept back)
        self._window: deque[_Read] = deque()
        self._sending = 0  # publishes in the window
        self._last_sent: tuple[str, asyncio.Task[None]] | None = None  # Nats-Msg-Id and publish of the latest send
        self.published = 0  # declared events this relay has seen stored on the stream since it started
        # Fault hook for the crash test: after this many acks, stop settling (acks still arrive, `position` stays).
        self._hold_after = int(os.environ.get("DSI_FAULT_RELAY_HOLD_AFTER_ACKS", "0"))
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
        try:
            await self._resume()
            log.info("relay %s resumes after notification %d", self.service, self.position)
            delay = 0.2
            while not self.stopping.is_set():
                try:
                    published = await self.publish_pending()
                except RETRYABLE as exc:
                    if self.stopping.is_set():
                        raise
                    log.warning("relay %s sends again after notification %d: %s", self.service, self.position,
                                type(exc).__name__)
                    await self._drop_window()
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
                    await self._resume()
                    continue
                delay = 0.2
                if not published:
                    self._wake.clear()
                    try:
                        await asyncio.wait_for(self._wake.wait(), self.idle_poll)
                    except TimeoutError:
                        pass
        finally:
            for read in self._window:
                if read.ack is not None:
                    read.ack.cancel()

    async def publish_pending(self) -> int:
        """Send the next batch through the window; with nothing new, wait until all in flight are settled.
        Returns how many notifications were read."""
        notifications = await asyncio.to_thread(
            self.app.recorder.select_notifications, start=self._read, limit=self.batch, inclusive_of_start=False
        )
        for notification in notifications:
            # the window bounds publishes awaiting their ack (and, loosely, kept-back events read behind them)
            while self._sending >= self.window or len(self._window) >= 4 * self.window:
                await self._settle_head()
            read = self._send(notification)
            self._window.append(read)
            self._sending += read.ack is not None
            self._read = notification.id
            while self._window and (self._window[0].ack is None or self._window[0].ack.done()):
                await self._settle_head()
        if not notifications:
            while self._window:
                await self._settle_head()
        return len(notifications)

    def _send(self, notification: Notification) -> _Read:
        """Decode, encode and start publishing one notification (tasks start in creation order: notification order)."""
        domain_event, trace_context = self.app.tracing_mapper.decode_notification(notification)
        message = outgoing(self.contract, notification.id, domain_event)
        if message is None:
            return _Read(notification.id, domain_event)  # not in the contract: kept in this service's store only
        subject, body = message
        msg_id = f"{self.service}:{notification.id}"
        previous = self._last_sent
        landed = previous is not None and previous[1].done() and not previous[1].cancelled() \
            and previous[1].exception() is None
        expect = previous[0] if previous is not None and not landed else None
        ack = asyncio.create_task(self._publish(notification.id, subject, body, trace_context, msg_id, expect))
        self._last_sent = (msg_id, ack)
        return _Read(notification.id, domain_event, subject, ack)

    async def _publish(self, notification_id: int, contract_subject: str, body: bytes, trace_context: Any,
                       msg_id: str, expect: str | None) -> None:
        with self.tracer.start_as_current_span(
            f"publish {contract_subject}", context=extract(trace_context), kind=trace.SpanKind.PRODUCER
        ) as span:
            span.set_attribute("messaging.system", "nats")
            span.set_attribute("messaging.destination.name", contract_subject)
            span.set_attribute("dsi.notification_id", notification_id)
            headers = {MSG_ID: msg_id, **inject()}
            if expect is not None:  # stored only right after its predecessor, never ahead of it
                headers[EXPECTED_LAST] = expect
            await self.send(self.naming.subject(contract_subject), body, headers)

    async def _jetstream_send(self, subject: str, body: bytes, headers: dict[str, str]) -> None:
        await self.js.publish(subject, body, headers=headers, timeout=5)

    async def _settle_head(self) -> None:
        """Wait for the oldest publish in the window; its failure is raised (the window is then sent again)."""
        read = self._window[0]
        if read.ack is not None:
            await read.ack
            if self._hold_after and self.published >= self._hold_after:
                await asyncio.Future()  # fault hook: hold the window in flight until the process is killed
        self._settled(self._window.popleft())

    def _settled(self, read: _Read) -> None:
        self.position = read.notification_id
        if read.ack is not None:
            self._sending -= 1
        if read.subject is not None:
            self.published += 1
            MESSAGES_OUT.add(1, {"service": self.service, "subject": read.subject})
        if self.observe is not None:
            self.observe(read.domain_event)

    async def _drop_window(self) -> None:
        acks = [read.ack for read in self._window if read.ack is not None]
        for ack in acks:
            ack.cancel()
        await asyncio.gather(*acks, return_exceptions=True)

    async def _resume(self) -> None:
        """Continue after this service's last event on its stream: everything up to it is there, in order."""
        resumed = await self._retrying(self.resume_position)
        while self._window and self._window[0].notification_id <= resumed:
            self._settled(self._window.popleft())  # stored, though its acknowledgement never came
        self._window.clear()
        self._sending = 0
        self.position = self._read = max(self.position, resumed)
        self._last_sent = None

    async def _retrying(self, operation: Callable[[], Awaitable[T]]) -> T:
        """Keep trying while NATS is unreachable: nothing is skipped, order is kept."""
        delay = 0.2
        while True:
            try:
                return await operation()
            except RETRYABLE as exc:
                if self.stopping.is_set():
                    raise
                log.warning("relay %s waiting for NATS: %s", self.service, type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
