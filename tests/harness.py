"""Runs services in-process (or as real processes) against a real NATS and real stores, for tests."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import nats
import nats.js.errors
import psycopg
from dsi_shared.bus import STREAMS, Naming, delete_streams
from dsi_shared.config import Settings, nats_servers
from dsi_shared.consumer import Subscription
from dsi_shared.contracts import PublicEvent
from dsi_shared.events import IncomingEvent, encode
from dsi_shared.identifiers import npi_check_digit
from dsi_shared.natsserver import free_port
from dsi_shared.service import ServiceRuntime, discover
from dsi_shared.store import ServiceApplication
from eventsourcing.domain import Aggregate
from nats.aio.client import Client

TOKENS = {"staff": "program-staff", "auditor-token": "auditor", "ops-token": "ops", "hie-token": "hie",
          "sunny-hie": "hie", "unbound-hie": "hie"}
# Sender scope and flags (DSI_TOKENS `token:role@SENDERS+backdate`): the suite's `hie-token` may submit for any sender
# and state past receipt times (its files are dated in 2025), within the test DSI_HIE_MAX_DELAY_HOURS (conftest.py);
# `sunny-hie` is an HIE bound to one facility, on the server's clock; `unbound-hie` is bound to nothing.
TOKEN_SCOPES = {"hie-token": "@*+backdate", "sunny-hie": "@SUNNY_SNF"}
TOKENS_RAW = ",".join(f"{token}:{role}{TOKEN_SCOPES.get(token, '')}" for token, role in TOKENS.items())
STAFF = {"Authorization": "Bearer staff"}
AGREEMENTS = ("LOA", "DSA", "HIE")

FORM = {
    "legal_name": "Sunrise Skilled Nursing", "npi": "1234567893", "tin": "941234567",
    "provider_type": "skilled_nursing", "counties": ["Monterey"], "ehr_product": "PointClickCare",
    "is_hospital": False, "umbrella_group": None, "manages_ehr": True, "sending_facilities": ["SUNRISE"],
    "contact_email": "dsi@sunrise.example", "submitted_on": "2024-03-01",
}


def signature(agreement: str, signed_at: str = "2024-05-01T10:00:00-07:00") -> dict[str, str]:
    return {"agreement": agreement, "signed_at": signed_at, "document_id": f"doc-{agreement}"}


class Stack:
    def __init__(self, nats_url: str, prefix: str, store_url_for: Callable[[str], str]) -> None:
        self.nats_url, self.prefix, self.store_url_for = nats_url, prefix, store_url_for
        self.naming = Naming(prefix)
        self.runtimes: dict[str, ServiceRuntime] = {}
        self.clients: dict[str, httpx.AsyncClient] = {}
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.mllp_port = 0
        self._nc: Client | None = None

    def settings(self, name: str) -> Settings:
        spec = discover()[name]
        return Settings(name, spec.default_port, nats_url=self.nats_url, bus_prefix=self.prefix,
                        tokens_raw=TOKENS_RAW, ack_wait_seconds=2.0, max_attempts=3, store=self.store_url_for(name))

    async def start(self, *names: str) -> None:
        for name in names:
            if name == "submissions":  # each test its own MLLP port
                self.mllp_port = free_port()
                os.environ["SUBMISSIONS_MLLP_PORT"] = str(self.mllp_port)
            runtime = ServiceRuntime(discover()[name], self.settings(name))
            await runtime.start()
            self.runtimes[name] = runtime
            self.clients[name] = httpx.AsyncClient(transport=httpx.ASGITransport(app=runtime.http),
                                                   base_url=f"http://{name}")

    async def stop(self, name: str) -> None:
        await self.clients.pop(name).aclose()
        await self.runtimes.pop(name).stop()

    def spawn(self, name: str, replica: str = "", **extra_env: str) -> str:
        """Run a service as a real OS process (`dsi serve`); returns its base URL. Replicas of one service
        share its store and its durable consumers, as in a scaled deployment."""
        settings, port = self.settings(name), free_port()
        env_prefix = name.upper().replace("-", "_")
        env = {**os.environ, "NATS_URL": self.nats_url, "DSI_BUS_PREFIX": self.prefix, "DSI_TOKENS": TOKENS_RAW,
               f"{env_prefix}_STORE": settings.store, f"{env_prefix}_PORT": str(port),
               "DSI_ACK_WAIT_SECONDS": "2", **extra_env}
        self.processes[f"{name}{'#' + replica if replica else ''}"] = subprocess.Popen(
            [sys.executable, "-m", "dsi_shared.cli", "serve", name], env=env)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    return url
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{name} process did not become ready")

    def kill(self, name: str) -> None:
        process = self.processes.pop(name)
        process.kill()
        process.wait(10)

    async def nc(self) -> Client:
        if self._nc is None:
            self._nc = await nats.connect(nats_servers(self.nats_url), max_reconnect_attempts=-1, reconnect_time_wait=0.5)
        return self._nc

    async def publish(self, contract_subject: str, data: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        js = (await self.nc()).jetstream()
        await js.publish(self.naming.subject(contract_subject), json.dumps(data).encode(), headers=headers)

    async def publish_as_producer(self, model: type[PublicEvent], position: int, *, deduplicated: bool = True,
                                  **fields: Any) -> None:
        """Publish an event exactly as its producer's relay would (through the producer's contract model, at
        notification `position`), as if that service had recorded it: for tests that stand in for an upstream.
        `deduplicated=False` leaves out `Nats-Msg-Id`: a re-publish after JetStream's duplicate window."""
        service = {"qip": "qip-share"}.get(model.subject.split(".")[1], model.subject.split(".")[1])
        data = model.payload({"aggregate_version": 1, **fields})
        body = encode(service, position, model.subject, data, time=datetime.now(UTC), subject=str(data["aggregate_id"]),
                      dataschema=model.dataschema())
        js = (await self.nc()).jetstream()
        headers = {"Nats-Msg-Id": f"{service}:{position}"} if deduplicated else {}
        await js.publish(self.naming.subject(model.subject), body, headers=headers)

    async def register(self, **changes: Any) -> str:
        """Register an eligible SNF (each call its own NPI unless given); returns the participant id."""
        first_nine = f"{random.randrange(10**8, 10**9)}"
        form = {**FORM, "npi": first_nine + npi_check_digit(first_nine), **changes}  # a valid NPI (check digit)
        response = await self.clients["enrollment"].post("/participants", json=form, headers=STAFF)
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    async def accept_agreements(self, participant_id: str, kinds: tuple[str, ...] = AGREEMENTS,
                                base_url: str | None = None, reason: str | None = None) -> dict[str, Any]:
        """Staff accept the participant's signed agreements in one action (DOMAIN.md A2.4: "signed and accepted"),
        once each of `kinds` is recorded (signatures sent over NATS arrive asynchronously). Returns the view."""
        path = f"/participants/{participant_id}"

        async def request(method: str, url: str, **kwargs: Any) -> httpx.Response:
            if base_url:
                async with httpx.AsyncClient(base_url=base_url) as client:
                    return await client.request(method, url, headers=STAFF, **kwargs)
            return await self.clients["enrollment"].request(method, url, headers=STAFF, **kwargs)

        async def signed() -> bool:
            shown = (await request("GET", path)).json()
            return all((shown.get("agreements") or {}).get(kind) for kind in kinds)

        await eventually(signed)
        response = await request("POST", f"{path}/agreements/acceptance", json={"reason": reason} if reason else {})
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    async def payments_of(self, participant_id: str, base_url: str | None = None) -> dict[str, Any] | None:
        path = f"/participants/{participant_id}/payments"
        if base_url:
            async with httpx.AsyncClient(base_url=base_url) as client:
                response = await client.get(path, headers=STAFF)
        else:
            response = await self.clients["payments"].get(path, headers=STAFF)
        return response.json() if response.status_code == 200 else None

    async def wait_paid(self, participant_id: str, timeout: float = 20.0) -> dict[str, Any]:
        """The payments statement once it shows at least one payment."""

        async def statement() -> dict[str, Any] | None:
            found = await self.payments_of(participant_id)
            return found if found and found["payments"] else None

        return await eventually(statement, timeout)  # type: ignore[no-any-return]

    async def close(self) -> None:
        for name in list(self.runtimes):
            await self.stop(name)
        for name in list(self.processes):
            self.kill(name)
        try:
            nc = await asyncio.wait_for(self.nc(), 5)
            await delete_streams(nc.jetstream(), self.naming)
            await nc.close()
        except Exception:  # noqa: BLE001 - the server may be gone in fault tests; streams die with it
            pass


