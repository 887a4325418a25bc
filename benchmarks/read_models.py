"""Read models (issue 15 §1): DSI_BENCH_SUBMISSIONS submissions (default 100,000) of DSI_BENCH_PARTICIPANTS
participants (default 2,000) stored (PostgreSQL when reachable, else SQLite), their read model built from the log
(timed), then DSI_BENCH_PAGES requests (default 400) for a page of 50 of one participant's submissions with a filter
and a sort (`verdict=credited&sort=-received_at&limit=50`) through the HTTP endpoint (in-process ASGI: the routing,
auth, query, JSON and response validation, no socket). Prints p50/p95 and the ratio to the same page asked of the
same table with raw indexed SQL. Goal: p95 ≤ 50 ms.
"""

from __future__ import annotations

import base64
import os
import random
import statistics
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import httpx
import sqlalchemy as sa
from dsi_shared.http import Auth, install_problem_handlers
from dsi_shared.projections import runner
from fastapi import FastAPI
from submissions.api import routes
from submissions.application import Submissions
from submissions.domain import Submission
from submissions.projections import PROJECTION, SUBMISSIONS

from benchmarks.spine import store_factory

SUBMISSIONS_N = int(os.environ.get("DSI_BENCH_SUBMISSIONS", "100000"))
PARTICIPANTS_N = int(os.environ.get("DSI_BENCH_PARTICIPANTS", "2000"))
PAGES = int(os.environ.get("DSI_BENCH_PAGES", "400"))
HEADERS = {"Authorization": "Bearer staff"}


def fill(app: Submissions, participants: list[uuid.UUID]) -> None:
    """SUBMISSIONS_N submissions spread over the participants, four in five credited, the rest rejected."""
    start = datetime(2025, 10, 1, tzinfo=UTC)
    batch: list[Submission] = []
    for n in range(SUBMISSIONS_N):
        pid = participants[n % len(participants)]
        received = start + timedelta(minutes=n)
        sub = Submission("mllp", received, "application/hl7-v2", f"{n:064x}", None, pid,
                         {"event_type": "A01", "event_time": (received - timedelta(hours=1)).isoformat()})
        if (n // len(participants)) % 5:
            sub.credit_event(pid, f"9{n:07d}A", Decimal("400.00"), "2024.1", "snf_adt", f"A01|{n}", "2025Q4",
                             date(2025, 10, 1), True)
        else:
            sub.reject(["late"])
        batch.append(sub)
        if len(batch) == 1000:
            app.save(*batch)
            batch = []
    if batch:
        app.save(*batch)


def p(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))]


async def main() -> None:
    os.environ.setdefault("DSI_PAYLOAD_KEY", base64.b64encode(os.urandom(32)).decode())
    make, drop, kind = store_factory()
    app = Submissions(make("submissions"))
    try:
        participants = [uuid.uuid4() for _ in range(PARTICIPANTS_N)]
        began = time.perf_counter()
        fill(app, participants)
        stored = time.perf_counter() - began
        began = time.perf_counter()
        read_model = runner(app, PROJECTION)
        read_model.catch_up()
        built = time.perf_counter() - began
        http = FastAPI()
        install_problem_handlers(http)
        http.include_router(routes(app, Auth({"staff": "program-staff"})))
        rng = random.Random(15)
        asked = [rng.choice(participants) for _ in range(PAGES)]
        params = {"verdict": "credited", "sort": "-received_at", "limit": "50"}
        timings: list[float] = []
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=http), base_url="http://bench") as client:
            for pid in asked[:20]:  # warm-up
                (await client.get(f"/participants/{pid}/submissions", params=params, headers=HEADERS)).raise_for_status()
            for pid in asked:
                t0 = time.perf_counter()
                response = await client.get(f"/participants/{pid}/submissions", params=params, headers=HEADERS)
                timings.append(time.perf_counter() - t0)
                body = response.json()
                assert response.status_code == 200 and body["count"] > 0
                assert len(body["submissions"]) == min(50, body["count"])
        t = SUBMISSIONS.c
        raw_query = (sa.select(t.body).where(t.participant_id == sa.bindparam("pid"), t.verdict == "credited")
                     .order_by(t.received_at.desc(), t.id.desc()).limit(51))
        raw: list[float] = []
        with read_model.engine.connect() as conn:
            for pid in asked:
                t0 = time.perf_counter()
                conn.execute(raw_query, {"pid": str(pid)}).all()
                raw.append(time.perf_counter() - t0)
        http_p95, raw_p95 = p(timings, 0.95) * 1000, p(raw, 0.95) * 1000
        print(f"read models on {kind}: {SUBMISSIONS_N:,} submissions of {PARTICIPANTS_N:,} participants stored in "
              f"{stored:.1f} s; read model built from the log in {built:.1f} s ({SUBMISSIONS_N / built:,.0f} aggregates/s)")
        print(f"  GET /participants/{{id}}/submissions?verdict=credited&sort=-received_at&limit=50 ({PAGES} pages): "
              f"p50 {statistics.median(timings) * 1000:.2f} ms, p95 {http_p95:.2f} ms (goal ≤ 50 ms)")
        print(f"  raw indexed SQL, the same page of the same table: p50 {statistics.median(raw) * 1000:.2f} ms, "
              f"p95 {raw_p95:.2f} ms; HTTP endpoint / raw SQL at p95: {http_p95 / raw_p95:.1f}×")
    finally:
        app.close()
        drop()
