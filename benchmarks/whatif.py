"""What-if benchmark (issue 11 §5): `dsi rules what-if` over 2,000 SNF participants × 4 quarters of credited files
(≥ 1,000,000 events in the submissions and milestones stores), against `dsi audit replay` of the same stores.
Goal: what-if ≤ 1.5 × audit replay.

The stores are seeded directly (as the services' handlers record facts), then both commands run as the CLI in a
subprocess, as an auditor or program manager would run them."""

from __future__ import annotations

import json
import os
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import uuid4

from dsi_shared.plantime import PLAN_ZONE, Quarter
from dsi_shared.rulebook import RulesCopy
from milestones.application import Milestones
from milestones.domain import ParticipantProgress
from milestones.earning import PER_FILE
from submissions.application import HL7_TYPE, Submissions
from submissions.domain import MemberFacts, ParticipantFacts, Submission, VisitCredits

from benchmarks import setting
from benchmarks.audit import cli
from benchmarks.setting import size, store_factory
from tests.rulesdoc import amended, packaged

PARTICIPANTS = size("DSI_BENCH_WHATIF_PARTICIPANTS", quick=200, default=2000)
FILES_PER_QUARTER = int(os.environ.get("DSI_BENCH_WHATIF_FILES", "25"))
QUARTERS = ("2025Q4", "2026Q1", "2026Q2", "2026Q3")
SIGNED = datetime(2024, 5, 1, 17, tzinfo=UTC)


def _rules() -> RulesCopy:
    rules = RulesCopy()
    rules.note(packaged())
    return rules


def seed(stores: dict[str, str]) -> int:
    submissions, milestones = Submissions(stores["submissions"]), Milestones(stores["milestones"])
    submissions.save(_rules())
    milestones.save(_rules())
    book = milestones.rulebook()
    calendar = book.calendar
    for n in range(PARTICIPANTS):
        pid = uuid4()
        facts = ParticipantFacts(pid)
        facts.note_registration(provider_type="skilled_nursing", npi=f"{1_200_000_000 + n}", sending_facilities=[f"F{n}"])
        facts.note_eligibility(eligible=True, rule_version="2024.1")
        facts.note_milestone1(achieved_at=SIGNED)
        cin = f"{n:08d}A"
        member = MemberFacts(cin)
        member.note_span(start=date(2024, 1, 1), end=None, version=1)
        progress = ParticipantProgress(pid)
        progress.note_registration("skilled_nursing", f"{1_200_000_000 + n}", f"Bench {n}")
        progress.note_eligibility(True, "2024.1")
        for agreement in ("LOA", "DSA", "HIE"):
            progress.note_agreement(agreement, SIGNED, f"{agreement}-{n}")
            progress.note_review(agreement, f"{agreement}-{n}", "accepted")
        progress.decide_milestone_1(book)
        ledger = milestones.ledger_or_new(pid)
        batch: list[Any] = [facts, member]
        for q, quarter in enumerate(QUARTERS):
            first = calendar.first_day(Quarter.parse(quarter)) + timedelta(days=1)
            for f in range(FILES_PER_QUARTER):
                event_time = datetime.combine(first + timedelta(days=f), datetime.min.time(), PLAN_ZONE) + timedelta(hours=8)
                # every third file arrives 60 hours after its event: timely under 72 h, late under a 48 h window
                received = event_time + timedelta(hours=60 if f % 3 == 0 else 2)
                visit = f"V{n}-{q}-{f}"
                submission = Submission("mllp", received, HL7_TYPE, f"{n:016x}{q:04x}{f:044x}", None, pid, {
                    "messages": [{"type": "ADT^A01", "control_id": f"C{f}", "sending_facility": f"F{n}",
                                  "version": "2.5.1", "problems": [], "belongs": True}],
                    "event_type": "A01", "event_time": event_time.isoformat(), "event_time_source": "EVN-6",
                    "member_id": cin, "visit": visit, "facility": f"F{n}", "rejudgeable": True})
                key = f"A01|{event_time.isoformat()}"
                counted_in = str(calendar.quarter_at(received))
                submission.credit_event(participant_id=pid, member_id=cin, amount=Decimal("400.00"), rule_version="2024.1",
                                        earning_rule=PER_FILE, event_key=key, quarter=counted_in,
                                        captured_on=event_time.date(), attributed=None)
                credits = VisitCredits(pid, cin, visit)
                credits.add(event_key=key, event_type="A01", submission_id=submission.id)
                ledger.note_credit(str(submission.id), PER_FILE, cin, counted_in, Decimal("400.00"), "2024.1")
                batch += [submission, credits]
                if len(batch) >= 200:
                    submissions.save(*batch)
                    batch = []
        submissions.save(*batch)
        milestones.save(progress, ledger)
    total = (submissions.recorder.max_notification_id() or 0) + (milestones.recorder.max_notification_id() or 0)
    submissions.close()
    milestones.close()
    return total


async def main() -> None:
    store_for, drop, backend = store_factory()
    proposed = Path(tempfile.mkdtemp()) / "48h.json"
    proposed.write_text(json.dumps(amended("2026.9", "2025-10-01",
                                           {"provider_types.skilled_nursing.earning_rule.timeliness_hours": 48})))
    try:
        stores = {name: store_for(name) for name in ("submissions", "milestones")}
        started = time.perf_counter()
        events = seed(stores)
        seeding = time.perf_counter() - started
        _, replay_seconds = cli(stores, "audit", "replay", "--service", "submissions", "--service", "milestones")
        report, what_if_seconds = cli(stores, "rules", "what-if", str(proposed), "--from", QUARTERS[0], "--to", QUARTERS[-1])
    finally:
        drop()
    changed = [row for row in report["participants"].values() if row["difference"] != "0.00"]
    lost = sum(-Decimal(row["difference"]) for row in changed)
    print(f"what-if: {PARTICIPANTS:,} participants × {len(QUARTERS)} quarters, {events:,} events in 2 stores, store {backend}")
    print(f"  seeding                              : {seeding:8.1f} s")
    print(f"  dsi audit replay (same stores)       : {replay_seconds:8.1f} s ({events / replay_seconds:,.0f} events/s)")
    print(f"  dsi rules what-if (48 h window)      : {what_if_seconds:8.1f} s = {what_if_seconds / replay_seconds:.2f} × "
          f"audit replay (goal ≤ 1.5); {len(changed):,} participants paid differently, ${lost:,} less in all")
    setting.report("what-if (48 h window) vs audit replay", f"{what_if_seconds:.1f} s",
                   f"{what_if_seconds / replay_seconds:.2f} × audit replay", "≤ 1.5 × audit replay")
