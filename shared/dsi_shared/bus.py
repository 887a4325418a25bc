"""NATS JetStream: the one place streams are declared, and subject naming with the deployment prefix."""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError

from dsi_shared.config import Settings, nats_servers, stream_replicas

if TYPE_CHECKING:
    from faststream.nats import NatsBroker

    from dsi_shared.contracts import PublicEvent

log = logging.getLogger(__name__)

# stream name → contract subject filter (DESIGN.md §4). Declared here and nowhere else.
STREAMS: dict[str, str] = {
    "DSI_IN": "dsi.in.>",
    "DSI_ENROLLMENT": "dsi.enrollment.>",
    "DSI_SUBMISSIONS": "dsi.submissions.>",
    "DSI_MILESTONES": "dsi.milestones.>",
    "DSI_PAYMENTS": "dsi.payments.>",
    "DSI_QIP": "dsi.qip.>",
    "DSI_DEAD_LETTERS": "dsi.dead-letter.>",
    "DSI_CHECKPOINTS": "dsi.checkpoint.>",  # each store's hash-chain head, outside its database (dsi_shared.chain)
}
DUPLICATE_WINDOW_SECONDS = 120.0
DAY = 86400.0
CLOUDEVENTS = "application/cloudevents+json"  # structured mode (`dsi_shared.events`)
CLI_CONNECT_SECONDS = 5.0  # a command that needs NATS gives up after this (it never waits forever)


def retention() -> dict[str, float]:
    """Streams that can carry PHI → how long they keep a message (JetStream `max_age`, seconds). `DSI_IN` holds what
    outside systems send (HL7 payloads, with names and birth dates, in plain text); `DSI_DEAD_LETTERS` copies any
    message a consumer gave up on. Services' own event streams carry ids, never payloads, and are kept: relays
    resume from them. `0` days keeps messages for ever."""
    days = {"DSI_IN": os.environ.get("DSI_IN_MAX_AGE_DAYS", "30"),
            "DSI_DEAD_LETTERS": os.environ.get("DSI_DEAD_LETTERS_MAX_AGE_DAYS", "90")}
    limits: dict[str, float] = {}
    for stream, raw in days.items():
        value = float(raw)
        if not value >= 0:  # also refuses NaN
            raise ValueError(f"the retention of {stream} must be a number of days >= 0")
        limits[stream] = value * DAY
    return limits


def segment(service: str) -> str:
    """The subject segment of a service's events: `qip-share` publishes `dsi.qip.*`."""
    # Wire names are published, stored history (subjects, DSI_QIP, durables, Nats-Msg-Ids, tracking): never rename them.
    return service.removesuffix("-share")


def service_stream(service: str) -> str:
    return "DSI_" + segment(service).upper()


