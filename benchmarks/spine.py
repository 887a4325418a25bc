"""Spine benchmark: registrations recorded by enrollment, relayed to JetStream and consumed exactly-once by payments
(tracking record + new events per message), against ceilings measured in the same run on the same servers: raw
JetStream publish+consume+ack of same-sized messages, and raw store appends of the same aggregates. Two parts alone
too: the relay (a pre-filled store → JetStream, every publish acknowledged) against raw JetStream publish, and the
consumer (the stream pre-filled by enrollment's relay, then only payments timed).

On the benchmark's own nats-server (JetStream `sync_interval: always`) and PostgreSQL (see `benchmarks.setting`).
N registrations: DSI_BENCH_N (quick 300, default 2,000, full 5,000). The curve runs payments as 1, 2 and 4 separate
`dsi serve payments` processes sharing one store and one durable consumer (DSI_BENCH_REPLICAS, e.g. "1,2,4").
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
from dsi_shared.bus import Naming, delete_streams, ensure_streams
from dsi_shared.config import Settings
from dsi_shared.relay import Relay
from dsi_shared.service import ServiceRuntime, discover
from enrollment.application import Enrollment
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig
from payments.application import Payments
from payments.domain import PaymentAccount

from benchmarks import replicas
from benchmarks.setting import bench_nats, report, size, store_factory

N = size("DSI_BENCH_N", quick=300, default=2000, full=5000)
REPLICAS = tuple(int(k) for k in os.environ.get("DSI_BENCH_REPLICAS", "1,2,4").split(","))
GOAL = "≥ 3,000 events/s and ≥ 0.5 × raw JetStream"
FORM = {"legal_name": "Bench Nursing", "npi": "1234567893", "tin": None, "provider_type": "skilled_nursing",
        "counties": ["Merced"], "ehr_product": "PCC", "is_hospital": False, "umbrella_group": None, "manages_ehr": True,
        "sending_facilities": ["BENCH"], "contact_email": "b@b.example", "submitted_on": date(2024, 3, 1)}


async def raw_jetstream(url: str, size: int, pipelined: bool) -> float:
    """N messages published (each awaited, or up to the client's window in flight), then pulled and acked:
    messages/s over both phases."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    stream = f"RAW{uuid.uuid4().hex[:8]}"
    await js.add_stream(StreamConfig(name=stream, subjects=[f"{stream}.>"]))
    body = b"x" * size
    started = time.perf_counter()
    if pipelined:
        acks = [await js.publish_async(f"{stream}.e", body, headers={"Nats-Msg-Id": f"raw:{i}"}) for i in range(N)]
        await asyncio.gather(*acks)
    else:
        for i in range(N):
            await js.publish(f"{stream}.e", body, headers={"Nats-Msg-Id": f"raw:{i}"})
    sub = await js.pull_subscribe(f"{stream}.e", durable="raw", config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT))
    received = 0
    while received < N:
        for message in await sub.fetch(200, timeout=5):
            await message.ack()
            received += 1
    elapsed = time.perf_counter() - started
    await js.delete_stream(stream)
    await nc.close()
    return N / elapsed


def raw_store_appends(store: str, per_transaction: int = 1) -> float:
    """Payment accounts (opened + payee: the consumer's events for one registration) saved `per_transaction` at a
    time, without tracking records: aggregates/s."""
    app = Payments(store)
    started = time.perf_counter()
    for _ in range(0, N, per_transaction):
        accounts = []
        for _ in range(per_transaction):
            account = PaymentAccount(uuid.uuid4())
            account.record_payee("Bench Nursing", "1234567893", None)
            accounts.append(account)
        app.save(*accounts)
    elapsed = time.perf_counter() - started
    app.close()
    return N / elapsed


def seed_enrollment(store: str) -> None:
    """N registrations in enrollment's store (its outbox), and the program rules it publishes at start."""
    source = Enrollment(store)
    if (on_start := discover()["enrollment"].on_start) is not None:
        on_start(source)
    for n in range(N):
        source.register_participant({**FORM, "npi": f"{1_000_000_000 + n}"})
    source.close()


def relay_runtime(url: str, prefix: str, store: str) -> ServiceRuntime:
    spec = discover()["enrollment"]
    return ServiceRuntime(spec, Settings("enrollment", spec.default_port, nats_url=url, bus_prefix=prefix, store=store))


class AccountEvents:
    """Counts the payment-account events in a store as they are recorded (the rules copy's events aside)."""

    def __init__(self, app: Payments) -> None:
        self.app, self.position, self.count = app, 0, 0

    def __call__(self) -> int:
        while batch := self.app.recorder.select_notifications(start=self.position + 1, limit=1000):
            self.position = batch[-1].id
            self.count += sum(1 for notification in batch if "PaymentAccount" in notification.topic)
        return self.count


