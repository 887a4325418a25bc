"""Tracking consumer: a durable JetStream pull consumer whose effects happen exactly once.

A service reads each upstream stream through one durable consumer, so it sees that stream's events in the
order they were recorded (a rejection after its signature, a span change after its opening). For each fetched
batch (group commit, `handle_batch`): decode each CloudEvent, skip it if its upstream position is already tracked,
else run the service's handler for its subject, in stream order, against the aggregates the batch already changed
(`unitofwork`); then record all the resulting events *with* every message's tracking record in one transaction,
and only then ack them. A redelivery (crash before ack, NATS restart, re-publish days later) hits the tracking record
and is acked without effect. A message that keeps failing goes to `dsi.dead-letter.<service>` with the
reason after `DSI_MAX_ATTEMPTS` deliveries (at once when the error is permanent).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Annotated, Any, Generic, TypeVar, cast

import nats
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import Tracking
from faststream import AckPolicy as FastStreamAck
from faststream import Context
from faststream.nats import JStream, NatsBroker, PullSub
from faststream.nats.message import NatsBatchMessage
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from opentelemetry import trace
from pydantic import ConfigDict

from dsi_shared import events
from dsi_shared.asyncapi import INPUT_EXAMPLES
from dsi_shared.bus import STREAMS, Naming, service_stream
from dsi_shared.contracts import Delivered, Message
from dsi_shared.deadletters import LETTERS
from dsi_shared.errors import PermanentError, describe
from dsi_shared.natsperms import durable_name
from dsi_shared.occ import retry_on_conflict
from dsi_shared.relay import Send
from dsi_shared.store import ServiceApplication, processed_among
from dsi_shared.telemetry import DEAD_LETTERS, MESSAGES_IN, extract, tracer
from dsi_shared.unitofwork import unit_of_work

log = logging.getLogger(__name__)

FETCH_SECONDS = 1.0  # a fetch returns as soon as a message is there; this long on an idle stream
M = TypeVar("M", bound=Message)


@dataclass(frozen=True)
class Subscription(Generic[M]):
    """Which upstream events a service reacts to: the subject, the model its payload is read as (the producer's
    `PublicEvent`, or the documented model of a `dsi.in.*` input), and the handler that turns each into aggregates
    to save."""

    stream: str  # contract stream name, e.g. "DSI_ENROLLMENT"
    subject: str  # one contract subject of that stream, e.g. "dsi.enrollment.agreement-signed"
    model: type[M]
    handler: Callable[[ServiceApplication, Delivered[M]], Sequence[Aggregate]]

    def deliver(self, app: ServiceApplication, event: events.IncomingEvent) -> Sequence[Aggregate]:
        """The handler's aggregates for one event; a payload its model refuses is a `ValidationError` (a
        `ValueError`: permanent, dead-lettered with the reason)."""
        return self.handler(app, Delivered(event, cast(M, self.model.read(event))))


def by_stream(subscriptions: Sequence[Subscription[Any]]) -> dict[str, dict[str, Subscription[Any]]]:
    """Contract stream → {contract subject → subscription}: one consumer per stream keeps the stream's order."""
    grouped: dict[str, dict[str, Subscription[Any]]] = {}
    for subscription in subscriptions:
        handlers = grouped.setdefault(subscription.stream, {})
        if subscription.subject in handlers:
            raise ValueError(f"two handlers for {subscription.subject}")
        if not subscription.subject.startswith(STREAMS[subscription.stream].removesuffix(">")):
            raise ValueError(f"{subscription.subject} is not a subject of {subscription.stream}")
        model_subject = getattr(subscription.model, "subject", subscription.subject)
        if model_subject != subscription.subject:
            raise ValueError(f"{subscription.subject} is read as {subscription.model.__name__} ({model_subject})")
        handlers[subscription.subject] = subscription
    return grouped


def tracking_for(event: events.IncomingEvent, stream: str, stream_sequence: int) -> Tracking:
    """Our own services' events are tracked by (service, notification id), so a re-publish of the same
    notification (a new stream sequence) is still recognised; everything else by stream position. A claim to be
    a service's event counts only on that service's own stream: a message on `DSI_IN` saying it is
    `milestones:7` is tracked as `DSI_IN` position, so it can never make the real `milestones:7` look processed."""
    position = event.upstream_position
    if position is not None and event.source == f"/dsi/{position[0]}" and service_stream(position[0]) == stream:
        return Tracking(application_name=position[0], notification_id=position[1])
    return Tracking(application_name=f"nats:{stream}", notification_id=stream_sequence)


