"""Enrollment's facts → milestone progress. The enrollment stream is consumed in order (one durable consumer),
so a staff rejection is seen after the signature it rejects; every fact re-runs the Milestone 1 decision."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from dsi_shared.consumer import Subscription
from dsi_shared.contracts import Delivered
from dsi_shared.rulebook import RulesReader
from dsi_shared.store import ServiceApplication
from dsi_shared.telemetry import inject
from enrollment.contract import (
    AgreementDueDateSet,
    AgreementReviewed,
    AgreementSigned,
    AttributionRecorded,
    EligibilityChanged,
    EligibilityClosed,
    EligibilityDetermined,
    EligibilityOpened,
    ParticipantDeparted,
    ParticipantRegistered,
    RulesPublished,
)
from eventsourcing.domain import Aggregate
from submissions.contract import SubmissionCredited, SubmissionCreditReversed

from milestones.application import Milestones
from milestones.domain import MILESTONE_1, ParticipantProgress
from milestones.ledger import AttributionRoster


def _progress(app: ServiceApplication, participant: UUID) -> ParticipantProgress:
    assert isinstance(app, Milestones)
    return app.progress_or_new(participant)


def _decided(app: ServiceApplication, progress: ParticipantProgress) -> list[Aggregate]:
    """Every fact re-runs the Milestone 1 decision under the rules book as it is now."""
    assert isinstance(app, Milestones)
    progress.decide_milestone_1(app.rulebook())
    return [progress]


def on_eligibility_determined(app: ServiceApplication, delivered: Delivered[EligibilityDetermined]) -> list[Aggregate]:
    data = delivered.data
    progress = _progress(app, data.aggregate_id)
    progress.note_eligibility(data.eligible, data.rule_version)
    return _decided(app, progress)


def on_participant_registered(app: ServiceApplication, delivered: Delivered[ParticipantRegistered]) -> list[Aggregate]:
    data = delivered.data
    progress = _progress(app, data.aggregate_id)
    progress.note_registration(data.provider_type, data.npi, data.legal_name, list(data.individual_npis or []))
    return _decided(app, progress)


def on_agreement_signed(app: ServiceApplication, delivered: Delivered[AgreementSigned]) -> list[Aggregate]:
    data = delivered.data
    progress = _progress(app, data.aggregate_id)
    progress.note_agreement(data.agreement, data.signed_at, data.document_id)
    return _decided(app, progress)


def on_agreement_reviewed(app: ServiceApplication, delivered: Delivered[AgreementReviewed]) -> list[Aggregate]:
    data = delivered.data
    progress = _progress(app, data.aggregate_id)
    progress.note_review(data.agreement, data.document_id, data.decision)
    return _decided(app, progress)


def on_due_date_set(app: ServiceApplication, delivered: Delivered[AgreementDueDateSet]) -> list[Aggregate]:
    progress = _progress(app, delivered.data.aggregate_id)
    progress.note_due_date(delivered.data.due_on)
    return _decided(app, progress)


def on_participant_departed(app: ServiceApplication, delivered: Delivered[ParticipantDeparted]) -> list[Aggregate]:
    progress = _progress(app, delivered.data.aggregate_id)
    progress.note_departure(delivered.data.kind, delivered.data.effective_on)
    return _decided(app, progress)


def on_rules_published(app: ServiceApplication, delivered: Delivered[RulesPublished]) -> list[Aggregate]:
    """A rules version (a correction too) reaches every participant already enrolled: Milestone 1 not yet achieved
    is decided again under the book with it. Quarters use it at their next close."""
    assert isinstance(app, Milestones)
    copy = RulesReader.copy_in(app)
    if not copy.note(delivered.data.document):
        return [copy] if copy.pending_events else []
    changed: list[Aggregate] = [copy]
    for progress in app.all_progress():
        if MILESTONE_1 not in progress.achieved:
            progress.decide_milestone_1(copy.book)
            if progress.pending_events:
                changed.append(progress)
    return changed


def on_submission_credited(app: ServiceApplication, delivered: Delivered[SubmissionCredited]) -> list[Aggregate]:
    assert isinstance(app, Milestones)
    data = delivered.data
    ledger = app.ledger_or_new(data.participant_id)
    ledger.note_credit(str(data.aggregate_id), data.earning_rule, data.member_id, data.quarter, data.amount,
                       data.rule_version, trace=inject())
    return [ledger]


def on_submission_credit_reversed(app: ServiceApplication,
                                  delivered: Delivered[SubmissionCreditReversed]) -> list[Aggregate]:
    assert isinstance(app, Milestones)
    ledger = app.ledger_or_new(delivered.data.participant_id)
    ledger.note_reversal(str(delivered.data.aggregate_id))
    return [ledger]


def on_attribution_recorded(app: ServiceApplication, delivered: Delivered[AttributionRecorded]) -> list[Aggregate]:
    """A member's PCP attribution span (newest version per start wins) moves it between assignees' rosters."""
    assert isinstance(app, Milestones)
    data = delivered.data
    if data.kind != "pcp":
        return []
    start, end, version, assignee, cin = data.start, data.end, data.aggregate_version, data.assignee, data.cin
    member = app.member_attribution_or_new(cin)
    known = member.spans.get(start.isoformat())
    if known is not None and known["version"] >= version:
        return []
    member.note_span(start=start, assignee=assignee, end=end, version=version)
    changed: list[Aggregate] = [member]
    if known is not None and known["assignee"].strip().upper() != assignee.strip().upper():
        previous = app.roster(known["assignee"])
        if previous is not None:
            previous.unattribute(cin=cin, start=start)
            changed.append(previous)
    roster = app.roster(assignee) or AttributionRoster(assignee)
    roster.attribute(cin=cin, start=start, end=end)
    for span in member.eligibility.values():  # the roster counts the member only while a plan member
        if roster.membership.get(cin, {}).get(span["start"].isoformat()) != {"start": span["start"], "end": span["end"]}:
            roster.note_membership(cin=cin, start=span["start"], end=span["end"])
    return [*changed, roster]


def on_eligibility(app: ServiceApplication, delivered: Delivered[EligibilityOpened | EligibilityChanged | EligibilityClosed],
                   ) -> list[Aggregate]:
    """A member's plan eligibility span ("the plan members attributed ... in that quarter"): kept with the member
    and copied into every roster that holds the member."""
    assert isinstance(app, Milestones)
    data = delivered.data
    start, end = data.start, data.end
    member = app.member_attribution_or_new(data.cin)
    if not member.note_eligibility(start, end, data.aggregate_version):
        return []
    changed: list[Aggregate] = [member]
    for assignee in member.assignees:
        roster = app.roster(assignee)
        if roster is not None:
            roster.note_membership(cin=data.cin, start=start, end=end)
            changed.append(roster)
    return changed


SUBSCRIPTIONS: tuple[Subscription[Any], ...] = (
    Subscription("DSI_ENROLLMENT", RulesPublished.subject, RulesPublished, on_rules_published),
    Subscription("DSI_ENROLLMENT", ParticipantRegistered.subject, ParticipantRegistered, on_participant_registered),
    Subscription("DSI_ENROLLMENT", AgreementDueDateSet.subject, AgreementDueDateSet, on_due_date_set),
    Subscription("DSI_ENROLLMENT", AttributionRecorded.subject, AttributionRecorded, on_attribution_recorded),
    Subscription("DSI_ENROLLMENT", EligibilityOpened.subject, EligibilityOpened, on_eligibility),
    Subscription("DSI_ENROLLMENT", EligibilityChanged.subject, EligibilityChanged, on_eligibility),
    Subscription("DSI_ENROLLMENT", EligibilityClosed.subject, EligibilityClosed, on_eligibility),
    Subscription("DSI_SUBMISSIONS", SubmissionCredited.subject, SubmissionCredited, on_submission_credited),
    Subscription("DSI_SUBMISSIONS", SubmissionCreditReversed.subject, SubmissionCreditReversed,
                 on_submission_credit_reversed),
    Subscription("DSI_ENROLLMENT", EligibilityDetermined.subject, EligibilityDetermined, on_eligibility_determined),
    Subscription("DSI_ENROLLMENT", AgreementSigned.subject, AgreementSigned, on_agreement_signed),
    Subscription("DSI_ENROLLMENT", AgreementReviewed.subject, AgreementReviewed, on_agreement_reviewed),
    Subscription("DSI_ENROLLMENT", ParticipantDeparted.subject, ParticipantDeparted, on_participant_departed),
)
