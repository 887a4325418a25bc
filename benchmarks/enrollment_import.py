"""Enrollment: import of a generated X12 834 with DSI_BENCH_MEMBERS (quick 10,000, default 100,000) new members into the
enrollment store (PostgreSQL when reachable), through the same parser and application the HTTP endpoint
uses (a large file is parsed in a process of its own while this one saves). Prints members/s, and the ratio to
parsing alone (in this process) and to raw store appends of the same aggregates."""

from __future__ import annotations

import time

from enrollment.application import Enrollment
from enrollment.members import Member
from enrollment.rosters import eligibility_834, parse_apart_when_large

from benchmarks import setting
from benchmarks.setting import size, store_factory
from tests.x12_834 import Enrollee, build_834, cin

MEMBERS = size("DSI_BENCH_MEMBERS", quick=10_000, default=100_000)


async def main() -> None:
    store_for, drop, backend = store_factory()
    text = build_834(Enrollee(cin(n), family=f"FAMILY{n % 997}", given=f"GIVEN{n % 991}") for n in range(MEMBERS))
    data = text.encode()
    try:
        started = time.perf_counter()
        parsed = sum(1 for _ in eligibility_834(text))
        parse_rate = parsed / (time.perf_counter() - started)

        raw = Enrollment(store_for("raw"))
        started = time.perf_counter()
        for offset in range(0, min(MEMBERS, 20000), 500):  # same chunking as the import, fewer rows
            batch = []
            for n in range(offset, offset + 500):
                member = Member(cin(n))
                member.record_eligibility(Enrollee(cin(n)).start, None, "1H", False, False, "raw")  # type: ignore[arg-type]
                batch.append(member)
            raw.save(*batch)
        raw_rate = min(MEMBERS, 20000) / (time.perf_counter() - started)
        raw.close()

        app = Enrollment(store_for("enrollment"))
        started = time.perf_counter()
        report, _ = app.import_roster("eligibility", "834", data, parse_apart_when_large(eligibility_834, text))
        elapsed = time.perf_counter() - started
        again_started = time.perf_counter()
        _, already = app.import_roster("eligibility", "834", data, parse_apart_when_large(eligibility_834, text))
        again = time.perf_counter() - again_started
        app.close()
    finally:
        drop()
    rate = report["accepted"] / elapsed
    print(f"enrollment 834 import, {MEMBERS:,} members ({len(data) / 1e6:.1f} MB), store {backend}")
    print(f"  parse only (pyx12 + rules)         : {parse_rate:10.0f} members/s")
    print(f"  raw store append (2 events/member) : {raw_rate:10.0f} members/s")
    print(f"  import to events                   : {rate:10.0f} members/s ({elapsed:.1f} s; "
          f"= {rate / parse_rate:.2f} × parse, {rate / raw_rate:.2f} × raw append); "
          f"{report['members_changed']:,} members, {report['rejected']} rejected")
    print(f"  re-import of the same file         : {again:10.2f} s (already imported: {already})")
    setting.report(f"834 import, {MEMBERS:,} members", f"{rate:,.0f} members/s", f"{rate / parse_rate:.2f} × parse",
                   "≥ 0.6 × parse")
