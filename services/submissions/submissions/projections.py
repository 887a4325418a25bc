"""The submissions read model (issue 15 §1): one row per submission, its list view stored as JSON beside the
columns the list endpoint filters and sorts on."""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from dsi_shared.projections import Projection, Rows
from dsi_shared.store import ServiceApplication

from submissions.domain import Submission

METADATA = sa.MetaData()
SUBMISSIONS = sa.Table(
    "rm_submissions", METADATA,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("seq", sa.BigInteger, nullable=False),  # creation order
    sa.Column("participant_id", sa.String(36)),
    sa.Column("channel", sa.String(40), nullable=False),
    sa.Column("verdict", sa.String(40), nullable=False),
    sa.Column("received_at", sa.String(40), nullable=False),  # ISO 8601 in UTC: sorts as text
    sa.Column("body", sa.Text, nullable=False),
    sa.Index("rm_submissions_participant_seq", "participant_id", "seq", "id"),
    sa.Index("rm_submissions_participant_received", "participant_id", "received_at", "id"),
    sa.Index("rm_submissions_participant_verdict_received", "participant_id", "verdict", "received_at", "id"),
)


def rows(_: ServiceApplication, submission: Any) -> Rows:
    from submissions.api import submission_view  # the list's view, as the API renders it

    if not isinstance(submission, Submission):
        return {}
    return {SUBMISSIONS.name: [{
        "participant_id": str(submission.participant_id) if submission.participant_id else None,
        "channel": submission.channel, "verdict": submission.verdict or "",
        "received_at": utc_text(submission.received_at),
        "body": json.dumps(submission_view(submission), separators=(",", ":")),
    }]}


def utc_text(moment: Any) -> str:
    from datetime import UTC
    return str(moment.astimezone(UTC).isoformat())


PROJECTION = Projection("submissions", 1, METADATA, (Submission,), rows)
