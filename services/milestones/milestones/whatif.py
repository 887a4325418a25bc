"""What-if, milestones' part (issue 11 §5): each participant's Milestone 1 and quarters worked out under a rules
book from the recorded facts (agreements, attribution rosters) and the files as judged under that same book, by
the same pure rules (`decide_milestone1`, `pcp_quarter`). What each earned goes on to payments' part, which cuts it
to the cap (its own rule, `payable`, with the cap's scope). Nothing is recorded."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from dsi_shared.audit import Earning, JudgedFile, JudgedFiles, WhatIfContext
from dsi_shared.plantime import Quarter, plan_day
from dsi_shared.rulebook import CoveragePerPeriod, PerQualifyingFile, RuleBook

from milestones.application import Milestones
from milestones.domain import ACHIEVED, ParticipantProgress, decide_milestone1
from milestones.earning import COVERAGE, PER_FILE, ZERO, pcp_quarter


@dataclass
class Projection:
    milestone1: str = "not yet"
    quarters: dict[str, str] = field(default_factory=dict)  # quarter → "M2 met $10000.00" / "$1200.00 (3 files)"
    earnings: list[Earning] = field(default_factory=list)  # before the cap, in the order owed

    @property
    def earned(self) -> Decimal:
        return sum((e.amount for e in self.earnings), ZERO)


def project(app: Milestones, book: RuleBook, files: JudgedFiles, first: Quarter, last: Quarter) -> dict[str, Projection]:
    return {str(progress.participant_id): _participant(app, progress, book, files.get(str(progress.participant_id), []),
                                                      first, last)
            for progress in app.all_progress()}


def _participant(app: Milestones, progress: ParticipantProgress, book: RuleBook, files: Sequence[JudgedFile],
                 first: Quarter, last: Quarter) -> Projection:
    projection = Projection()
    decision = decide_milestone1(eligible=bool(progress.eligibility and progress.eligibility["eligible"]),
                                 provider_type=progress.provider_type, signatures=progress.signatures,
                                 due_on=progress.due_on, departure=progress.departure, book=book)
    if decision.outcome != ACHIEVED:
        projection.milestone1 = decision.reason or "not yet"
        return projection
    assert decision.completed_at is not None and decision.amount is not None
    projection.milestone1 = f"achieved ${decision.amount} ({decision.rule_version})"
    projection.earnings.append(Earning(book.calendar.quarter_at(decision.completed_at), "M1", decision.amount))
    met: set[str] = set()
    quarter = first
    while quarter <= last:
        earned, shown = _quarter(app, progress, book, files, quarter, plan_day(decision.completed_at), frozenset(met))
        if shown:
            projection.quarters[str(quarter)] = shown
        if earned[1]:
            met.add(earned[1])
        if earned[0] > ZERO:
            projection.earnings.append(Earning(quarter, earned[1] or str(quarter), earned[0]))
        quarter = quarter.next()
    return projection


def _quarter(app: Milestones, progress: ParticipantProgress, book: RuleBook, files: Sequence[JudgedFile], quarter: Quarter,
             m1_on: Any, met_before: frozenset[str]) -> tuple[tuple[Decimal, str | None], str]:
    calendar = book.calendar
    first_day, last_day = calendar.first_day(quarter), calendar.last_day(quarter)
    rules = book.in_force(first_day)
    row = rules.provider_type(progress.provider_type or "") if rules else None
    departed = progress.departure
    if row is None or m1_on > last_day or row.data_sharing_starts > last_day or (
            departed is not None and departed["effective_on"] <= first_day):
        return (ZERO, None), ""
    credited = [f for f in files if f.quarter == str(quarter) and f.verdict == "credited"]
    if isinstance(row.earning_rule, PerQualifyingFile):
        earned = sum((f.amount for f in credited if f.earning_rule == PER_FILE), ZERO)
        return (earned, None), f"${earned} ({sum(1 for f in credited if f.earning_rule == PER_FILE)} files)"
    if isinstance(row.earning_rule, CoveragePerPeriod):
        recorded = {f.member_id for f in credited if f.earning_rule == COVERAGE and f.member_id}
        outcome = pcp_quarter(row.earning_rule, quarter.index_from(calendar.quarter_of(row.data_sharing_starts)),
                              quarter, app.attributed(progress, quarter, calendar), recorded, met_before)
        shown = f"{outcome.milestone} {'met' if outcome.met else 'missed'} {outcome.numerator}/{outcome.denominator}"
        return (outcome.earned, outcome.milestone if outcome.met else None), f"{shown} ${outcome.earned}"
    return (ZERO, None), "earning rule forthcoming"


def what_if(app: object, context: WhatIfContext) -> None:
    """The service's what-if hook: each participant under the current and the proposed book, and what changes."""
    assert isinstance(app, Milestones)
    current, proposed = context.books(app.rulebook())
    files = context.files
    first, last = context.first, context.last
    now, then = project(app, current, files["current"], first, last), project(app, proposed, files["proposed"], first, last)
    for book_name, projections in (("current", now), ("proposed", then)):
        context.earnings[book_name].update({pid: p.earnings for pid, p in projections.items()})
    participants: dict[str, dict[str, Any]] = {}
    for pid in sorted(now):
        before, after = now[pid], then[pid]
        changed_files = _changed_files(files["current"].get(pid, []), files["proposed"].get(pid, []))
        quarters = {q: {"current": before.quarters.get(q, ""), "proposed": after.quarters.get(q, "")}
                    for q in sorted({*before.quarters, *after.quarters})
                    if before.quarters.get(q, "") != after.quarters.get(q, "")}
        milestone1 = {"current": before.milestone1, "proposed": after.milestone1} \
            if before.milestone1 != after.milestone1 else None
        # dollars before the cap here; payments' part cuts them to it
        participants[pid] = {"current": str(before.earned), "proposed": str(after.earned),
                             "difference": str(after.earned - before.earned), "files": changed_files,
                             "quarters": quarters, "milestone1": milestone1}
    context.participants = participants


def _changed_files(before: Sequence[JudgedFile], after: Sequence[JudgedFile]) -> list[dict[str, Any]]:
    proposed = {f.submission_id: f for f in after}
    changed = []
    for old in before:
        new = proposed.get(old.submission_id)
        if new is not None and (old.verdict, old.amount, old.reasons) != (new.verdict, new.amount, new.reasons):
            changed.append({"submission_id": old.submission_id, "quarter": old.quarter,
                            "current": {"verdict": old.verdict, "amount": str(old.amount), "reasons": list(old.reasons)},
                            "proposed": {"verdict": new.verdict, "amount": str(new.amount), "reasons": list(new.reasons),
                                         "rule_version": new.rule_version}})
    return changed
