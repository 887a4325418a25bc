"""Submissions' own metrics, from every event it records (`ServiceSpec.observe`)."""

from __future__ import annotations

from typing import Any

from dsi_shared.telemetry import VERDICTS

from submissions.domain import reason_code


def observe(domain_event: Any) -> None:
    """Verdicts by reason code (the part before any ':'), for operators' dashboards."""
    name = type(domain_event).__name__
    if name == "SubmissionCredited":
        VERDICTS.add(1, {"verdict": "credited", "reason": "credited"})
    elif name in ("SubmissionRejected", "SubmissionRecorded"):
        verdict = "rejected" if name == "SubmissionRejected" else "recorded"
        for reason in domain_event.reasons or ["unstated"]:
            VERDICTS.add(1, {"verdict": verdict, "reason": reason_code(reason)})
