"""The participants read model (issue 15 §1): the columns `GET /participants` filters and sorts on, one row per
participant and one per county it serves. The list renders each row of a page from its aggregate: its view
depends on today (the schedule in force, lateness), so it is not stored."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from dsi_shared.projections import Projection, Rows
from dsi_shared.store import ServiceApplication

from enrollment.domain import Participant

METADATA = sa.MetaData()
PARTICIPANTS = sa.Table(
    "rm_participants", METADATA,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("seq", sa.BigInteger, nullable=False),  # the order they registered in
    sa.Column("legal_name", sa.String(300), nullable=False),
    sa.Column("provider_type", sa.String(60), nullable=False),
    sa.Column("status", sa.String(40), nullable=False),
    sa.Column("submitted_on", sa.String(10), nullable=False),
    sa.Column("milestone1", sa.String(10), nullable=False),  # achieved, missed, pending
    sa.Column("earned_cents", sa.BigInteger, nullable=False),  # milestones achieved, as milestones reported them
    sa.Index("rm_participants_name", "legal_name", "id"),
    sa.Index("rm_participants_type_status", "provider_type", "status", "legal_name", "id"),
    sa.Index("rm_participants_status", "status", "legal_name", "id"),
)
COUNTIES = sa.Table(
    "rm_participant_counties", METADATA,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("county", sa.String(100), primary_key=True),  # casefolded: the filter ignores case
    sa.Index("rm_participant_counties_county", "county", "id"),
)


def rows(_: ServiceApplication, participant: Any) -> Rows:
    if not isinstance(participant, Participant):
        return {}
    m1 = participant.milestones.get("M1")
    earned = sum((Decimal(str(m.get("amount", "0"))) for m in participant.milestones.values()
                  if m.get("outcome") == "achieved"), Decimal(0))
    return {
        PARTICIPANTS.name: [{
            "legal_name": participant.legal_name, "provider_type": participant.provider_type,
            "status": participant.status, "submitted_on": participant.submitted_on.isoformat(),
            "milestone1": m1["outcome"] if m1 else "pending", "earned_cents": int(earned * 100),
        }],
        COUNTIES.name: [{"county": county} for county in sorted({c.casefold() for c in participant.counties})],
    }


PROJECTION = Projection("participants", 1, METADATA, (Participant,), rows)
