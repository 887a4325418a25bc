"""The relay's window of publishes in flight (issue 14 §3, §5), on real NATS and PostgreSQL: publishes go out many
at a time and in notification order; a publish lost in the middle of a window, or a relay process killed with a
window in flight, still leaves each declared event exactly once on the stream, in order."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import date
from typing import Any
from uuid import UUID

import nats
import nats.errors
import pytest
from dsi_shared.bus import Naming, delete_streams, ensure_streams
from dsi_shared.relay import MSG_ID, Relay, Send, outgoing
from dsi_shared.service import discover
from enrollment.application import Enrollment
from eventsourcing.persistence import OperationalError
from nats.js import JetStreamContext
from payments.domain import PaymentAccount

from tests.harness import FORM, Stack, eventually, quiet

pytestmark = pytest.mark.integration
SPEC = discover()["enrollment"]


def recorded(store: str, registrations: int, registered: list[UUID] | None = None) -> list[str]:
    """Register participants in enrollment's store (as if it ran with the bus away), their ids into `registered`;
    the `Nats-Msg-Id`s of the declared events its relay must publish, in notification order."""
    app = Enrollment(store)
    try:
        if SPEC.on_start is not None:
            SPEC.on_start(app)
        for n in range(registrations):
            participant = app.register_participant({**FORM, "npi": f"{1_000_000_000 + n}", "tin": None,
                                                    "submitted_on": date(2024, 3, 1)})
            if registered is not None:
                registered.append(participant)
        return [f"enrollment:{notification.id}"
                for notification in app.recorder.select_notifications(start=1, limit=1_000_000)
                if outgoing(SPEC.contract, notification.id, app.tracing_mapper.decode_notification(notification)[0])]
    finally:
        app.close()


async def on_stream(js: JetStreamContext, stream: str) -> list[str]:
    """Every message's `Nats-Msg-Id`, in stream order."""
    state = (await js.stream_info(stream)).state
    if not state.messages:
        return []
    return [(await js.get_msg(stream, seq)).headers[MSG_ID]  # type: ignore[index]
            for seq in range(state.first_seq, state.last_seq + 1)]


def caught_up(relay: Relay) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return relay.position == relay.app.recorder.max_notification_id()
    return check


