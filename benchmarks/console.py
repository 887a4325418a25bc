"""The console's own read model (issue 15 §1): DSI_BENCH_CONSOLE_PARTICIPANTS participant overviews (default 2,000),
each registered with two counties, four in five eligible, half with Milestone 1 and one or two payments, stored in
the console's store (PostgreSQL when reachable, else SQLite) and projected into its tables (timed). Then
DSI_BENCH_CONSOLE_READS reads (default 200) of the participants list as the page asks it (every match, by name, with
counties: once unfiltered and once filtered by county and amount paid) and of the paid-per-quarter chart; p50/p95 of
each and the list's ratio to raw indexed SQL fetching the same rows from the same tables. Then DSI_BENCH_CONSOLE_FILES
files' verdicts (default 100,000, spread over the participants and half a year; as `dsi.submissions.file-judged` makes
them) stored and projected (timed), and the files-per-week chart read DSI_BENCH_CONSOLE_READS times, with its ratio to
the same GROUP BY as raw SQL.
"""

from __future__ import annotations

import random
import statistics
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from console.activity import FileVerdict, judged
from console.main import ConsoleStore
from console.overview import ParticipantOverview, paid
from console.readmodel import (
    COUNTIES,
    FILES_PROJECTION,
    PARTICIPANTS,
    PROJECTION,
    Filters,
    files_by_week,
    paid_by_type,
    participants,
)
from dsi_shared.projections import runner

from benchmarks.setting import report, size
from benchmarks.spine import store_factory

PARTICIPANTS_N = size("DSI_BENCH_CONSOLE_PARTICIPANTS", 200, 2000)
READS = size("DSI_BENCH_CONSOLE_READS", 20, 200)
FILES_N = size("DSI_BENCH_CONSOLE_FILES", 5000, 100_000)
REJECTIONS = ("late", "not_a_member", "duplicate_of", "incomplete", "before_data_sharing_start")
COUNTY_NAMES = ("Monterey", "Santa Cruz", "Fresno", "Kern", "San Benito", "Kings", "Tulare", "Madera")
TYPES = ("skilled_nursing", "primary_care", "hospital")


def fill(app: ConsoleStore) -> list[uuid.UUID]:
    rng = random.Random(15)
    ids: list[uuid.UUID] = []
    batch: list[ParticipantOverview] = []
    for n in range(PARTICIPANTS_N):
        overview = ParticipantOverview(participant_id=uuid.uuid4())
        overview.note_registration(legal_name=f"Provider {rng.randrange(10**6):06d} {n}", npi=f"{1000000000 + n}",
                                   provider_type=TYPES[n % 3], counties=rng.sample(COUNTY_NAMES, 2))
        overview.note_eligibility(eligible=bool(n % 5))
        if n % 2:
            overview.note_milestone1()
            for k in range(1 + n % 2 + (n % 3 == 0)):
                paid(overview, str(uuid.uuid4()), f"2025Q{1 + k}", Decimal("10000.00") if k == 0 else Decimal("2400.00"))
        batch.append(overview)
        ids.append(overview.id)
        if len(batch) == 500:
            app.save(*batch)
            batch = []
    if batch:
        app.save(*batch)
    return ids


def fill_files(app: ConsoleStore, participant_ids: list[uuid.UUID]) -> None:
    """FILES_N files, each judged once; one in three rejected (by one of five reasons), one in ten judged again."""
    rng = random.Random(16)
    batch: list[FileVerdict] = []
    for n in range(FILES_N):
        verdict = FileVerdict(submission_id=uuid.uuid4())
        received = f"2025-{1 + (n % 26) // 4 + 1:02d}-{1 + n % 28:02d}T10:00:00-08:00"
        owner = str(participant_ids[n % len(participant_ids)])
        rejected = n % 3 == 0
        judged(verdict, 3, owner, received, "rejected" if rejected else "credited",
               [rng.choice(REJECTIONS)] if rejected else [])
        if n % 10 == 0:
            judged(verdict, 5, owner, received, "credited", [])
        batch.append(verdict)
        if len(batch) == 1000:
            app.save(*batch)
            batch = []
    if batch:
        app.save(*batch)


def timed(reads: int, read: Callable[[], Any]) -> list[float]:
    for _ in range(3):  # warm-up
        read()
    timings = []
    for _ in range(reads):
        t0 = time.perf_counter()
        read()
        timings.append(time.perf_counter() - t0)
    return timings


def p95(values: list[float]) -> float:
    return sorted(values)[min(len(values) - 1, int(0.95 * len(values)))] * 1000