@dataclass
class _Item:
    """One fetched message, read: no handler (another service's concern), or its event and tracking record (None
    when it cannot be decoded)."""

    message: Msg
    subject: str
    handler: Subscription[Any] | None
    event: events.IncomingEvent | None = None
    tracking: Tracking | None = None


@dataclass
class _Group:
    """What one group commit did: an outcome per message from the first (applied, duplicate, ignored), the
    events and tracking records saved, and links to the messages' spans."""

    outcomes: list[str] = field(default_factory=list)
    events: list[Any] = field(default_factory=list)
    trackings: list[Tracking] = field(default_factory=list)
    links: list[trace.Link] = field(default_factory=list)


class TrackingConsumer:
    def __init__(self, app: ServiceApplication, service: str, js: JetStreamContext, naming: Naming,
                 stream: str, handlers: dict[str, Subscription[Any]], *, ack_wait: float, max_attempts: int,
                 batch: int = 100) -> None:
        self.app, self.service, self.js, self.naming = app, service, js, naming
        self.contract_stream, self.handlers = stream, handlers
        self.ack_wait, self.max_attempts, self.batch = ack_wait, max_attempts, batch
        self.stream = naming.stream(stream)
        self.durable = durable_name(service, stream)
        self.tracer = tracer(service)
        self.dead_letter: Send = self._jetstream_send  # the service's FastStream publisher when it runs
        # Fault hooks for the crash tests (a test kills the process while it waits):
        # hold committed messages unacked this long;
        self.pause_before_ack = float(os.environ.get("DSI_FAULT_PAUSE_BEFORE_ACK_SECONDS", "0"))
        # ...after acking this many of a committed group (0: before the first ack);
        self.acks_before_pause = int(os.environ.get("DSI_FAULT_ACKS_BEFORE_PAUSE", "0"))
        # hold a decided group this long before its transaction.
        self.pause_before_commit = float(os.environ.get("DSI_FAULT_PAUSE_BEFORE_COMMIT_SECONDS", "0"))
        self.stopping = asyncio.Event()  # ends `declare`'s wait for NATS
        self.subscriber: Any = None  # FastStream's, once `subscribe`d
        self.lag = 0  # messages pending when the last one was delivered (the lag metric)

    async def lag_now(self) -> int:
        """Messages not yet delivered or not yet acknowledged, asked of the server now (readiness)."""
        info = await self.js.consumer_info(self.stream, self.durable)
        self.lag = int(info.num_pending or 0) + int(info.num_ack_pending or 0)
        return self.lag

    def consumer_config(self) -> ConsumerConfig:
        return ConsumerConfig(
            durable_name=self.durable,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=self.ack_wait,
            max_deliver=-1,  # we count attempts ourselves and dead-letter with the reason
            # the whole stream, in order; subjects this service does not handle are acked without effect
            filter_subject=self.naming.subject(STREAMS[self.contract_stream]),
        )

    async def declare(self) -> None:
        """Create the durable consumer, or update it to these settings (FastStream's subscriber only binds to an
        existing one, so a changed ack wait still reaches the server); waits while NATS or the stream is away."""
        while not self.stopping.is_set():
            try:
                await self.js.add_consumer(self.stream, self.consumer_config())
                return
            except (TimeoutError, nats.errors.Error, OSError) as exc:
                log.warning("consumer %s waiting for NATS: %s", self.durable, type(exc).__name__)
                await asyncio.sleep(0.5)

    def subscribe(self, broker: NatsBroker) -> None:
        """The FastStream subscriber: this durable pull consumer, fetched in batches (group commit) and acked by
        hand after the commit. Service users may not create streams: the stream is only referred to. Each
        subscription's model is documented (AsyncAPI) as a message of the stream's channel."""
        subscriber = broker.subscriber(
            self.naming.subject(STREAMS[self.contract_stream]),
            stream=JStream(self.stream, declare=False),
            durable=self.durable,
            config=self.consumer_config(),
            pull_sub=PullSub(batch_size=self.batch, timeout=FETCH_SECONDS, batch=True),  # fetched by `_pull`
            ack_policy=FastStreamAck.MANUAL,
            title=self.durable,
            description=f"Durable pull consumer `{self.durable}` on {self.contract_stream}: every message in stream "
                        "order; the subjects it handles, read as their models (the CloudEvent `data`): "
                        + "; ".join(f"`{s.subject}` as {s.model.__name__}" for s in self.handlers.values()),
        )

        async def group_commit(message: Annotated[NatsBatchMessage, Context("message")]) -> None:
            await self.handle_batch(message.raw_message)

        subscriber(group_commit, decoder=_undecoded)  # the bodies are read once, by `_read`
        for handled in self.handlers.values():
            subscriber(_documented(handled), filter=_never)
        subscriber._consume_pull = self._pull(subscriber)  # type: ignore[method-assign,assignment]
        self.subscriber = subscriber

    def _pull(self, subscriber: Any) -> Callable[[], Awaitable[None]]:
        """The subscriber's fetch loop, replacing FastStream 0.7.8's batch loop. That one keeps fetching to fill a
        batch and catches only `nats.errors.TimeoutError`, but nats-py 2.16's `fetch` also raises a plain
        `asyncio.TimeoutError` when a follow-up fetch finds nothing: the messages fetched so far were dropped unacked
        and redelivered only after the ack wait, behind later messages (out of stream order). Here each fetch's
        messages (as many as are there, up to the batch) go to the subscriber's handler at once, as before."""

        async def pull() -> None:
            while subscriber.running:
                try:
                    messages = await subscriber.subscription.fetch(batch=self.batch, timeout=FETCH_SECONDS)
                except TimeoutError:  # nats.errors.TimeoutError is one too
                    continue
                except (nats.errors.Error, OSError) as exc:
                    log.warning("consumer %s fetch failed: %s", self.durable, type(exc).__name__)
                    await asyncio.sleep(0.5)
                    continue
                if subscriber.running:  # stopping: left unacked, redelivered to the next run
                    await subscriber.consume(messages)

        return pull

    async def handle_batch(self, messages: Sequence[Msg]) -> None:
        """Group commit: the batch's handlers run in stream order in one unit of work, one transaction saves all
        their events with every message's tracking record, then every message is acked. A message that fails
        splits the batch: those before it commit as a group, it goes alone through `handle` (retried or
        dead-lettered), the rest continue as the next group. When the store refuses the group itself (away, or a
        conflict that persists), each message goes alone."""
        items = [self._read(message) for message in messages]
        while items:
            self.lag = items[-1].message.metadata.num_pending
            try:
                group = await asyncio.to_thread(self.apply_group, items)
            except Exception as exc:  # noqa: BLE001 - each message alone then meets the failure with its own retries
                log.warning("consumer %s could not commit a group of %d: %s; handling each alone", self.durable,
                            len(items), describe(exc))
                for item in items:
                    await self.handle(item.message)
                return
            for item, outcome in zip(items, group.outcomes, strict=False):
                if item.handler is not None:
                    MESSAGES_IN.add(1, {"service": self.service, "subject": item.subject, "outcome": outcome})
            await self._ack_all(items[:len(group.outcomes)])
            if len(group.outcomes) < len(items):
                await self.handle(items[len(group.outcomes)].message)  # the failing message, alone
            items = items[len(group.outcomes) + 1:]

    def _read(self, message: Msg) -> _Item:
        subject = self.naming.contract_subject(message.subject)
        item = _Item(message, subject, self.handlers.get(subject))
        if item.handler is not None:
            try:
                sequence = message.metadata.sequence.stream
                item.event = replace(events.decode(message.data, subject, f"{self.stream}:{sequence}"),
                                     stored_at=message.metadata.timestamp)
                item.tracking = tracking_for(item.event, self.contract_stream, sequence)
            except Exception:  # noqa: BLE001 - undecodable: `handle` dead-letters it with the reason
                item.event = None
        return item

    def apply_group(self, items: Sequence[_Item]) -> _Group:
        """Decide the longest prefix of `items` whose handlers all succeed, from fresh state, and save it in one
        transaction; retried from fresh state on an optimistic-concurrency conflict (another replica or an HTTP
        command changed an aggregate, or recorded one of the positions). Returns one outcome per message done."""

        def attempt() -> _Group:
            count = len(items)
            while True:
                group, failed_at = self._decide(items[:count])
                if failed_at is None:
                    break
                count = failed_at  # a handler failed: decide again without it (its changes are discarded)
            if group.trackings:
                if self.pause_before_commit:
                    time.sleep(self.pause_before_commit)
                with self.tracer.start_as_current_span("commit group", links=group.links) as span:
                    span.set_attribute("dsi.messages", len(group.trackings))
                    self.app.save_tracked(group.events, *group.trackings)
            return group

        return retry_on_conflict(attempt, f"what {self.durable} changes")

    def _decide(self, items: Sequence[_Item]) -> tuple[_Group, int | None]:
        """Run each message's handler in order in one unit of work; the index of the first that fails, if any."""
        group = _Group()
        handled = [item.tracking for item in items if item.tracking is not None]
        done = processed_among(self.app, handled)
        stamp = self.app.tracing_mapper.stamp
        with unit_of_work(self.app.repository) as work:
            for index, item in enumerate(items):
                if item.handler is None:
                    group.outcomes.append("ignored")
                    continue
                if item.event is None or item.tracking is None:
                    return group, index
                key = (item.tracking.application_name, item.tracking.notification_id)
                with self._span("process", item.subject, item.message.headers) as span:
                    span.set_attribute("dsi.duplicate", key in done)
                    group.links.append(trace.Link(span.get_span_context()))
                    if key in done:
                        group.outcomes.append("duplicate")
                        continue
                    try:
                        work.keep(item.handler.deliver(self.app, item.event), stamp)
                    except Exception:  # noqa: BLE001 - retried alone by `handle`, with its own retries
                        return group, index
                done.add(key)
                group.trackings.append(item.tracking)
                group.outcomes.append("applied")
            group.events = work.events
        return group, None

    async def _ack_all(self, items: Sequence[_Item]) -> None:
        """Acks after the commit (fault hooks: ack `acks_before_pause` of them, then hold the rest)."""
        for number, item in enumerate(items):
            if self.pause_before_ack and number == self.acks_before_pause:
                await asyncio.sleep(self.pause_before_ack)
            await self._settle(item.message.ack)

    async def handle(self, message: Msg) -> None:
        self.lag = message.metadata.num_pending
        contract_subject = self.naming.contract_subject(message.subject)
        sequence = message.metadata.sequence.stream
        handler = self.handlers.get(contract_subject)
        if handler is None:
            await self._settle(message.ack)  # another service's concern: nothing to do, nothing to track
            return
        with self._span("process", contract_subject, message.headers) as span:
            try:
                event = replace(events.decode(message.data, contract_subject, f"{self.stream}:{sequence}"),
                                stored_at=message.metadata.timestamp)
                tracking = tracking_for(event, self.contract_stream, sequence)
                recorded = await asyncio.to_thread(self.apply, handler, event, tracking)
                span.set_attribute("dsi.duplicate", not recorded)
                MESSAGES_IN.add(1, {"service": self.service, "subject": contract_subject,
                                    "outcome": "applied" if recorded else "duplicate"})
            except Exception as exc:  # noqa: BLE001 - every failure is either retried or dead-lettered
                await self.failed(message, contract_subject, exc)
                return
            if self.pause_before_ack:
                await asyncio.sleep(self.pause_before_ack)
            await self._settle(message.ack)

    def _span(self, verb: str, subject: str, headers: dict[str, str] | None) -> Any:
        """The consumer span of one message (`process` or `replay`), continuing the producer's trace."""
        return self.tracer.start_as_current_span(
            f"{verb} {subject}", context=extract(headers), kind=trace.SpanKind.CONSUMER,
            attributes={"messaging.system": "nats", "messaging.destination.name": subject,
                        "messaging.consumer.group.name": self.durable})

    def takes_back(self, dead_letter: Msg) -> bool:
        """Whether `dead_letter` is one of this consumer's (`apply_dead_letter` applies it)."""
        headers = dead_letter.headers or {}
        return headers.get("Dsi-Consumer") == self.durable and headers.get("Dsi-Original-Stream") == self.contract_stream

    async def apply_dead_letter(self, dead_letter: Msg) -> bool:
        """One of this consumer's dead letters applied here, in this process, as its redelivery would be once its
        cause is fixed: the same handler and the same tracking position, so it counts once however often it is
        replayed (and not at all if a republish applied it already: False). The handler's error is raised as is."""
        headers = dead_letter.headers or {}
        subject, sequence = headers.get("Dsi-Original-Subject", ""), int(headers.get("Dsi-Original-Sequence", "0"))
        handler = self.handlers.get(subject)
        if not self.takes_back(dead_letter) or handler is None or sequence < 1:
            raise PermanentError(f"not a dead letter {self.durable} can take back")
        with self._span("replay", subject, headers) as span:
            event = replace(events.decode(dead_letter.data, subject, f"{self.stream}:{sequence}"),
                            stored_at=dead_letter.metadata.timestamp)
            recorded = await asyncio.to_thread(self.apply, handler, event, tracking_for(event, self.contract_stream,
                                                                                          sequence))
            span.set_attribute("dsi.duplicate", not recorded)
            MESSAGES_IN.add(1, {"service": self.service, "subject": subject,
                                "outcome": "applied" if recorded else "duplicate"})
            return recorded

    def apply(self, handler: Subscription[Any], event: events.IncomingEvent, tracking: Tracking) -> bool:
        """Handler + save with tracking; retried on an optimistic-concurrency conflict (another replica or an HTTP
        command changed the same aggregate: reload and decide again). False = duplicate. A conflict that persists
        is `ConcurrentChange`: not permanent, so the message is redelivered."""

        def attempt() -> bool:
            if self.app.has_processed(tracking):
                return False
            return self.app.save_tracked(handler.deliver(self.app, event), tracking)

        return retry_on_conflict(attempt, f"what {self.durable} changes")

    async def failed(self, message: Msg, contract_subject: str, exc: Exception) -> None:
        reason = describe(exc)
        attempts = message.metadata.num_delivered
        permanent = isinstance(exc, PermanentError | ValueError)
        dead = permanent or attempts >= self.max_attempts
        MESSAGES_IN.add(1, {"service": self.service, "subject": contract_subject,
                            "outcome": "dead-lettered" if dead else "retried"})
        if dead:
            DEAD_LETTERS.add(1, {"service": self.service, "subject": contract_subject})
            log.error("dead-lettering %s seq %d after %d deliveries: %s", contract_subject,
                      message.metadata.sequence.stream, attempts, reason)
            headers = {
                "Nats-Msg-Id": f"dead-letter:{self.durable}:{message.metadata.sequence.stream}",
                "Dsi-Original-Subject": contract_subject,
                "Dsi-Original-Stream": self.contract_stream,
                "Dsi-Original-Sequence": str(message.metadata.sequence.stream),
                "Dsi-Consumer": self.durable,
                "Dsi-Deliveries": str(attempts),
                "Dsi-Reason": reason,
                **{k: v for k, v in (message.headers or {}).items() if k in {"traceparent", "tracestate"}},
            }
            subject = self.naming.subject(LETTERS.format(service=self.service))
            if await self._settle(lambda: self.dead_letter(subject, message.data, headers)):
                await self._settle(message.ack)
        else:
            log.warning("retrying %s seq %d (delivery %d): %s", contract_subject,
                        message.metadata.sequence.stream, attempts, reason)
            await self._settle(lambda: message.nak(delay=min(0.2 * 2**attempts, 10.0)))

    async def _jetstream_send(self, subject: str, body: bytes, headers: dict[str, str]) -> None:
        await self.js.publish(subject, body, headers=headers, timeout=5)

    @staticmethod
    async def _settle(operation: Callable[[], Awaitable[object]]) -> bool:
        """Ack/nak/publish may fail while NATS is away: the message is then redelivered, and tracking
        makes the redelivery harmless, so the failure is logged and not retried here."""
        try:
            await operation()
            return True
        except (TimeoutError, nats.errors.Error, OSError) as exc:
            log.warning("could not settle message: %s", type(exc).__name__)
            return False


async def _undecoded(_: object) -> None:
    """FastStream does not decode the batch's bodies: `_read` decodes each CloudEvent once."""


async def _never(_: object) -> bool:
    return False


def _documented(subscription: Subscription[Any]) -> Callable[..., Awaitable[None]]:
    """A handler that only documents (AsyncAPI) what `subscription.subject` carries: its model, with an example when
    integrators send it (`dsi.in.*`). Its filter never matches: every batch goes to the group commit."""
    body: Any = subscription.model
    if subscription.subject in INPUT_EXAMPLES:  # the same model, its JSON schema with the example
        extra: dict[str, Any] = {"examples": [INPUT_EXAMPLES[subscription.subject]]}
        body = type(body.__name__, (body,), {"model_config": ConfigDict(json_schema_extra=extra), "__doc__": body.__doc__})

    async def reads(message: Any) -> None:
        raise AssertionError("documentation only")

    reads.__annotations__ = {"message": body, "return": None}  # resolved by FastStream as the payload's type
    reads.__name__ = reads.__qualname__ = subscription.model.__name__
    reads.__doc__ = f"`{subscription.subject}`: {subscription.model.__doc__ or subscription.model.__name__}"
    return reads