def deliver_event(app: ServiceApplication, subscriptions: Sequence[Subscription[Any]], subject: str, data: dict[str, Any],
            event_id: str = "test:1", source: str = "test") -> Sequence[Aggregate]:
    """One consumed event through a service's subscription for `subject`, exactly as its consumer runs it (the payload
    read through the subscription's model): for unit tests of one handler."""
    [subscription] = [s for s in subscriptions if s.subject == subject]
    return subscription.deliver(app, IncomingEvent(type=subject, data=data, id=event_id, source=source))


@contextlib.contextmanager
def fresh_database(server: str) -> Iterator[str]:
    """A database of its own on PostgreSQL `server` (yields its DSN), dropped afterwards with its connections."""
    name = f"dsi_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit(urlsplit(server)._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 20.0, interval: float = 0.1) -> Any:
    """Poll until `check()` returns something truthy; fail with the last value after `timeout`."""
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = await check()
        if value:
            return value
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s; last value: {value!r}")


async def quiet(stack: Stack, timeout: float = 20.0) -> None:
    """Wait until every consumer of this test's streams has nothing pending or unacked, twice in a row,
    so 'exactly one' is asserted after every duplicate and redelivery has been handled."""
    js = (await stack.nc()).jetstream()

    async def idle() -> bool:
        for stream in STREAMS:
            try:
                consumers = await js.consumers_info(stack.naming.stream(stream))
            except nats.js.errors.NotFoundError:
                continue
            except (nats.errors.TimeoutError, nats.js.errors.ServiceUnavailableError):
                return False  # a cluster re-electing a leader (a server down) answers late: not known idle yet
            if any(c.num_pending or c.num_ack_pending for c in consumers):
                return False
        return True

    async def idle_twice() -> bool:
        if not await idle():
            return False
        await asyncio.sleep(0.5)
        return await idle()

    await eventually(idle_twice, timeout)


