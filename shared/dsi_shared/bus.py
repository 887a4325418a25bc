"""NATS JetStream: the one place streams are declared, and subject naming with the deployment prefix."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError

from dsi_shared.config import Settings

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


def segment(service: str) -> str:
    """The subject segment of a service's events: `qip-share` publishes `dsi.qip.*`."""
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


async def connect(settings: Settings, name: str) -> Client:
    async def on_error(exc: Exception) -> None:
        log.warning("nats connection problem: %s", type(exc).__name__)

    return await nats.connect(
        settings.nats_url,
        name=name,
        user=settings.nats_user,
        password=settings.nats_password,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        error_cb=on_error,
    )


async def ensure_streams(js: JetStreamContext, naming: Naming) -> None:
    for name, subjects in STREAMS.items():
        config = StreamConfig(
            name=naming.stream(name),
            subjects=[naming.subject(subjects)],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            duplicate_window=DUPLICATE_WINDOW_SECONDS,
        )
        for attempt in range(5):
            try:
                await js.add_stream(config)
                break
            except BadRequestError:
                # Another service created it first with the same settings; make ours authoritative.
                await js.update_stream(config)
                break
            except (TimeoutError, nats.errors.TimeoutError):
                await asyncio.sleep(0.2 * (attempt + 1))


async def delete_streams(js: JetStreamContext, naming: Naming) -> None:
    for name in STREAMS:
        try:
            await js.delete_stream(naming.stream(name))
        except nats.js.errors.NotFoundError:
            pass


async def read_all(js: JetStreamContext, subject: str, timeout: float = 2.0) -> AsyncIterator[Msg]:
    """Every message a stream holds on `subject`, oldest first, then stop (an ordered, ephemeral consumer)."""
    try:
        subscription = await js.subscribe(subject, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL)
    except nats.js.errors.NotFoundError:
        return
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
