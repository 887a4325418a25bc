"""Submissions: combined ADT/ORU/RDE files sent over MLLP (each file one HL7 batch frame) by DSI_BENCH_CONNECTIONS
concurrent senders (default 4) to the submissions service's MLLP listener, each answered only after its verdict is
recorded in the store (PostgreSQL when reachable). Prints sustained files/s, p50/p99 ACK latency, and the ratio to
raw python-hl7 parsing of the same files in the same run. DSI_BENCH_FILES files (default 2,000), each a new
qualifying A01 for its own member and visit, received within 72 hours: every one is credited.
"""

from __future__ import annotations

import asyncio
import base64
import os
import statistics
import time
import uuid
from datetime import UTC, date, datetime, timedelta

import hl7
import hl7.mllp
from dsi_shared.natsserver import free_port
from dsi_shared.plantime import PLAN_ZONE
from dsi_shared.rulebook import RulesCopy
from submissions.application import Submissions
from submissions.domain import FacilityIndex, MemberFacts, ParticipantFacts
from submissions.mllp import MllpListener

from benchmarks.spine import store_factory
from tests.hl7_corpus import FACILITY, adt, batch, oru, rde
from tests.rulesdoc import packaged
from tests.x12_834 import cin

FILES = int(os.environ.get("DSI_BENCH_FILES", "2000"))
CONNECTIONS = int(os.environ.get("DSI_BENCH_CONNECTIONS", "4"))


def seeded(store: str) -> Submissions:
    """A submissions store that knows one SNF past Milestone 1 and FILES plan members, as enrollment would."""
    os.environ.setdefault("DSI_PAYLOAD_KEY", base64.b64encode(os.urandom(32)).decode())
    app = Submissions(store)
    participant = ParticipantFacts(uuid.uuid4())
    participant.note_registration(provider_type="skilled_nursing", npi="1234567893", sending_facilities=[FACILITY])
    participant.note_eligibility(eligible=True, rule_version="2024.1")
    participant.note_milestone1(achieved_at=datetime(2024, 6, 1, tzinfo=UTC))
    rules = RulesCopy()  # the shipped rules, as enrollment publishes them
    rules.note(packaged())
    app.save(rules, participant, FacilityIndex(FACILITY, participant.participant_id))
    for offset in range(0, FILES, 500):
        members = []
        for n in range(offset, min(offset + 500, FILES)):
            member = MemberFacts(cin(n))
            member.note_span(start=date(2024, 1, 1), end=None, version=1)
            members.append(member)
        app.save(*members)
    return app


def corpus() -> list[bytes]:
    """One combined file per member: its A01 an hour ago (plan-local time), its ORU and RDE, as one HL7 batch."""
    occurred = (datetime.now(UTC) - timedelta(hours=1)).astimezone(PLAN_ZONE).strftime("%Y%m%d%H%M%S")
    return [batch(adt("A01", cin(n), visit=f"V{n:07d}", occurred=occurred, recorded=occurred),
                  oru(cin(n), f"V{n:07d}"), rde(cin(n), f"V{n:07d}")).encode() for n in range(FILES)]


async def send_all(port: int, files: list[bytes]) -> tuple[float, list[float], int]:
    latencies: list[float] = []
    accepted = 0
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for file in files:
        queue.put_nowait(file)

    async def sender() -> None:
        nonlocal accepted
        reader, writer = await hl7.mllp.open_hl7_connection("127.0.0.1", port, limit=64 * 1024 * 1024)
        while not queue.empty():
            file = queue.get_nowait()
            started = time.perf_counter()
            writer.writeblock(file)
            await writer.drain()
            answer = await reader.readblock()
            latencies.append(time.perf_counter() - started)
            accepted += answer.count(b"MSA|AA|")
        writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(sender() for _ in range(CONNECTIONS)))
    return time.perf_counter() - started, latencies, accepted


async def main() -> None:
    store_for, drop, backend = store_factory()
    files = corpus()
    try:
        started = time.perf_counter()
        for file in files:
            hl7.parse_file(file.decode())
        parse_rate = len(files) / (time.perf_counter() - started)

        app = seeded(store_for("submissions"))
        port = free_port()
        listener = MllpListener(app, port)
        serving = asyncio.create_task(listener.run())
        await asyncio.sleep(0.2)
        elapsed, latencies, accepted = await send_all(port, files)
        listener.stopping.set()
        await serving
        credited = sum(1 for n in app.recorder.select_notifications(start=1, limit=10 * FILES + 1000)
                       if n.topic.endswith("Submission.SubmissionCredited"))
        app.close()
    finally:
        drop()
    rate = len(files) / elapsed
    cuts = statistics.quantiles(latencies, n=100)
    print(f"submissions over MLLP, {len(files):,} combined files (ADT+ORU+RDE batch, {len(files[0]):,} bytes each), "
          f"{CONNECTIONS} connections, store {backend}")
    print(f"  raw python-hl7 parse_file         : {parse_rate:10.0f} files/s")
    print(f"  MLLP → recorded verdict → ACK     : {rate:10.0f} files/s ({elapsed:.1f} s; = {rate / parse_rate:.3f} × raw parse)")
    print(f"  ACK latency                       : p50 {cuts[49] * 1000:.1f} ms, p99 {cuts[98] * 1000:.1f} ms")
    print(f"  ACK codes AA                      : {accepted:,} messages; credits recorded: {credited:,}")