async def mllp_exchange(port: int, frame: bytes, context: ssl.SSLContext | None = None) -> bytes:
    """Send one MLLP frame (<VT>…<FS><CR>) and read the answer; b"" when the listener will not talk (TLS refused,
    connection closed or reset)."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port, ssl=context), 10)
        writer.write(b"\x0b" + frame + b"\x1c\r")
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(65536), 10)
        writer.close()
        return answer
    except (ssl.SSLError, ConnectionError, OSError):
        return b""


async def publish_allowed(url: str, user: str, password: str, subject: str) -> bool:
    """Whether NATS lets `user` publish on `subject`. The server may answer the PING sent with the PUB before its
    -ERR, but it has handled the PUB by then: a second round trip's PONG comes after the -ERR, and the client
    handles both in order — no sleep."""
    errors: list[Exception] = []

    async def on_error(exc: Exception) -> None:
        errors.append(exc)

    try:
        nc = await nats.connect(url, user=user, password=password, error_cb=on_error, allow_reconnect=False)
    except nats.errors.Error:
        return False
    try:
        await nc.publish(subject, b"{}")
        await nc.flush(timeout=2)
        await nc.flush(timeout=2)  # see above: the violation, if any, has been reported once this returns
    finally:
        await nc.close()
    return not any("permissions violation" in str(e).lower() for e in errors)