class Naming:
    """Maps contract names to the names used on this server (prefixed for isolation)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def stream(self, name: str) -> str:
        return f"{self.prefix}_{name}" if self.prefix else name

    def subject(self, contract_subject: str) -> str:
        return f"{self.prefix}.{contract_subject}" if self.prefix else contract_subject

    def contract_subject(self, subject: str) -> str:
        return subject.removeprefix(f"{self.prefix}.") if self.prefix else subject


def broker(settings: Settings, name: str, on_error_seen: Callable[[Exception], None] | None = None) -> NatsBroker:
    """A service's FastStream broker: connects as the service's NATS user, waits for NATS for ever and reconnects for
    ever; `on_error_seen` hears each connection problem (a service learns that NATS is down while it keeps trying). Its
    AsyncAPI document names the server by `host:port` only: never a user or password from the URL."""
    from faststream.nats import NatsBroker
    from faststream.security import SASLPlaintext

    async def on_error(exc: Exception) -> None:
        log.warning("nats connection problem: %s", type(exc).__name__)
        if on_error_seen is not None:
            on_error_seen(exc)

    security = SASLPlaintext(username=settings.nats_user, password=settings.nats_password or "") \
        if settings.nats_user else None
    return NatsBroker(
        # a cluster's servers: it connects to any and fails over to the others
        nats_servers(settings.nats_url), name=name, security=security, max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,  # type: ignore[arg-type]  # nats-py takes seconds as a float; FastStream types it int
        error_cb=on_error, graceful_timeout=None, logger=log, log_level=logging.DEBUG,
        specification_url=f"nats://{server_of(settings.nats_url)}", description="NATS JetStream (DSI)",
    )


class Publishers:
    """The service's FastStream publishers: one per subject its contract declares (documented with the model) and
    its dead-letter subject. `send` is the relay's (and the dead-lettering's) transport: it returns once JetStream
    acknowledged the message."""

    def __init__(self, broker: NatsBroker, naming: Naming, service: str, models: Sequence[type[PublicEvent]]) -> None:
        from faststream.nats import JStream

        own = JStream(naming.stream(service_stream(service)), declare=False)  # declared by `ensure_streams` only
        self.by_subject: dict[str, Any] = {}
        for model in models:
            subject = naming.subject(model.subject)
            self.by_subject[subject] = broker.publisher(
                subject, stream=own, schema=model, title=model.subject, headers={"content-type": CLOUDEVENTS},
                description=f"{(model.__doc__ or model.__name__).strip()} (schema `{model.dataschema()}`)")
        dead = naming.subject(f"dsi.dead-letter.{service}")
        self.by_subject[dead] = broker.publisher(
            dead, stream=JStream(naming.stream("DSI_DEAD_LETTERS"), declare=False), title=f"dsi.dead-letter.{service}",
            description="A message this service gave up on, as it arrived, with headers Dsi-Reason, "
                        "Dsi-Original-Subject, Dsi-Original-Stream, Dsi-Original-Sequence, Dsi-Consumer, Dsi-Deliveries")

    async def send(self, subject: str, body: bytes, headers: dict[str, str]) -> None:
        # The subject and correlation id (the CloudEvent id) passed in spare FastStream working them out per message
        # (its subject template alone cost the relay about a fifth of its rate).
        await self.by_subject[subject].publish(body, subject, headers=headers, correlation_id=headers.get("Nats-Msg-Id"),
                                               timeout=5)


async def ensure_streams(js: JetStreamContext, naming: Naming, strict: bool = False) -> None:
    """Declare every stream (create, or update to these settings). `strict`: fail when one cannot be declared
    (the admin at deploy time) instead of carrying on (a service that may find them already declared). Each stream
    has `DSI_STREAM_REPLICAS` copies (an existing one is updated to that count)."""
    max_ages, replicas = retention(), stream_replicas()
    for name, subjects in STREAMS.items():
        config = StreamConfig(
            name=naming.stream(name),
            subjects=[naming.subject(subjects)],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            duplicate_window=DUPLICATE_WINDOW_SECONDS,
            max_age=max_ages.get(name, 0.0),  # 0: no age limit (JetStream's default); an existing stream is updated
            num_replicas=replicas,
        )
        for attempt in range(5):
            try:
                await js.add_stream(config)
                break
            except BadRequestError:
                # Another service created it first with the same settings; make ours authoritative.
                await js.update_stream(config)
                break
            except (TimeoutError, nats.errors.TimeoutError, nats.js.errors.ServiceUnavailableError):
                # ServiceUnavailable: a cluster still electing its JetStream leader
                if strict and attempt == 4:
                    raise
                await asyncio.sleep(0.2 * (attempt + 1))


async def delete_streams(js: JetStreamContext, naming: Naming) -> None:
    for name in STREAMS:
        try:
            await js.delete_stream(naming.stream(name))
        except nats.js.errors.NotFoundError:
            pass


READER_IDLE_SECONDS = 2.0  # a reader's consumer is dropped by the server this long after its reader went away


async def read_all(js: JetStreamContext, subject: str, timeout: float = 2.0) -> AsyncIterator[Msg]:
    """Every message a stream holds on `subject`, oldest first, then stop. The reader is a named, ephemeral push
    consumer filtered to `subject`, created on `$JS.API.CONSUMER.CREATE.<stream>.<name>.<subject>`: a NATS user can
    be granted the subjects it may read and nothing else (a service its own dead letters and checkpoints). It
    delivers without acks to this connection's inbox, and the server drops it once idle (no delete grant needed)."""
    try:
        stream = await js.find_stream_name_by_subject(subject)
        held = (await js.stream_info(stream, subjects_filter=subject)).state.subjects or {}
    except nats.js.errors.NotFoundError:
        return
    if not any(held.values()):
        return  # nothing there now: answer at once rather than wait `timeout` for a message that will not come
    config = ConsumerConfig(name=f"reader-{uuid.uuid4().hex}", ack_policy=AckPolicy.NONE,
                            deliver_policy=DeliverPolicy.ALL, max_deliver=1, mem_storage=True, num_replicas=1,
                            inactive_threshold=READER_IDLE_SECONDS)
    subscription = await js.subscribe(subject, stream=stream, config=config, manual_ack=True)
    try:
        while True:
            try:
                message = await subscription.next_msg(timeout=timeout)
            except nats.errors.TimeoutError:
                return
            yield message
            if message.metadata.num_pending == 0:
                return
    finally:
        await subscription.unsubscribe()


class BusUnreachable(Exception):
    """NATS did not answer in time: a command that needs it stops, naming where it looked (never a password)."""


def server_of(url: str) -> str:
    """`host:port` of a NATS URL (each of a cluster's), without any user or password in it (for messages)."""
    named = []
    for one in nats_servers(url) or [url]:
        parts = urlsplit(one if "://" in one else f"nats://{one}")
        named.append(f"{parts.hostname or '?'}:{parts.port or 4222}")
    return ",".join(named)


async def connect_briefly(url: str, name: str, user: str | None = None, password: str | None = None,
                          timeout: float = CLI_CONNECT_SECONDS) -> Client:
    """A connection for a command (the CLI, the demo): raises BusUnreachable when NATS cannot be reached within
    `timeout` seconds, and does not reconnect once connected (an outage mid-command fails it, never hangs it).
    Services use `connect`, which waits for NATS for ever. (`max_reconnect_attempts=0` means "for ever" too.)"""

    async def quiet(_: Exception) -> None:
        pass  # the caller reports the failure once

    try:
        return await asyncio.wait_for(
            nats.connect(nats_servers(url), name=name, user=user, password=password, connect_timeout=min(2.0, timeout),
                         allow_reconnect=False, max_reconnect_attempts=1, reconnect_time_wait=0.2, error_cb=quiet),
            timeout)
    except (TimeoutError, OSError, nats.errors.Error) as exc:
        raise BusUnreachable(f"NATS at {server_of(url)} is unreachable ({type(exc).__name__})") from None