async def until_consumed(app: Payments, started: float, stall: float = 120.0) -> float:
    """Seconds from `started` until the payments store holds 2 account events per registration (opened + payee)."""
    count = AccountEvents(app)
    seen, progress_at = -1, time.monotonic()
    while (now := await asyncio.to_thread(count)) < 2 * N:
        if now != seen:
            seen, progress_at = now, time.monotonic()
        elif time.monotonic() - progress_at > stall:
            raise RuntimeError(f"payments stalled at {now} of {2 * N} account events")
        await asyncio.sleep(0.01)
    return time.perf_counter() - started


def exactly_once(store: str) -> str:
    """Each registration opened one account and recorded its payee once: "" or what is wrong."""
    app = Payments(store)
    accounts = app.accounts()
    app.close()
    wrong = sum(1 for account in accounts if account.version != 2)
    return "" if len(accounts) == N and not wrong else f"NOT EXACTLY ONCE: {len(accounts)} accounts, {wrong} with extra events"


async def in_process(url: str, store_for: Callable[[str], str]) -> tuple[float, str]:
    """Enrollment's relay and payments' consumer as runtimes in this process (events/s, exactly-once check)."""
    prefix, enrollment_store, payments_store = f"bench{uuid.uuid4().hex[:8]}", store_for("enrollment"), store_for("payments")
    await asyncio.to_thread(seed_enrollment, enrollment_store)
    spec = discover()["payments"]
    runtimes = [relay_runtime(url, prefix, enrollment_store), ServiceRuntime(spec, Settings(
        "payments", spec.default_port, nats_url=url, bus_prefix=prefix, store=payments_store))]
    started = time.perf_counter()
    for runtime in runtimes:
        await runtime.start()
    sink = runtimes[1].app
    assert isinstance(sink, Payments)
    elapsed = await until_consumed(sink, started)
    for runtime in runtimes:
        await runtime.stop()
    return N / elapsed, exactly_once(payments_store)


async def with_replicas(url: str, store_for: Callable[[str], str], count: int) -> tuple[float, str]:
    """Payments as `count` `dsi serve` processes on one store and one durable consumer, all ready before enrollment's
    relay (in this process) starts publishing the seeded registrations."""
    prefix, enrollment_store, payments_store = f"bench{uuid.uuid4().hex[:8]}", store_for("enrollment"), store_for("payments")
    await asyncio.to_thread(seed_enrollment, enrollment_store)
    logs = Path(tempfile.gettempdir()) / f"dsi-bench-{prefix}"
    processes = await asyncio.to_thread(replicas.spawn, "payments", count, url, prefix, payments_store, logs)
    sink = Payments(payments_store)
    try:
        runtime = relay_runtime(url, prefix, enrollment_store)
        started = time.perf_counter()
        await runtime.start()
        elapsed = await until_consumed(sink, started)
        await runtime.stop()
    finally:
        sink.close()
        replicas.stop(processes)
    return N / elapsed, exactly_once(payments_store)


async def raw_publish(url: str, size: int, window: int) -> float:
    """Raw JetStream publish msg/s, each awaited (`window` 1) or up to `window` acks outstanding."""
    nc = await nats.connect(url)
    js = nc.jetstream(publish_async_max_pending=window)
    stream = f"RAWP{uuid.uuid4().hex[:8]}"
    await js.add_stream(StreamConfig(name=stream, subjects=[f"{stream}.>"]))
    body = b"x" * size
    started = time.perf_counter()
    if window == 1:
        for i in range(N):
            await js.publish(f"{stream}.e", body, headers={"Nats-Msg-Id": f"raw:{i}"})
    else:
        acks = [await js.publish_async(f"{stream}.e", body, headers={"Nats-Msg-Id": f"raw:{i}"}) for i in range(N)]
        await asyncio.gather(*acks)
    elapsed = time.perf_counter() - started
    await js.delete_stream(stream)
    await nc.close()
    return N / elapsed


async def relay_alone(url: str, store_for: Callable[[str], str]) -> tuple[float, int]:
    """Relay publish rate from a pre-filled enrollment store to JetStream (every publish acknowledged):
    published events/s and how many were published."""
    prefix, store = f"bench{uuid.uuid4().hex[:8]}", store_for("relay")
    await asyncio.to_thread(seed_enrollment, store)
    app = Enrollment(store)
    nc = await nats.connect(url)
    js, naming = nc.jetstream(), Naming(prefix)
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


