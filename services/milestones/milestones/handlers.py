"""Enrollment's facts → milestone progress. The enrollment stream is consumed in order (one durable consumer),
so a staff rejection is seen after the signature it rejects; every fact re-runs the Milestone 1 decision."""

from __future__ import annotations

from datetime import date, datetime
from uuid import UUID

from dsi_shared.consumer import Subscription
from dsi_shared.events import IncomingEvent
from dsi_shared.store import ServiceApplication
from eventsourcing.domain import Aggregate

from milestones.application import Milestones
from milestones.domain import ParticipantProgress


def _progress(app: ServiceApplication, event: IncomingEvent) -> ParticipantProgress:
    assert isinstance(app, Milestones)
    return app.progress_or_new(UUID(event.data["aggregate_id"]))


def on_eligibility_determined(app: ServiceApplication, event: IncomingEvent) -> list[Aggregate]:
    progress, data = _progress(app, event), event.data
    deadline = (data.get("schedule") or {}).get("milestone1_by")
    progress.note_eligibility(bool(data["eligible"]), data["rule_version"],
                              date.fromisoformat(deadline) if deadline else None)
    return [progress]


def on_agreement_signed(app: ServiceApplication, event: IncomingEvent) -> list[Aggregate]:
    progress, data = _progress(app, event), event.data
    progress.note_agreement(data["agreement"], datetime.fromisoformat(data["signed_at"]), data["document_id"])
    return [progress]


def on_agreement_reviewed(app: ServiceApplication, event: IncomingEvent) -> list[Aggregate]:
    progress, data = _progress(app, event), event.data
    progress.note_review(data["agreement"], data["document_id"], rejected=data["decision"] == "rejected")
    return [progress]


def on_participant_departed(app: ServiceApplication, event: IncomingEvent) -> list[Aggregate]:
    progress, data = _progress(app, event), event.data
    progress.note_departure(data["kind"], date.fromisoformat(data["effective_on"]))
    return [progress]


SUBSCRIPTIONS = (
    Subscription("DSI_ENROLLMENT", "dsi.enrollment.eligibility-determined", on_eligibility_determined),
    Subscription("DSI_ENROLLMENT", "dsi.enrollment.agreement-signed", on_agreement_signed),
    Subscription("DSI_ENROLLMENT", "dsi.enrollment.agreement-reviewed", on_agreement_reviewed),
    Subscription("DSI_ENROLLMENT", "dsi.enrollment.participant-departed", on_participant_departed),
)
