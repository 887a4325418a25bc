"""Composition root of the submissions service: store, handlers, HTTP, and the MLLP listener."""

from __future__ import annotations

import os
from typing import Any

from dsi_shared.service import AuditFacts, AuditReport, ServiceApplication, ServiceSpec, rebuild_aggregates
from dsi_shared.telemetry import VERDICTS

from submissions.api import routes
from submissions.application import Submissions
from submissions.contract import CONTRACT
from submissions.domain import Submission
from submissions.handlers import SUBSCRIPTIONS
from submissions.mllp import MllpListener
from submissions.whatif import what_if


def audit(app: ServiceApplication, facts: AuditFacts) -> AuditReport:
    report = AuditReport()
    credits = facts.setdefault("submission_credits", {})
    for aggregate in rebuild_aggregates(app, report, facts):
        if isinstance(aggregate, Submission) and aggregate.verdict == "credited" and aggregate.reversed_by is None:
            pid = str(aggregate.participant_id)
            credits[pid] = credits.get(pid, 0) + 1
    for pid, count in credits.items():
        report.rows[pid] = {"credited_submissions": str(count)}
    return report


def observe(domain_event: Any) -> None:
    """Verdicts by reason code (the part before any ':'), for operators' dashboards."""
    name = type(domain_event).__name__
    if name == "SubmissionCredited":
        VERDICTS.add(1, {"verdict": "credited", "reason": "credited"})
    elif name in ("SubmissionRejected", "SubmissionRecorded"):
        verdict = "rejected" if name == "SubmissionRejected" else "recorded"
        for reason in domain_event.reasons or ["unstated"]:
            VERDICTS.add(1, {"verdict": verdict, "reason": str(reason).split(":", 1)[0]})


def mllp_listener(app: ServiceApplication) -> MllpListener:
    assert isinstance(app, Submissions)
    return MllpListener(app, int(os.environ.get("SUBMISSIONS_MLLP_PORT", "2575")),
                        os.environ.get("DSI_HTTP_HOST", "127.0.0.1"))


service = ServiceSpec(
    name="submissions",
    default_port=8102,
    application=Submissions,
    routes=routes,
    contract=CONTRACT,
    subscriptions=SUBSCRIPTIONS,
    audit=audit,
    observe=observe,
    audit_order=15,
    servers=(mllp_listener,),
    what_if=what_if,
)
