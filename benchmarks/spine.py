"""Spine benchmark: registrations recorded by enrollment, relayed to JetStream and consumed exactly-once
by payments (tracking record + new events per message), against two ceilings measured in the same run:
raw JetStream publish+consume+ack of same-sized messages, and raw store appends of the same aggregates.
The relay alone (a pre-filled store → JetStream, acknowledged) is measured against raw JetStream publish,
one awaited at a time and with a window in flight.

Uses NATS at NATS_URL (else 127.0.0.1:4222, else an embedded nats-server) and PostgreSQL at
DSI_BENCH_POSTGRES (else 127.0.0.1:5432 when reachable, else SQLite). N from DSI_BENCH_N (default 2000).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import date
from pathlib import Path

import nats
import psycopg
from dsi_shared.bus import Naming, delete_streams, ensure_streams
from dsi_shared.config import Settings
from dsi_shared.natsserver import NatsServer, port_open
from dsi_shared.relay import Relay
from dsi_shared.service import ServiceRuntime, discover
from enrollment.application import Enrollment
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig
from payments.application import Payments
from payments.domain import PaymentAccount

N = int(os.environ.get("DSI_BENCH_N", "2000"))
FORM = {"legal_name": "Bench Nursing", "npi": "1234567893", "tin": None, "provider_type": "skilled_nursing",
        "counties": ["Merced"], "ehr_product": "PCC", "is_hospital": False, "umbrella_group": None, "manages_ehr": True,
        "sending_facilities": ["BENCH"], "contact_email": "b@b.example", "submitted_on": date(2024, 3, 1)}


def store_factory() -> tuple[Callable[[str], str], Callable[[], None], str]:
    server = os.environ.get("DSI_BENCH_POSTGRES") or (
        "postgresql://postgres@127.0.0.1:5432/postgres" if port_open("127.0.0.1", 5432) else "")
    if not server:
        tmp = Path(tempfile.mkdtemp())
        return (lambda name: f"sqlite:///{tmp / (name + '.db')}"), (lambda: None), "SQLite"
    names: list[str] = []

    def make(_: str) -> str:
        name = f"dsi_bench_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        names.append(name)
        return server.rsplit("/", 1)[0] + f"/{name}"

    def drop() -> None:
        with psycopg.connect(server, autocommit=True) as conn:
            for name in names:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return make, drop, "PostgreSQL"


async def raw_jetstream(url: str, size: int) -> tuple[float, float]:
    """Publish+consume+ack msg/s, and the publish part alone (each publish awaited) msg/s."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    stream = f"BENCH_RAW_{uuid.uuid4().hex[:8]}"
    await js.add_stream(StreamConfig(name=stream, subjects=[f"{stream}.>"]))
    body = b"x" * size
    started = time.perf_counter()
    for i in range(N):
        await js.publish(f"{stream}.e", body, headers={"Nats-Msg-Id": f"raw:{i}"})
    published = time.perf_counter() - started
    sub = await js.pull_subscribe(f"{stream}.e", durable="raw", config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT))
    received = 0
    while received < N:
        for message in await sub.fetch(200, timeout=5):
            await message.ack()
            received += 1
    elapsed = time.perf_counter() - started
    await js.delete_stream(stream)
    await nc.close()
    return N / elapsed, N / published


async def raw_publish_windowed(url: str, size: int, window: int = 256) -> float:
    """Raw JetStream publish msg/s with up to `window` acks outstanding (nats-py publish_async)."""
    nc = await nats.connect(url)
    js = nc.jetstream(publish_async_max_pending=window)
    stream = f"BENCH_RAWW_{uuid.uuid4().hex[:8]}"
    await js.add_stream(StreamConfig(name=stream, subjects=[f"{stream}.>"]))
    body = b"x" * size
    started = time.perf_counter()
    acks = [await js.publish_async(f"{stream}.e", body, headers={"Nats-Msg-Id": f"raw:{i}"}) for i in range(N)]
    await asyncio.gather(*acks)
    elapsed = time.perf_counter() - started
    await js.delete_stream(stream)
    await nc.close()
    return N / elapsed


def prefilled_enrollment(store: str) -> None:
    """N registrations recorded by enrollment (with the program rules it publishes at start)."""
    spec = discover()["enrollment"]
    source = Enrollment(store)
    if spec.on_start is not None:
        spec.on_start(source)
    for n in range(N):
        source.register_participant({**FORM, "npi": f"{1_000_000_000 + n}"})
    source.close()


async def relay_alone(url: str, store_for: Callable[[str], str]) -> tuple[float, int]:
    """Relay publish rate from a pre-filled enrollment store to JetStream (every publish acknowledged):
    published events/s and how many were published."""
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    store = store_for("relay")
    prefilled_enrollment(store)
    app = Enrollment(store)
    nc = await nats.connect(url)
    js = nc.jetstream()
    naming = Naming(prefix)
    await ensure_streams(js, naming)
    relay = Relay(app, discover()["enrollment"].contract, js, naming)
    last = app.recorder.max_notification_id() or 0
    started = time.perf_counter()
    while relay.position < last:
        await relay.publish_pending()
    elapsed = time.perf_counter() - started
    published = (await js.stream_info(relay.stream)).state.messages
    await delete_streams(js, naming)
    await nc.close()
    app.close()
    return published / elapsed, published


