"""Faults a seed chooses and when: SIGKILL of a service (then a restart), SIGSTOP/SIGCONT longer than the ack wait,
NATS killed and restarted on its store, PostgreSQL connections cut and the databases refusing connections for a
moment, a stream's recent messages re-published in reverse order and a message re-published after the duplicate
window (both without `Nats-Msg-Id`, as a redelivery or a replay days later)."""

from __future__ import annotations

import asyncio
import random
import signal
import time
from collections import Counter
from dataclasses import dataclass

import nats
import nats.errors
import nats.js.errors
import psycopg
from dsi_shared.bus import service_stream

from soak.client import ignore
from soak.cluster import ACK_WAIT_SECONDS, SERVICES, Cluster

KINDS = ("kill", "pause", "nats-restart", "pg-terminate", "pg-refuse", "redeliver-reversed", "republish")


@dataclass(frozen=True)
class Fault:
    at: float  # seconds after the workload starts
    kind: str
    target: str  # a service, or "" for NATS and PostgreSQL
    seconds: float  # how long it lasts (down, paused, refusing), or how many messages

    def __str__(self) -> str:
        return f"{self.at:6.2f}s {self.kind} {self.target or '-'} {self.seconds:.2f}"


def schedule(seed: int, horizon: float = 600.0) -> list[Fault]:
    rng = random.Random(f"faults:{seed}")
    faults, at = [], rng.uniform(0.2, 2.0)
    while at < horizon:
        kind = rng.choice(KINDS)
        target = rng.choice(SERVICES) if kind in {"kill", "pause", "redeliver-reversed", "republish"} else ""
        seconds = {"kill": rng.uniform(0.0, 1.0), "pause": rng.uniform(ACK_WAIT_SECONDS * 1.5, ACK_WAIT_SECONDS * 3),
                   "nats-restart": rng.uniform(0.2, 2.0), "pg-refuse": rng.uniform(0.3, 1.5),
                   "redeliver-reversed": float(rng.randint(2, 6)), "republish": 1.0}.get(kind, 0.0)
        faults.append(Fault(round(at, 2), kind, target, round(seconds, 2)))
        at += rng.uniform(0.5, 2.5)
    return faults


class Injector:
    """Applies a schedule while the workload runs; `stop()` ends it and leaves everything running again."""

    def __init__(self, cluster: Cluster, faults: list[Fault]) -> None:
        self.cluster, self.faults = cluster, faults
        self.applied: list[Fault] = []
        self.counts: Counter[str] = Counter()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        await asyncio.to_thread(self._recover)

    async def _run(self) -> None:
        began = time.monotonic()
        for fault in self.faults:
            await asyncio.sleep(max(0.0, began + fault.at - time.monotonic()))  # the schedule's own timing
            while self.cluster.faults_held:  # a step waits for the system to settle: the schedule waits with it
                await asyncio.sleep(0.2)
                began += 0.2
            try:
                await self.apply(fault)
            except psycopg.OperationalError:  # the shared server had no connection for the injector: not applied
                self.counts["not applied (PostgreSQL busy)"] += 1
                continue
            self.applied.append(fault)
            self.counts[fault.kind] += 1

    async def apply(self, fault: Fault) -> None:
        cluster = self.cluster
        if fault.kind == "kill":
            await asyncio.to_thread(cluster.kill, fault.target)
            await asyncio.sleep(fault.seconds)
            cluster.restart(fault.target)
            await asyncio.to_thread(cluster.wait_up, fault.target)
        elif fault.kind == "pause":
            cluster.signal(fault.target, signal.SIGSTOP)
            try:
                await asyncio.sleep(fault.seconds)
            finally:
                cluster.signal(fault.target, signal.SIGCONT)
        elif fault.kind == "nats-restart":
            await asyncio.to_thread(cluster.nats.kill)
            try:
                await asyncio.sleep(fault.seconds)
            finally:
                await asyncio.to_thread(cluster.nats.start)
        elif fault.kind == "pg-terminate":
            await asyncio.to_thread(cluster.terminate_connections)
        elif fault.kind == "pg-refuse":
            await asyncio.to_thread(cluster.allow_connections, False)
            try:
                await asyncio.to_thread(cluster.terminate_connections)
                await asyncio.sleep(fault.seconds)
            finally:
                await asyncio.to_thread(cluster.allow_connections, True)
        else:
            await self.republish(fault)

    async def republish(self, fault: Fault) -> None:
        """Re-publish a service stream's latest messages, newest first, without `Nats-Msg-Id` (JetStream stores them
        again): consumers see earlier events after later ones, and events they have already applied."""
        try:
            nc = await nats.connect(self.cluster.nats.url, allow_reconnect=False, connect_timeout=2,
                                     error_cb=ignore)
        except (nats.errors.Error, OSError):
            return  # NATS is down (an earlier fault): nothing to re-publish now
        try:
            js, stream = nc.jetstream(), service_stream(fault.target)
            last = (await js.stream_info(stream)).state.last_seq
            count = int(fault.seconds)
            for sequence in range(last, max(0, last - count), -1):
                try:
                    message = await js.get_msg(stream, sequence)
                except nats.js.errors.NotFoundError:
                    continue
                headers = {k: v for k, v in (message.headers or {}).items() if not k.startswith("Nats-")}
                assert message.subject is not None
                await js.publish(message.subject, message.data or b"", headers=headers, timeout=2)
        except (nats.errors.Error, OSError, TimeoutError):
            pass  # a fault of its own kind meanwhile
        finally:
            await nc.close()

    def _recover(self) -> None:
        self.cluster.allow_connections(True)
        if self.cluster.nats.process is None or self.cluster.nats.process.poll() is not None:
            self.cluster.nats.start()
        for name in SERVICES:
            process = self.cluster.processes[name]
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)
            else:
                self.cluster.restart(name)
            self.cluster.wait_up(name)