@contextlib.asynccontextmanager
async def running(store: str, nats_url: str, naming: Naming, wrap: Callable[[Send], Send],
                  window: int) -> AsyncIterator[tuple[Relay, JetStreamContext]]:
    """A relay over enrollment's store sending through `wrap(real JetStream publish)`, run until the block ends."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await ensure_streams(js, naming)
    app = Enrollment(store)

    async def jetstream(subject: str, body: bytes, headers: dict[str, str]) -> None:
        await js.publish(subject, body, headers=headers, timeout=5)

    relay = Relay(app, SPEC.contract, js, naming, send=wrap(jetstream), window=window)
    task = asyncio.create_task(relay.run())
    try:
        yield relay, js
    finally:
        relay.stopping.set()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await delete_streams(js, naming)
        await nc.close()
        app.close()


async def test_relay_keeps_a_window_of_publishes_in_flight_and_the_stream_in_notification_order(
        nats_url: str, bus_prefix: str, store_url_for: Any) -> None:
    store, naming = store_url_for("enrollment"), Naming(bus_prefix)
    declared = recorded(store, 20)
    subjects: list[str] = []
    in_flight, peak = 0, 0

    def counting(real: Send) -> Send:
        async def send(subject: str, body: bytes, headers: dict[str, str]) -> None:
            nonlocal in_flight, peak
            subjects.append(subject)
            in_flight += 1
            peak = max(peak, in_flight)
            try:
                await real(subject, body, headers)
            finally:
                in_flight -= 1
        return send

    async with running(store, nats_url, naming, counting, window=8) as (relay, js):
        await eventually(caught_up(relay))
        assert await on_stream(js, relay.stream) == declared
    assert peak == 8  # a full window outstanding, never more
    assert len(subjects) == len(declared) and all(s.startswith(f"{bus_prefix}.dsi.enrollment.") for s in subjects)


async def test_a_publish_lost_in_the_middle_of_a_window_is_sent_again_before_anything_after_it_lands(
        nats_url: str, bus_prefix: str, store_url_for: Any) -> None:
    store, naming = store_url_for("enrollment"), Naming(bus_prefix)
    declared = recorded(store, 10)
    lost = declared[3]
    later_tried = asyncio.Event()
    attempts: Counter[str] = Counter()

    def losing_one(real: Send) -> Send:
        async def send(subject: str, body: bytes, headers: dict[str, str]) -> None:
            msg_id = headers[MSG_ID]
            attempts[msg_id] += 1
            if msg_id == lost and attempts[msg_id] == 1:
                await later_tried.wait()  # its write is lost while the two sent after it reach the server
                raise nats.errors.TimeoutError
            try:
                await real(subject, body, headers)
            finally:
                if msg_id == declared[5] and attempts[msg_id] == 1:
                    later_tried.set()
        return send

    async with running(store, nats_url, naming, losing_one, window=8) as (relay, js):
        await eventually(caught_up(relay))
        assert await on_stream(js, relay.stream) == declared  # never reordered, nothing skipped or doubled
    assert attempts[lost] == 2 and attempts[declared[4]] == 2 and attempts[declared[2]] == 1


async def test_a_store_away_for_a_moment_delays_the_relay_and_loses_nothing(
        nats_url: str, bus_prefix: str, store_url_for: Any) -> None:
    """A cut database connection while the relay reads its notification log (the fault soak's
    `pg_terminate_backend`) is waited out: the relay keeps running and the stream still gets every event once."""
    store, naming = store_url_for("enrollment"), Naming(bus_prefix)
    declared = recorded(store, 6)
    async with running(store, nats_url, naming, lambda real: real, window=4) as (relay, js):
        reads = relay.app.recorder.select_notifications
        failures = 0

        def store_away(*args: Any, **kwargs: Any) -> Any:
            nonlocal failures
            if failures < 2:
                failures += 1
                raise OperationalError("server closed the connection unexpectedly")
            return reads(*args, **kwargs)

        relay.app.recorder.select_notifications = store_away  # type: ignore[method-assign]
        await eventually(caught_up(relay))
        assert await on_stream(js, relay.stream) == declared
    assert failures == 2


async def test_a_relay_killed_with_a_window_in_flight_leaves_each_event_once_on_the_stream_and_payments_exact(
        stack: Stack, store_url_for: Any) -> None:
    registered: list[UUID] = []
    declared = recorded(store_url_for("enrollment"), 60, registered)
    await stack.start("payments")
    # A real enrollment process whose relay stops settling after 20 acks while its window of 32 is still in flight.
    stack.spawn("enrollment", DSI_RELAY_WINDOW="32", DSI_FAULT_RELAY_HOLD_AFTER_ACKS="20")
    js = (await stack.nc()).jetstream()
    stream = stack.naming.stream("DSI_ENROLLMENT")

    async def beyond_settled() -> bool:
        return len(await on_stream(js, stream)) > 21  # landed ahead of the relay's position: a window in flight

    await eventually(beyond_settled)
    stack.kill("enrollment")  # SIGKILL
    landed = await on_stream(js, stream)
    assert landed == declared[:len(landed)]

    await stack.start("enrollment")
    relay = next(w for w in stack.runtimes["enrollment"].workers if isinstance(w, Relay))
    await eventually(caught_up(relay))
    assert await on_stream(js, stream) == declared  # each exactly once, in notification order
    assert relay.published == len(declared) - len(landed)  # resumed after what landed: nothing sent twice
    await quiet(stack)
    payments = stack.runtimes["payments"].app
    per_aggregate = Counter(n.originator_id for n in payments.recorder.select_notifications(start=1, limit=1_000_000))
    accounts = {PaymentAccount.create_id(participant) for participant in registered}
    assert {a: per_aggregate[a] for a in accounts} == dict.fromkeys(accounts, 2)  # opened + payee, once each