async def consumer_alone(url: str, store_for: Callable[[str], str]) -> float:
    """The consumer side alone: enrollment's relay first fills the stream, then payments consumes it (timed)."""
    prefix, enrollment_store, payments_store = f"bench{uuid.uuid4().hex[:8]}", store_for("enrollment"), store_for("payments")
    await asyncio.to_thread(seed_enrollment, enrollment_store)
    naming = Naming(prefix)
    producer = relay_runtime(url, prefix, enrollment_store)
    await producer.start()
    nc = await nats.connect(url)
    registered = naming.subject("dsi.enrollment.participant-registered")
    while ((await nc.jetstream().stream_info(naming.stream("DSI_ENROLLMENT"), subjects_filter=registered))
           .state.subjects or {}).get(registered, 0) < N:
        await asyncio.sleep(0.05)
    await producer.stop()
    spec = discover()["payments"]
    sink = ServiceRuntime(spec, Settings("payments", spec.default_port, nats_url=url, bus_prefix=prefix,
                                         store=payments_store))
    started = time.perf_counter()
    await sink.start()
    assert isinstance(sink.app, Payments)
    elapsed = await until_consumed(sink.app, started)
    await sink.stop()
    await delete_streams(nc.jetstream(), naming)
    await nc.close()
    return N / elapsed


async def main() -> None:
    store_for, drop, backend = store_factory()
    with bench_nats() as bus:
        try:
            raw_awaited = await raw_jetstream(bus.url, 700, pipelined=False)
            raw_pipelined = await raw_jetstream(bus.url, 700, pipelined=True)
            raw_js = max(raw_awaited, raw_pipelined)  # with an fsync per message, a window does not always help
            raw_store = raw_store_appends(store_for("raw"))
            raw_batched = raw_store_appends(store_for("raw-batched"), per_transaction=100)
            publish_awaited, publish_windowed = await raw_publish(bus.url, 700, 1), await raw_publish(bus.url, 700, 256)
            relayed, relay_events = await relay_alone(bus.url, store_for)
            flow, problem = await in_process(bus.url, store_for)
            alone = await consumer_alone(bus.url, store_for)
            curve = {k: await with_replicas(bus.url, store_for, k) for k in REPLICAS}
        finally:
            drop()
    print(f"spine benchmark, N={N:,} registrations, store {backend}, {bus.describe()}")
    mark = " (the ceiling: the faster of the two)"
    print(f"  raw JetStream publish+consume+ack, pipelined publishes : {raw_pipelined:10.0f} msg/s"
          f"{mark if raw_js == raw_pipelined else ''}")
    print(f"  raw JetStream publish+consume+ack, each publish awaited: {raw_awaited:10.0f} msg/s"
          f"{mark if raw_js != raw_pipelined else ''}")
    print(f"  raw store append (1 aggregate/tx)                      : {raw_store:10.0f} aggregates/s (the ceiling)")
    print(f"  raw store append (100 aggregates/tx)                   : {raw_batched:10.0f} aggregates/s")
    print(f"  raw JetStream publish, awaited / 256 in flight          : {publish_awaited:10.0f} / {publish_windowed:.0f} msg/s")
    relay_ratios = f"{relayed / publish_awaited:.2f} × raw publish awaited, {relayed / publish_windowed:.2f} × 256 in flight"
    print(f"  relay alone, store → JetStream ({relay_events:,} events)       : {relayed:10.0f} events/s (= {relay_ratios})")
    report("relay alone (store → JetStream)", f"{relayed:,.0f} events/s", relay_ratios)
    alone_ratios = f"{alone / raw_js:.2f} × raw JetStream, {alone / raw_store:.2f} × raw store append"
    print(f"  consumer alone (stream pre-filled)                     : {alone:10.0f} events/s (= {alone_ratios})")
    report("consumer alone (stream pre-filled)", f"{alone:,.0f} events/s", alone_ratios)
    ratios = f"{flow / raw_js:.2f} × raw JetStream, {flow / raw_store:.2f} × raw store append"
    print(f"  relay → consumer, exactly-once, in one process         : {flow:10.0f} events/s (= {ratios}) {problem}")
    report("relay → consumer exactly-once (in-process)", f"{flow:,.0f} events/s", ratios, GOAL)
    for k, (rate, wrong) in curve.items():
        ratios = f"{rate / raw_js:.2f} × raw JetStream, {rate / raw_store:.2f} × raw store append"
        print(f"  relay → consumer, exactly-once, {k} payments process(es) : {rate:10.0f} events/s (= {ratios}) {wrong}")
        report(f"  … {k} consuming replica process(es)", f"{rate:,.0f} events/s", ratios)
