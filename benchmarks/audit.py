"""Audit at scale (issue: audit and operations), on PostgreSQL when reachable.

Seeds enrollment, milestones and payments stores with DSI_BENCH_AUDIT_PARTICIPANTS participants (default 62,500, quick 2,000;
16 events each: 1,000,000 events in all) as the services themselves would have recorded them — registration,
eligibility and three signatures upstream; the same facts and Milestone 1 in milestones; the $10,000 payment.
Then, as an auditor would run them: `dsi audit replay --json` (every aggregate rebuilt, Milestone 1 re-derived
from enrollment's published events through milestones' handlers, every ledger compared), the chain sealed, and
`dsi audit verify --offline --json`; each against reading the same events raw from the stores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import uuid4

from dsi_shared.chain import HashChain
from dsi_shared.rulebook import RulesCopy
from dsi_shared.service import discover
from enrollment.application import Enrollment
from enrollment.domain import Participant
from milestones.application import Milestones
from milestones.domain import ParticipantProgress
from payments.application import Payments
from payments.domain import PaymentAccount

from benchmarks.setting import report, size, store_factory
from tests.rulesdoc import packaged

PARTICIPANTS = size("DSI_BENCH_AUDIT_PARTICIPANTS", quick=2000, default=62500)
SIGNED = datetime(2024, 5, 1, 17, tzinfo=UTC)
CAP = Decimal(packaged()["program"]["cap"])


def _copy() -> RulesCopy:
    rules = RulesCopy()
    rules.note(packaged())
    return rules


def seed(stores: dict[str, str]) -> int:
    enrollment, milestones, payments = Enrollment(stores["enrollment"]), Milestones(stores["milestones"]), \
        Payments(stores["payments"])
    enrollment.ensure_default_rules()  # the shipped rules, published as the service does at start
    rules = _copy()
    milestones.save(rules)
    payments.save(_copy())
    book = rules.book
    batches: dict[Any, list[Any]] = {enrollment: [], milestones: [], payments: []}
    for n in range(PARTICIPANTS):
        npi, name = f"{1_100_000_000 + n}", f"Bench Facility {n}"
        participant = Participant(legal_name=name, npi=npi, tin=None, provider_type="skilled_nursing", counties=["Monterey"],
                                  ehr_product="PCC", is_hospital=False, umbrella_group=None, manages_ehr=True,
                                  sending_facilities=[f"FAC{n}"], contact_email="x@example.org",
                                  submitted_on=datetime(2024, 2, 1).date(), facility_kind=None)
        participant.determine_eligibility(eligible=True, reasons=[], rule_version="2024.1", schedule=None)
        progress = ParticipantProgress(participant.id)  # as milestones' handlers record enrollment's facts
        progress.note_registration("skilled_nursing", npi, name)
        progress.note_eligibility(True, "2024.1")
        for i, agreement in enumerate(("LOA", "DSA", "HIE")):
            signed_at = SIGNED + timedelta(minutes=i)
            participant.sign(agreement, signed_at, f"{agreement}-{n}", "http")
            participant.review(agreement, f"{agreement}-{n}", "accepted", "bench")
            progress.note_agreement(agreement, signed_at, f"{agreement}-{n}")
            progress.note_review(agreement, f"{agreement}-{n}", "accepted")
        progress.decide_milestone_1(book)
        account = PaymentAccount(participant.id)
        account.record_payee(name, npi, None)
        account.pay("M1", Decimal("10000.00"), "2024Q2", "2024.1", source_event=str(uuid4()), cap=CAP)
        for app, aggregate in ((enrollment, participant), (milestones, progress), (payments, account)):
            batches[app].append(aggregate)
            if len(batches[app]) >= 200:
                app.save(*batches[app])
                batches[app] = []
    total = 0
    for app, pending in batches.items():
        if pending:
            app.save(*pending)
        total += app.recorder.max_notification_id() or 0
        app.close()
    return total


def raw_read(stores: dict[str, str]) -> tuple[int, float]:
    started, count = time.perf_counter(), 0
    for name, url in stores.items():
        app = discover()[name].application(url)
        count += sum(1 for _ in app.all_notifications())
        app.close()
    return count, time.perf_counter() - started


def seal(stores: dict[str, str]) -> float:
    started = time.perf_counter()
    for name, url in stores.items():
        app = discover()[name].application(url)
        HashChain(app).seal_all()
        app.close()
    return time.perf_counter() - started


def cli(stores: dict[str, str], *args: str) -> tuple[dict[str, Any], float]:
    """`dsi <args> --json` against these stores, as an auditor runs it: (its JSON, seconds)."""
    env = {**os.environ, **{f"{name.upper().replace('-', '_')}_STORE": url for name, url in stores.items()}}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "dsi_shared.cli", *args, "--json"], env=env,
                          capture_output=True, text=True, timeout=3600)
    seconds = time.perf_counter() - started
    if not done.stdout.strip():
        raise RuntimeError(done.stderr[-2000:])
    return json.loads(done.stdout), seconds


async def main() -> None:
    store_for, drop, backend = store_factory()
    try:
        stores = {name: store_for(name) for name in ("enrollment", "submissions", "milestones", "payments", "qip-share")}
        started = time.perf_counter()
        events = seed(stores)
        seeding = time.perf_counter() - started
        raw, raw_seconds = raw_read(stores)
        replayed, replay_seconds = cli(stores, "audit", "replay")
        sealing = seal(stores)
        verified, verify_seconds = cli(stores, "audit", "verify", "--offline")
    finally:
        drop()
    raw_rate = raw / raw_seconds
    print(f"audit: {PARTICIPANTS:,} participants, {events:,} events in 5 stores, store {backend}")
    print(f"  seeding                                : {seeding:8.1f} s")
    print(f"  raw store read (all notifications)     : {raw_rate:8.0f} events/s ({raw:,} events, {raw_seconds:.1f} s)")
    replay_rate = events / replay_seconds
    print(f"  dsi audit replay (rebuild + re-derive) : {replay_rate:8.0f} events/s ({replay_seconds:.1f} s) = "
          f"{replay_rate / raw_rate:.2f} × raw read; {len(replayed['problems'])} problem(s)")
    print(f"  sealing the hash chains                : {events / sealing:8.0f} events/s ({sealing:.1f} s)")
    verify_rate = events / verify_seconds
    print(f"  dsi audit verify                       : {verify_rate:8.0f} events/s ({verify_seconds:.1f} s) = "
          f"{verify_rate / raw_rate:.2f} × raw read; intact: {verified['intact']}")
    report("dsi audit replay", f"{replay_rate:,.0f} events/s", f"{replay_rate / raw_rate:.2f} × raw read")
