"""Composition root of the milestones service."""

from __future__ import annotations

from dsi_shared.service import AuditFacts, AuditReport, ServiceApplication, ServiceSpec, rebuild_aggregates

from milestones.api import routes
from milestones.application import Milestones
from milestones.domain import MILESTONE_1, ParticipantProgress
from milestones.handlers import SUBSCRIPTIONS
from milestones.ledger import VALIDATED, Evaluation


def audit(app: ServiceApplication, facts: AuditFacts) -> AuditReport:
    """Rebuild all progress; report Milestone 1 and hand every achieved milestone to the payments audit."""
    report = AuditReport()
    achieved = facts.setdefault("milestones_achieved", {})
    quarters: dict[str, list[str]] = {}
    for progress in rebuild_aggregates(app, report, facts):
        if isinstance(progress, Evaluation):
            pid = str(progress.participant_id)
            quarters.setdefault(pid, []).append(f"{progress.quarter} {progress.milestone or '-'} ${progress.earned:,} "
                                                f"{progress.state.replace('_', ' ')}")
            if progress.state == VALIDATED and progress.milestone and progress.earned > 0:
                achieved.setdefault(pid, {})[progress.milestone] = progress.earned  # owed as an achieved milestone
        if not isinstance(progress, ParticipantProgress):
            continue
        pid = str(progress.participant_id)
        achieved.setdefault(pid, {}).update({m: v["amount"] for m, v in progress.achieved.items()})
        m1, missed = progress.achieved.get(MILESTONE_1), progress.missed.get(MILESTONE_1)
        if m1:
            report.rows[pid] = {"milestone1": f"achieved {m1['achieved_at'].date()} ({m1['quarter']})"}
        elif missed:
            report.rows[pid] = {"milestone1": f"missed: {missed['reason']}"}
        else:
            report.rows[pid] = {"milestone1": "not yet"}
    for pid, lines in quarters.items():
        report.rows.setdefault(pid, {})["quarters"] = "; ".join(sorted(lines))
    return report


service = ServiceSpec(
    name="milestones",
    default_port=8103,
    application=Milestones,
    routes=routes,
    subscriptions=SUBSCRIPTIONS,
    audit=audit,
    audit_order=20,
)
