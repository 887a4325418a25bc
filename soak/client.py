"""HTTP, MLLP and NATS as the workload uses them while services die under it: each call retried until it lands, and
the two calls that are not idempotent (a registration, a delivery) checked before they are sent again."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import nats
import nats.errors
from nats.aio.client import Client

from soak.cluster import Cluster

STAFF = {"Authorization": "Bearer staff"}
HIE = {"Authorization": "Bearer hie-token"}
AUDITOR = {"Authorization": "Bearer auditor-token"}
GIVE_UP_SECONDS = 180.0


async def connect(url: str, deadline: float) -> Client:
    """A connection to the run's NATS, tried again while it is down (a fault may have stopped it) until `deadline`
    (`time.monotonic()`); it then reconnects for ever."""
    while True:
        try:
            return await nats.connect(url, max_reconnect_attempts=-1, reconnect_time_wait=0.2, error_cb=ignore)
        except (nats.errors.Error, OSError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def ignore(_: Exception) -> None:
    """NATS going away is one of the faults: the client reconnects, and its reports would drown the soak's own."""


class Unanswered(Exception):
    """The request may or may not have been applied (the connection broke after it was sent)."""


class Api:
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.http = httpx.AsyncClient(timeout=20)
        self._nc: Client | None = None

    async def close(self) -> None:
        await self.http.aclose()
        if self._nc is not None:
            await self._nc.close()

    async def once(self, method: str, service: str, path: str, headers: dict[str, str], **kwargs: Any) -> httpx.Response:
        """One attempt: the answer, or `Unanswered` when nothing came back (the service was down or died)."""
        try:
            response = await self.http.request(method, self.cluster.url(service) + path, headers=headers, **kwargs)
        except httpx.TransportError as exc:
            raise Unanswered(type(exc).__name__) from None
        if response.status_code >= 500:  # the store or the bus is down for a moment: nothing was recorded
            raise Unanswered(str(response.status_code))
        return response

    async def call(self, method: str, service: str, path: str, headers: dict[str, str] = STAFF,
                   before_retry: Callable[[], Awaitable[httpx.Response | None]] | None = None,
                   **kwargs: Any) -> httpx.Response:
        """Until answered; `before_retry` may find that an unanswered attempt was applied after all."""
        deadline, delay = time.monotonic() + GIVE_UP_SECONDS, 0.1
        while True:
            try:
                response = await self.once(method, service, path, headers, **kwargs)
                if response.status_code == 401 or response.status_code == 403:
                    raise AssertionError(f"{method} {path}: {response.status_code}")
                return response
            except Unanswered:
                if time.monotonic() > deadline:
                    raise
            await asyncio.sleep(delay)  # backoff while the fault lasts, not synchronisation
            delay = min(delay * 2, 1.0)
            if before_retry is not None and (found := await self._quietly(before_retry)) is not None:
                return found

    async def _quietly(self, check: Callable[[], Awaitable[httpx.Response | None]]) -> httpx.Response | None:
        try:
            return await check()
        except Unanswered:
            return None

    async def json(self, method: str, service: str, path: str, headers: dict[str, str] = STAFF, **kwargs: Any) -> Any:
        response = await self.call(method, service, path, headers, **kwargs)
        assert response.status_code < 400, f"{method} {path}: {response.status_code} {response.text[:300]}"
        return response.json()

    async def nc(self) -> Client:
        if self._nc is None:
            self._nc = await connect(self.cluster.nats.url, time.monotonic() + GIVE_UP_SECONDS)
        return self._nc

    async def publish(self, subject: str, data: dict[str, Any]) -> None:
        """A JetStream publish, again until JetStream acknowledges it (a dsi.in input applies once per content)."""
        deadline = time.monotonic() + GIVE_UP_SECONDS
        while True:
            try:
                await (await self.nc()).jetstream().publish(subject, json.dumps(data).encode(), timeout=2)
                return
            except (nats.errors.Error, OSError, TimeoutError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)

    async def mllp(self, frame: bytes) -> bytes:
        """One MLLP exchange, again until an ACK comes back."""
        deadline = time.monotonic() + GIVE_UP_SECONDS
        while True:
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", self.cluster.mllp_port), 5)
                writer.write(b"\x0b" + frame + b"\x1c\r")
                await writer.drain()
                answer = await asyncio.wait_for(reader.readuntil(b"\x1c\r"), 20)
                writer.close()
                return answer
            except (OSError, TimeoutError, asyncio.IncompleteReadError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