def raw_store_appends(store: str) -> float:
    app = Payments(store)
    started = time.perf_counter()
    for _ in range(N):
        account = PaymentAccount(uuid.uuid4())
        account.record_payee("Bench Nursing", "1234567893", None)
        app.save(account)
    elapsed = time.perf_counter() - started
    app.close()
    return N / elapsed


async def spine(url: str, store_for: Callable[[str], str]) -> float:
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    enrollment_store, payments_store = store_for("enrollment"), store_for("payments")
    specs = discover()
    prefilled_enrollment(enrollment_store)
    runtimes = [ServiceRuntime(specs[name], Settings(name, specs[name].default_port, nats_url=url, bus_prefix=prefix,
                                                     store=store)) for name, store in
                (("enrollment", enrollment_store), ("payments", payments_store))]
    started = time.perf_counter()
    for runtime in runtimes:
        await runtime.start()
    sink = runtimes[1].app
    while (sink.recorder.max_notification_id() or 0) < 2 * N:  # account opened + payee recorded, per registration
        await asyncio.sleep(0.05)
    elapsed = time.perf_counter() - started
    for runtime in runtimes:
        await runtime.stop()
    nc = await nats.connect(url)
    await delete_streams(nc.jetstream(), Naming(prefix))
    await nc.close()
    return N / elapsed


async def consumer_alone(url: str, store_for: Callable[[str], str]) -> float:
    """The consumer side alone: enrollment's relay first fills the stream, then payments consumes it (timed)."""
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    enrollment_store, payments_store = store_for("enrollment"), store_for("payments")
    specs = discover()
    source = Enrollment(enrollment_store)
    if specs["enrollment"].on_start is not None:
        specs["enrollment"].on_start(source)
    for n in range(N):
        source.register_participant({**FORM, "npi": f"{1_000_000_000 + n}"})
    source.close()
    naming = Naming(prefix)
    producer = ServiceRuntime(specs["enrollment"], Settings("enrollment", specs["enrollment"].default_port,
                                                            nats_url=url, bus_prefix=prefix, store=enrollment_store))
    await producer.start()
    nc = await nats.connect(url)
    registered = naming.subject("dsi.enrollment.participant-registered")
    while ((await nc.jetstream().stream_info(naming.stream("DSI_ENROLLMENT"), subjects_filter=registered))
           .state.subjects or {}).get(registered, 0) < N:
        await asyncio.sleep(0.05)
    await producer.stop()
    sink_runtime = ServiceRuntime(specs["payments"], Settings("payments", specs["payments"].default_port, nats_url=url,
                                                              bus_prefix=prefix, store=payments_store))
    started = time.perf_counter()
    await sink_runtime.start()
    while (sink_runtime.app.recorder.max_notification_id() or 0) < 2 * N:
        await asyncio.sleep(0.05)
    elapsed = time.perf_counter() - started
    await sink_runtime.stop()
    await delete_streams(nc.jetstream(), naming)
    await nc.close()
    return N / elapsed


async def main() -> None:
    server = None
    url = os.environ.get("NATS_URL") or ("nats://127.0.0.1:4222" if port_open("127.0.0.1", 4222) else "")
    if not url:
        server = NatsServer(Path(tempfile.mkdtemp())).start()
        url = server.url
    store_for, drop, backend = store_factory()
    try:
        raw_js, raw_publish = await raw_jetstream(url, size=700)
        raw_windowed = await raw_publish_windowed(url, size=700)
        raw_store = raw_store_appends(store_for("raw"))
        relayed, relay_events = await relay_alone(url, store_for)
        flow = await spine(url, store_for)
        alone = await consumer_alone(url, store_for)
    finally:
        drop()
        if server:
            server.stop()
    print(f"spine benchmark, N={N} events, store {backend}, NATS {url}")
    print(f"  raw JetStream publish+consume+ack : {raw_js:10.0f} msg/s")
    print(f"  raw JetStream publish, awaited    : {raw_publish:10.0f} msg/s")
    print(f"  raw JetStream publish, 256 pending: {raw_windowed:10.0f} msg/s")
    print(f"  raw store append (1 aggregate/tx) : {raw_store:10.0f} aggregates/s")
    print(f"  relay alone, store → JetStream    : {relayed:10.0f} events/s ({relay_events} events; "
          f"= {relayed / raw_publish:.2f} × raw publish awaited, {relayed / raw_windowed:.2f} × raw publish 256 pending)")
    print(f"  relay → consumer, exactly-once    : {flow:10.0f} events/s "
          f"(= {flow / raw_js:.2f} × raw JetStream, {flow / raw_store:.2f} × raw store append)")
    print(f"  consumer alone (stream pre-filled): {alone:10.0f} events/s "
          f"(= {alone / raw_js:.2f} × raw JetStream, {alone / raw_store:.2f} × raw store append)")
