"""Keeps a service's hash chain sealed and its checkpoints published (`dsi_shared.chain`): a worker beside the
relay, woken when events are recorded. Checkpoints go to `dsi.checkpoint.<service>` on JetStream, outside the
service's database; `dsi audit verify` and `GET /audit/verify` read them back."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import UTC, datetime

import nats
from eventsourcing.persistence import IntegrityError, InterfaceError, OperationalError
from nats.js import JetStreamContext

from dsi_shared.bus import Naming, read_all, segment
from dsi_shared.chain import Checkpoint, HashChain, Seal
from dsi_shared.store import ServiceApplication

log = logging.getLogger(__name__)
STORE_RETRY_SECONDS = 0.5


def checkpoint_subject(naming: Naming, service: str) -> str:
    return naming.subject(f"dsi.checkpoint.{segment(service)}")


async def publish_checkpoint(js: JetStreamContext, naming: Naming, service: str, head: Seal) -> Checkpoint:
    checkpoint = Checkpoint(service, head.position, head.chain_hash, datetime.now(UTC))
    body = json.dumps({"service": service, "position": head.position, "chain_hash": head.chain_hash,
                       "at": checkpoint.at.isoformat()}).encode()
    await js.publish(checkpoint_subject(naming, service), body,
                     headers={"Nats-Msg-Id": f"{service}:checkpoint:{head.position}:{head.chain_hash[:16]}"})
    return checkpoint


async def read_checkpoints(js: JetStreamContext, naming: Naming, service: str, timeout: float = 2.0) -> list[Checkpoint]:
    """Every checkpoint the service ever published, oldest first."""
    found: list[Checkpoint] = []
    async for message in read_all(js, checkpoint_subject(naming, service), timeout):
        data = json.loads(message.data)
        found.append(Checkpoint(data["service"], int(data["position"]), data["chain_hash"],
                                datetime.fromisoformat(data["at"])))
    return found


class Sealer:
    def __init__(self, app: ServiceApplication, service: str, js: JetStreamContext, naming: Naming,
                 interval: float = 10.0) -> None:
        self.app, self.service, self.js, self.naming, self.interval = app, service, js, naming, interval
        self.stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self.published: Checkpoint | None = None

    def wake_threadsafe(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.call_soon_threadsafe(self._wake.set)

    async def run(self) -> None:
        chain = await asyncio.to_thread(HashChain, self.app)
        last_publish = 0.0
        while not self.stopping.is_set():
            self._wake.clear()
            try:
                head = await asyncio.to_thread(chain.seal_all)
            except IntegrityError:  # another replica sealed the same events first: start again from its head
                continue
            except (OperationalError, InterfaceError) as exc:
                # the store away for a moment (a connection cut, the database refusing): seal once it is back, rather
                # than end the worker and with it the whole service (the fault soak found this: `make soak`)
                log.warning("sealer %s waits for the store: %s", self.service, type(exc).__name__)
                await asyncio.sleep(STORE_RETRY_SECONDS)
                continue
            due = time.monotonic() - last_publish >= self.interval
            if head is not None and due and (self.published is None or self.published.position != head.position):
                try:
                    self.published = await publish_checkpoint(self.js, self.naming, self.service, head)
                    last_publish = time.monotonic()
                except (nats.errors.Error, TimeoutError) as exc:
                    log.warning("sealer %s could not publish a checkpoint: %s", self.service, type(exc).__name__)
            unpublished = head is not None and (self.published is None or self.published.position != head.position)
            wait = max(0.2, self.interval - (time.monotonic() - last_publish)) if unpublished else self.interval
            try:
                await asyncio.wait_for(self._wake.wait(), wait)
            except TimeoutError:
                pass