def raw_list(conn: sa.Connection, county: str | None, paid_min_cents: int | None) -> list[Any]:
    """The same rows with raw indexed SQL: the participants within the filters and their counties, by name."""
    p = PARTICIPANTS.c
    query = sa.select(p.id, p.legal_name, p.npi, p.provider_type, p.status, p.milestone1, p.paid_cents) \
        .where(p.legal_name.is_not(None))
    if county:
        query = query.where(p.id.in_(sa.select(COUNTIES.c.id).where(COUNTIES.c.county_key == county)))
    if paid_min_cents is not None:
        query = query.where(p.paid_cents >= paid_min_cents)
    rows = conn.execute(query.order_by(p.legal_name, p.id)).all()
    ids = [r.id for r in rows]
    counties = [conn.execute(sa.select(COUNTIES.c.id, COUNTIES.c.county).where(COUNTIES.c.id.in_(ids[i:i + 500]))).all()
                for i in range(0, len(ids), 500)]
    return [rows, counties]


RAW_FILES = ("SELECT f.week, f.kind, count(*) FROM console_files f JOIN console_participants p ON p.id = "
             "f.participant_id WHERE f.kind IS NOT NULL AND p.legal_name IS NOT NULL GROUP BY f.week, f.kind")


def files_chart(app: ConsoleStore, participant_ids: list[uuid.UUID]) -> None:
    began = time.perf_counter()
    fill_files(app, participant_ids)
    stored = time.perf_counter() - began
    began = time.perf_counter()
    read_model = runner(app, FILES_PROJECTION)
    read_model.catch_up()
    built = time.perf_counter() - began
    with read_model.engine.connect() as conn:
        chart = timed(READS, lambda: files_by_week(conn))
        raw = timed(READS, lambda: conn.exec_driver_sql(RAW_FILES).all())
        counted = sum(sum(kinds.values()) for kinds in files_by_week(conn).values())
    print(f"  files' verdicts: {FILES_N:,} stored in {stored:.1f} s; their table built in {built:.1f} s "
          f"({FILES_N / built:,.0f} files/s)")
    print(f"  files per week chart ({counted:,} files counted, {READS} reads): p50 {statistics.median(chart) * 1000:.2f} "
          f"ms, p95 {p95(chart):.2f} ms; raw SQL, the same GROUP BY: p95 {p95(raw):.2f} ms; chart / raw at p95: "
          f"{p95(chart) / p95(raw):.1f}×")
    report(f"console files chart ({FILES_N:,} files)", f"p95 {p95(chart):.1f} ms", f"{p95(chart) / p95(raw):.1f}× raw SQL")


async def main() -> None:
    make, drop, kind = store_factory()
    app = ConsoleStore(make("console"))
    try:
        began = time.perf_counter()
        participant_ids = fill(app)
        stored = time.perf_counter() - began
        began = time.perf_counter()
        read_model = runner(app, PROJECTION)
        read_model.catch_up()
        built = time.perf_counter() - began
        filtered = Filters(county="monterey", paid_min=Decimal("12400"))
        with read_model.engine.connect() as conn:
            everyone = timed(READS, lambda: participants(conn, Filters()))
            some = timed(READS, lambda: participants(conn, filtered))
            chart = timed(READS, lambda: paid_by_type(conn))
            raw_everyone = timed(READS, lambda: raw_list(conn, None, None))
            raw_some = timed(READS, lambda: raw_list(conn, "monterey", 1240000))
            listed, matched = len(participants(conn, Filters())), len(participants(conn, filtered))
        print(f"console read model on {kind}: {PARTICIPANTS_N:,} participants stored in {stored:.1f} s; its tables built "
              f"from the store in {built:.1f} s ({PARTICIPANTS_N / built:,.0f} overviews/s)")
        for name, mine, raw, rows in (("every participant", everyone, raw_everyone, listed),
                                      ("county + paid at least $12,400", some, raw_some, matched)):
            print(f"  participants list, {name} ({rows:,} rows, {READS} reads): p50 {statistics.median(mine) * 1000:.2f} "
                  f"ms, p95 {p95(mine):.2f} ms; raw indexed SQL, the same rows: p95 {p95(raw):.2f} ms; "
                  f"list / raw at p95: {p95(mine) / p95(raw):.1f}×")
            report(f"console list, {name} ({rows:,} of {PARTICIPANTS_N:,})", f"p95 {p95(mine):.1f} ms",
                   f"{p95(mine) / p95(raw):.1f}× raw SQL")
        print(f"  paid per quarter by provider type ({READS} reads): p50 {statistics.median(chart) * 1000:.2f} ms, "
              f"p95 {p95(chart):.2f} ms")
        report(f"console paid chart ({PARTICIPANTS_N:,} participants)", f"p95 {p95(chart):.1f} ms")
        files_chart(app, participant_ids)
    finally:
        app.close()
        drop()
