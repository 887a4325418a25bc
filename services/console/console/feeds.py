"""The public events the console reads (its tracking consumers, one per stream: `dsi_shared.consumer`), each turned
into its participant's overview. Exactly once as everywhere: the overview's new events and the message's tracking
record are saved in one transaction, acked after; a redelivery finds its tracking record and changes nothing."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from dsi_shared.consumer import Subscription
from dsi_shared.contracts import Delivered
from dsi_shared.store import ServiceApplication
from enrollment.contract import EligibilityDetermined, ParticipantDeparted, ParticipantRegistered
from eventsourcing.domain import Aggregate
from milestones.contract import MilestoneAchieved
from payments.contract import PaymentIssued

from console.overview import MILESTONE_1, ParticipantOverview, paid


def overview_of(app: ServiceApplication, participant_id: UUID) -> ParticipantOverview:
    """The participant's overview (in this batch, stored, or opened now)."""
    return app.find(participant_id, ParticipantOverview) or ParticipantOverview(participant_id=participant_id)


def on_registered(app: ServiceApplication, delivered: Delivered[ParticipantRegistered]) -> list[Aggregate]:
    data = delivered.data
    overview = overview_of(app, data.aggregate_id)
    overview.note_registration(legal_name=data.legal_name, npi=data.npi, provider_type=data.provider_type,
                               counties=list(data.counties))
    return [overview]


def on_eligibility(app: ServiceApplication, delivered: Delivered[EligibilityDetermined]) -> list[Aggregate]:
    overview = overview_of(app, delivered.data.aggregate_id)
    overview.note_eligibility(eligible=delivered.data.eligible)
    return [overview]


def on_departed(app: ServiceApplication, delivered: Delivered[ParticipantDeparted]) -> list[Aggregate]:
    overview = overview_of(app, delivered.data.aggregate_id)
    overview.note_departure(kind=delivered.data.kind)
    return [overview]


def on_milestone(app: ServiceApplication, delivered: Delivered[MilestoneAchieved]) -> list[Aggregate]:
    if delivered.data.milestone != MILESTONE_1:
        return []
    overview = overview_of(app, delivered.data.participant_id)
    if overview.milestone1:
        return []
    overview.note_milestone1()
    return [overview]


def on_payment(app: ServiceApplication, delivered: Delivered[PaymentIssued]) -> list[Aggregate]:
    data = delivered.data
    return [paid(overview_of(app, data.participant_id), str(data.payment_id), data.quarter, data.amount)]


SUBSCRIPTIONS: tuple[Subscription[Any], ...] = (
    Subscription("DSI_ENROLLMENT", ParticipantRegistered.subject, ParticipantRegistered, on_registered),
    Subscription("DSI_ENROLLMENT", EligibilityDetermined.subject, EligibilityDetermined, on_eligibility),
    Subscription("DSI_ENROLLMENT", ParticipantDeparted.subject, ParticipantDeparted, on_departed),
    Subscription("DSI_MILESTONES", MilestoneAchieved.subject, MilestoneAchieved, on_milestone),
    Subscription("DSI_PAYMENTS", PaymentIssued.subject, PaymentIssued, on_payment),
)
