"""Quarter close and ledger replay (issue: milestones and payments), on PostgreSQL when reachable.

Close: DSI_BENCH_PARTICIPANTS participants (half skilled nursing with 10 credited files each, half primary care)
with DSI_BENCH_MEMBERS attributed members in all (spread over the PCPs, 80% of them with a credited longitudinal
record), all past Milestone 1; one `close_quarter` evaluates every participant. Sizes: quick 200 / 20,000, default
2,000 / 100,000, full (the issue's figure) 2,000 / 500,000.
Seeding takes the rosters' and ledgers' snapshots as the service does; `IS_SNAPSHOTTING_ENABLED=n` runs without them.
Replay: every payment ledger rebuilt from its events (as `dsi audit replay` does), against reading the same
events raw from the store, in the same run.
"""

from __future__ import annotations

import time
from datetime import UTC, date, datetime
from decimal import Decimal
from uuid import uuid4

from dsi_shared.rulebook import RulesCopy
from milestones.application import Milestones
from milestones.domain import ParticipantProgress
from milestones.earning import COVERAGE, PER_FILE
from milestones.ledger import AttributionRoster, CreditLedger
from payments.application import Payments
from payments.domain import PaymentAccount

from benchmarks.setting import report, size, size_name, store_factory
from tests.rulesdoc import packaged

PARTICIPANTS = size("DSI_BENCH_PARTICIPANTS", quick=200, default=2000)
MEMBERS = size("DSI_BENCH_QUARTER_MEMBERS", quick=20_000, default=100_000, full=500_000)
QUARTER = "2025Q4"
SIGNED = datetime(2024, 6, 3, 17, tzinfo=UTC)
CAP = Decimal(packaged()["program"]["cap"])
SNF_RULE, PCP_RULE = PER_FILE, COVERAGE


def seed_milestones(app: Milestones) -> tuple[int, int]:
    rules = RulesCopy()  # the shipped rules, as enrollment publishes them
    rules.note(packaged())
    app.save(rules)
    book = rules.book
    pcps = PARTICIPANTS // 2
    per_pcp = MEMBERS // max(pcps, 1)
    batch: list[object] = []
    for n in range(PARTICIPANTS):
        pcp = n < pcps
        npi = f"{1_000_000_000 + n}"
        progress = ParticipantProgress(uuid4())
        progress.note_registration("primary_care" if pcp else "skilled_nursing", npi, f"Bench {n}")
        progress.note_eligibility(True, "2024.1")
        for agreement in ("LOA", "DSA", "HIE"):
            progress.note_agreement(agreement, SIGNED, f"{agreement}-{n}")
            progress.note_review(agreement, f"{agreement}-{n}", "accepted")
        progress.decide_milestone_1(book)
        ledger = CreditLedger(progress.participant_id)
        batch += [progress, ledger]
        if pcp:
            roster = AttributionRoster(npi)
            for m in range(per_pcp):
                cin = f"{n * per_pcp + m:08d}A"
                roster.attribute(cin=cin, start=date(2025, 1, 1), end=None)
                roster.note_membership(cin=cin, start=date(2024, 1, 1), end=None)
                if m % 5:  # 80% have a record this quarter
                    ledger.note_credit(str(uuid4()), PCP_RULE, cin, QUARTER, Decimal("0.00"), "2024.1")
            batch.append(roster)
        else:
            for _ in range(10):
                ledger.note_credit(str(uuid4()), SNF_RULE, f"{n:08d}B", QUARTER, Decimal("400.00"), "2024.1")
        if len(batch) >= 6:  # a few aggregates a transaction: large single inserts stall the PostgreSQL recorder
            app.save(*batch)  # type: ignore[arg-type]
            batch = []
    if batch:
        app.save(*batch)  # type: ignore[arg-type]
    return pcps * per_pcp, app.recorder.max_notification_id() or 0


def seed_payments(app: Payments) -> int:
    for n in range(PARTICIPANTS):
        account = PaymentAccount(uuid4())
        account.record_payee(f"Bench {n}", f"{1_000_000_000 + n}", None)
        account.pay("M1", Decimal("10000.00"), "2024Q2", "2024.1", source_event=f"m1-{n}", cap=CAP)
        for q in range(10):
            account.pay(f"SNF:q{q}", Decimal("4000.00"), f"2026Q{q % 4 + 1}", "2024.1", source_event=f"e-{n}-{q}",
                        cap=CAP, covers=[f"submission:{n}-{q}-{k}" for k in range(10)])
        app.save(account)
    return app.recorder.max_notification_id() or 0


async def main() -> None:
    store_for, drop, backend = store_factory()
    try:
        milestones = Milestones(store_for("milestones"))
        snapshots = "on" if milestones.snapshots is not None else "off"  # IS_SNAPSHOTTING_ENABLED=n: off
        started = time.perf_counter()
        attributed, seeded_events = seed_milestones(milestones)
        seeding = time.perf_counter() - started
        started = time.perf_counter()
        summary = milestones.close_quarter(QUARTER, "bench", datetime(2026, 2, 1, tzinfo=UTC))
        close_seconds = time.perf_counter() - started
        milestones.close()

        payments = Payments(store_for("payments"))
        events = seed_payments(payments)
        started = time.perf_counter()
        raw = sum(1 for _ in payments.all_notifications())
        raw_rate = raw / (time.perf_counter() - started)
        started = time.perf_counter()
        total = sum((account.total_paid for account in payments.accounts()), Decimal("0"))
        replay_rate = events / (time.perf_counter() - started)
        payments.close()
    finally:
        drop()
    print(f"quarter close {QUARTER}, {PARTICIPANTS:,} participants, {attributed:,} attributed members "
          f"({size_name()} size), store {backend}, "
          f"snapshots {snapshots}")
    print(f"  seeding the milestones store          : {seeding:8.1f} s ({seeded_events:,} events)")
    print(f"  close (every participant evaluated)   : {close_seconds:8.1f} s "
          f"({summary['evaluations']:,} evaluations, ${summary['earned']:,} earned)")
    print(f"  payment ledgers: raw store read       : {raw_rate:8.0f} events/s ({raw:,} events)")
    print(f"  payment ledgers: replay (rebuild all) : {replay_rate:8.0f} events/s (= {replay_rate / raw_rate:.2f} × raw read; "
          f"${total:,} in {PARTICIPANTS:,} ledgers)")
    full = PARTICIPANTS == 2000 and attributed == 500_000
    report(f"quarter close, {PARTICIPANTS:,} participants / {attributed:,} members", f"{close_seconds:.1f} s", "",
           "≤ 5 s (at 2,000 / 500k)" + ("" if full else "; this is not that size"))
    report("replay, payment ledgers", f"{replay_rate:,.0f} events/s", f"{replay_rate / raw_rate:.2f} × raw read",
           "≥ 0.5 × raw read")
