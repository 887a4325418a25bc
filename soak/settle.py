"""The workload's one way to wait for the system: every declared event in every store is on its stream, and every
consumer has nothing pending or unacknowledged — twice in a row. Bounded polling, never a sleep for synchronisation."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import httpx
import nats
import nats.errors
import nats.js.errors
import psycopg
from dsi_shared.bus import STREAMS, segment, service_stream
from dsi_shared.service import discover
from nats.aio.client import Client

from soak.client import connect
from soak.cluster import SERVICES, Cluster

MSG_ID = "Nats-Msg-Id"


def last_declared(cluster: Cluster) -> dict[str, int]:
    """Each service's last stored notification that its contract publishes (0: none)."""
    specs, found = discover(), {}
    for name in SERVICES:
        declared = [model.recorded_as for model in specs[name].contract.published]
        with psycopg.connect(cluster.store(name), connect_timeout=3) as conn:
            [table] = [row[0] for row in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_name LIKE '%%\\_events' "
                "AND table_schema = 'public'").fetchall()]
            row = conn.execute(f'SELECT max(notification_id) FROM "{table}" WHERE split_part(topic, \':\', 2) = ANY(%s)',
                               (declared,)).fetchone()
        found[name] = int(row[0] or 0) if row else 0
    return found


async def last_published(nc: Client, service: str) -> int:
    """The notification id of the service's last message on its stream, past any message its relay did not send."""
    js = nc.jetstream()
    try:
        info = await js.stream_info(service_stream(service))
    except nats.js.errors.NotFoundError:
        return 0
    sequence = info.state.last_seq
    while sequence >= 1:
        try:
            message = await js.get_msg(service_stream(service), sequence)
        except nats.js.errors.NotFoundError:
            sequence -= 1
            continue
        owner, _, position = (message.headers or {}).get(MSG_ID, "").rpartition(":")
        if owner == service and position.isdigit() and (message.subject or "").startswith(f"dsi.{segment(service)}."):
            return int(position)
        sequence -= 1
    return 0


async def busy_consumers(nc: Client) -> list[str]:
    js, busy = nc.jetstream(), []
    for stream in STREAMS:
        try:
            consumers = await js.consumers_info(stream)
        except nats.js.errors.NotFoundError:
            continue
        last = (await js.stream_info(stream)).state.last_seq
        for c in consumers:
            if c.num_pending or c.num_ack_pending:
                delivered = c.delivered.stream_seq if c.delivered else 0
                acked = c.ack_floor.stream_seq if c.ack_floor else 0
                busy.append(f"{c.name}: {c.num_pending} pending, {c.num_ack_pending} unacked (delivered to stream "
                            f"sequence {delivered}, acked to {acked}, stream at {last})")
    return busy


async def unsettled(cluster: Cluster, nc: Client) -> str:
    """What is still in flight ("" when nothing)."""
    try:
        stored = await asyncio.to_thread(last_declared, cluster)
        for service, position in stored.items():
            if (published := await last_published(nc, service)) < position:
                return f"{service} relay at {published} of {position}"
        if busy := await busy_consumers(nc):
            return "; ".join(busy)
        async with httpx.AsyncClient(timeout=3) as http:  # read models caught up (DSI_READY_MAX_LAG=0 in the soak)
            for service in SERVICES:
                try:
                    answer = await http.get(f"{cluster.url(service)}/readyz")
                except httpx.HTTPError as exc:
                    alive = "running" if cluster.processes[service].poll() is None else "exited"
                    return f"{service} not answering ({type(exc).__name__}; its process {alive})"
                if answer.status_code != 200:
                    return f"{service} not ready: {answer.text[:200]}"
        return ""
    except (psycopg.Error, nats.errors.Error, OSError, TimeoutError, httpx.HTTPError) as exc:  # a fault in progress
        return type(exc).__name__


HOLD_FAULTS_AFTER = 60.0  # seconds a step waits under faults before the injector holds them (cluster.faults_held)


async def settled(cluster: Cluster, timeout: float = 180.0) -> None:
    """Until the system has nothing left in flight (checked twice, half a second apart); fails after `timeout`."""
    deadline = time.monotonic() + timeout
    nc = await connect(cluster.nats.url, deadline)
    try:
        waiting, seen, began = "", Counter[str](), time.monotonic()
        try:
            while time.monotonic() < deadline:
                if not (waiting := await unsettled(cluster, nc)):
                    await asyncio.sleep(0.5)
                    if not (waiting := await unsettled(cluster, nc)):
                        return
                seen[waiting] += 1
                if not cluster.faults_held and time.monotonic() - began > HOLD_FAULTS_AFTER:
                    cluster.faults_held, cluster.holds = True, cluster.holds + 1
                await asyncio.sleep(0.2)
        finally:
            cluster.faults_held = False
        history = "; ".join(f"{reason} ×{count}" for reason, count in seen.most_common(5))
        raise TimeoutError(f"the system did not settle within {timeout:.0f} s: {waiting} (most seen: {history})")
    finally:
        await nc.close()
