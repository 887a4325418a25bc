"""The evaluations read model (issue 15 §1): one row per quarter evaluation, its view stored as JSON beside the
columns `GET /evaluations` filters and sorts on."""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from dsi_shared.projections import Projection, Rows
from dsi_shared.store import ServiceApplication

from milestones.ledger import Evaluation

METADATA = sa.MetaData()
EVALUATIONS = sa.Table(
    "rm_evaluations", METADATA,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("seq", sa.BigInteger, nullable=False),  # the order they were recorded in
    sa.Column("participant_id", sa.String(36), nullable=False),
    sa.Column("quarter", sa.String(6), nullable=False),
    sa.Column("state", sa.String(40), nullable=False),
    sa.Column("earned_cents", sa.BigInteger, nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Index("rm_evaluations_quarter_state", "quarter", "state", "seq", "id"),
    sa.Index("rm_evaluations_participant", "participant_id", "seq", "id"),
    sa.Index("rm_evaluations_state", "state", "seq", "id"),
)


def rows(_: ServiceApplication, evaluation: Any) -> Rows:
    from milestones.api import evaluation_view

    if not isinstance(evaluation, Evaluation):
        return {}
    return {EVALUATIONS.name: [{
        "participant_id": str(evaluation.participant_id), "quarter": evaluation.quarter, "state": evaluation.state,
        "earned_cents": int(evaluation.earned * 100),
        "body": json.dumps(evaluation_view(evaluation), separators=(",", ":")),
    }]}


PROJECTION = Projection("evaluations", 1, METADATA, (Evaluation,), rows)
