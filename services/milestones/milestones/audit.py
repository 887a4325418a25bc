"""Milestones' part of `dsi audit replay`: all progress and evaluations rebuilt; Milestone 1 and the credits
re-derived from the upstream facts with every difference named; what is owed reported to the payments audit
(`AuditContext.achieved`)."""

from __future__ import annotations

from decimal import Decimal

from dsi_shared.audit import AuditContext
from dsi_shared.service import AuditReport, ServiceApplication, rebuild_aggregates

from milestones.application import Milestones
from milestones.domain import MILESTONE_1, ParticipantProgress
from milestones.ledger import VALIDATED, Evaluation
from milestones.rederive import credited, milestone1, shadow_from
from milestones.snapshots import verify

Owed = dict[str, dict[str, Decimal]]  # participant id → milestone → amount


def audit(app: ServiceApplication, context: AuditContext) -> AuditReport:
    """Rebuild all progress and evaluations; re-derive Milestone 1 and the credits from the upstream facts and
    name every difference; check every roster's and ledger's snapshot against its events replayed; hand the
    re-derived Milestone 1 and each validated quarter to the payments audit."""
    assert isinstance(app, Milestones)
    report = AuditReport()
    achieved: Owed = context.achieved if context.achieved is not None else {}
    context.achieved = achieved
    shadow = shadow_from(context.upstream) if context.upstream is not None else None
    quarters: dict[str, list[str]] = {}
    try:
        for aggregate in rebuild_aggregates(app, report, context):
            if app.snapshotted is not None:
                verify(app.snapshotted, aggregate, report, context.as_of)
            if isinstance(aggregate, Evaluation):
                _audit_evaluation(aggregate, shadow, quarters, achieved, report)
            elif isinstance(aggregate, ParticipantProgress):
                _audit_progress(aggregate, shadow, achieved, report)
    finally:
        if shadow is not None:
            shadow.close()
    for pid, lines in quarters.items():
        report.rows.setdefault(pid, {})["quarters"] = "; ".join(sorted(lines))
    return report


def _audit_progress(progress: ParticipantProgress, shadow: Milestones | None, achieved: Owed,
                    report: AuditReport) -> None:
    pid = str(progress.participant_id)
    recorded = milestone1(progress)
    if shadow is not None:
        rederived = shadow.find(progress.id, ParticipantProgress)
        if milestone1(rederived) != recorded:
            report.problems.append(f"milestones: {pid} Milestone 1 recorded {recorded}; re-derived from enrollment's "
                                   f"events: {milestone1(rederived)}")
        source = rederived
    else:
        source = progress
    if source is not None and MILESTONE_1 in source.achieved:
        achieved.setdefault(pid, {})[MILESTONE_1] = source.achieved[MILESTONE_1]["amount"]
    m1, missed = progress.achieved.get(MILESTONE_1), progress.missed.get(MILESTONE_1)
    if m1:
        line = f"achieved {m1['achieved_at'].date()} ({m1['quarter']})"
    else:
        line = f"missed: {missed['reason']}" if missed else "not yet"
    report.rows.setdefault(pid, {})["milestone1"] = line


def _audit_evaluation(evaluation: Evaluation, shadow: Milestones | None, quarters: dict[str, list[str]],
                      achieved: Owed, report: AuditReport) -> None:
    pid = str(evaluation.participant_id)
    quarters.setdefault(pid, []).append(f"{evaluation.quarter} {evaluation.milestone or '-'} ${evaluation.earned:,} "
                                        f"{evaluation.state.replace('_', ' ')}")
    if evaluation.state != VALIDATED or not evaluation.milestone or evaluation.earned <= 0:
        return
    if shadow is not None:
        unknown = sorted(set(evaluation.paid_credits) - credited(shadow, evaluation.participant_id))
        if unknown:
            report.problems.append(f"milestones: {pid} {evaluation.quarter} paid for {len(unknown)} submission(s) "
                                   f"submissions never credited: {', '.join(unknown)}")
            return  # not owed: payments must not have paid it
    achieved.setdefault(pid, {})[evaluation.milestone] = evaluation.earned  # a validated quarter is owed
