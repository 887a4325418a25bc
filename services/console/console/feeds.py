"""The public events the console reads (its tracking consumers, one per stream: `dsi_shared.consumer`), each turned
into its participant's overview, or its file's verdict, coverage evaluation or closed quarter (`activity`). Exactly
once as everywhere: the aggregates' new events and the message's tracking record are saved in one transaction, acked
after; a redelivery finds its tracking record and changes nothing."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from dsi_shared.consumer import Subscription
from dsi_shared.contracts import Delivered
from dsi_shared.store import ServiceApplication
from enrollment.contract import EligibilityDetermined, ParticipantDeparted, ParticipantRegistered
from eventsourcing.domain import Aggregate
from milestones.contract import CoverageEvaluated, MilestoneAchieved, QuarterClosed
from payments.contract import PaymentIssued
from submissions.contract import FileJudged

from console.activity import ClosedQuarter, CoverageFigures, FileVerdict, judged
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


def on_file_judged(app: ServiceApplication, delivered: Delivered[FileJudged]) -> list[Aggregate]:
    data = delivered.data
    verdict = app.find(data.aggregate_id, FileVerdict) or FileVerdict(submission_id=data.aggregate_id)
    judged(verdict, data.aggregate_version, str(data.participant_id) if data.participant_id else None,
           data.received_at.isoformat(), data.verdict, list(data.reasons))
    return [verdict]


def on_coverage(app: ServiceApplication, delivered: Delivered[CoverageEvaluated]) -> list[Aggregate]:
    data = delivered.data
    if app.find(data.aggregate_id, CoverageFigures) is not None:
        return []  # an evaluation is recorded once: this is a re-publish
    return [CoverageFigures(evaluation_id=data.aggregate_id, participant_id=str(data.participant_id),
                            quarter=data.quarter, threshold_percent=data.threshold_percent,
                            attributed_members=data.attributed_members, members_with_record=data.members_with_record,
                            coverage_percent=str(data.coverage_percent))]


def on_quarter_closed(app: ServiceApplication, delivered: Delivered[QuarterClosed]) -> list[Aggregate]:
    data = delivered.data
    if app.find(ClosedQuarter.create_id(data.quarter), ClosedQuarter) is not None:
        return []  # a quarter closes once
    return [ClosedQuarter(quarter=data.quarter, evaluations=data.evaluations)]


SUBSCRIPTIONS: tuple[Subscription[Any], ...] = (
    Subscription("DSI_ENROLLMENT", ParticipantRegistered.subject, ParticipantRegistered, on_registered),
    Subscription("DSI_ENROLLMENT", EligibilityDetermined.subject, EligibilityDetermined, on_eligibility),
    Subscription("DSI_ENROLLMENT", ParticipantDeparted.subject, ParticipantDeparted, on_departed),
    Subscription("DSI_MILESTONES", MilestoneAchieved.subject, MilestoneAchieved, on_milestone),
    Subscription("DSI_MILESTONES", CoverageEvaluated.subject, CoverageEvaluated, on_coverage),
    Subscription("DSI_MILESTONES", QuarterClosed.subject, QuarterClosed, on_quarter_closed),
    Subscription("DSI_PAYMENTS", PaymentIssued.subject, PaymentIssued, on_payment),
    Subscription("DSI_SUBMISSIONS", FileJudged.subject, FileJudged, on_file_judged),
)
