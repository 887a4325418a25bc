"""Submissions' part of `dsi audit replay`: every submission rebuilt, credited ones counted per participant."""

from __future__ import annotations

from dsi_shared.audit import AuditContext
from dsi_shared.service import AuditReport, ServiceApplication, rebuild_aggregates

from submissions.domain import Submission


def audit(app: ServiceApplication, context: AuditContext) -> AuditReport:
    report = AuditReport()
    credits: dict[str, int] = {}
    for aggregate in rebuild_aggregates(app, report, context):
        if isinstance(aggregate, Submission) and aggregate.verdict == "credited" and aggregate.reversed_by is None:
            pid = str(aggregate.participant_id)
            credits[pid] = credits.get(pid, 0) + 1
    for pid, count in credits.items():
        report.rows[pid] = {"credited_submissions": str(count)}
    return report

