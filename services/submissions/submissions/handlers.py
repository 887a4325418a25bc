"""NATS → submissions: the HIE's notifications of received files, and the facts this service keeps from
enrollment and milestones (projected into its own store, keyed the way submissions look them up)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from dsi_shared.consumer import Subscription
from dsi_shared.contracts import Delivered, Message
from dsi_shared.errors import Unprocessable
from dsi_shared.plantime import EARLIEST_YEAR, LATEST_YEAR, in_plan_years
from dsi_shared.rulebook import RulesReader
from dsi_shared.store import ServiceApplication
from enrollment.contract import (
    AliasAdded,
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
from milestones.contract import MilestoneAchieved
from pydantic import AwareDatetime, Field, field_validator

from submissions.application import CDA_TYPE, FHIR_TYPE, HL7_TYPE, Submissions, stated_receipt_problem
from submissions.domain import CinAliasFacts, FacilityIndex, MemberFacts, ParticipantFacts


def _app(app: ServiceApplication) -> Submissions:
    assert isinstance(app, Submissions)
    return app


def _participant(app: Submissions, participant_id: UUID) -> ParticipantFacts:
    return app.participant_facts(participant_id) or ParticipantFacts(participant_id)


def on_participant_registered(app: ServiceApplication, delivered: Delivered[ParticipantRegistered]) -> list[Aggregate]:
    submissions, data = _app(app), delivered.data
    facts = _participant(submissions, data.aggregate_id)
    facts.note_registration(provider_type=data.provider_type, npi=data.npi, sending_facilities=data.sending_facilities)
    changed: list[Aggregate] = [facts]
    for facility in {*facts.sending_facilities, *filter(None, [facts.npi])}:
        if submissions.participant_for_facility((facility,)) is None:
            changed.append(FacilityIndex(facility, facts.participant_id))
    return changed


def on_eligibility_determined(app: ServiceApplication, delivered: Delivered[EligibilityDetermined]) -> list[Aggregate]:
    data = delivered.data
    facts = _participant(_app(app), data.aggregate_id)
    facts.note_eligibility(eligible=data.eligible, rule_version=data.rule_version)
    return [facts]


def on_rules_published(app: ServiceApplication, delivered: Delivered[RulesPublished]) -> list[Aggregate]:
    """A rules version (a correction too): noted, then every held file judged again under the book as it is now
    ("files and quarters not yet paid are judged under it"). Files already credited are not rewritten."""
    submissions = _app(app)
    copy = RulesReader.copy_in(submissions)
    document = delivered.data.document
    if not copy.note(document):
        return [copy] if copy.pending_events else []
    return [copy, *submissions.rejudge(cause=f"rules {document['version']} published", book=copy.book)]


def on_participant_departed(app: ServiceApplication, delivered: Delivered[ParticipantDeparted]) -> list[Aggregate]:
    facts = _participant(_app(app), delivered.data.aggregate_id)
    facts.note_departure(effective_on=delivered.data.effective_on)
    return [facts]


def on_milestone_achieved(app: ServiceApplication, delivered: Delivered[MilestoneAchieved]) -> list[Aggregate]:
    if delivered.data.milestone != "M1":
        return []
    submissions = _app(app)
    facts = _participant(submissions, delivered.data.participant_id)
    facts.note_milestone1(achieved_at=delivered.data.achieved_at)
    return [facts, *submissions.rejudge(cause="milestone 1 noted", participant=facts)]


def _member(app: Submissions, cin: str) -> MemberFacts:
    return app.member_facts(cin) or app.member_record(cin)


def on_span(app: ServiceApplication,
            delivered: Delivered[EligibilityOpened | EligibilityChanged | EligibilityClosed]) -> list[Aggregate]:
    """A member's eligibility span: noted, then the files and records judged `not_a_member` under this CIN are
    judged again ("Money never depends on the order in which two streams' messages arrive", DOMAIN.md A4)."""
    submissions, data = _app(app), delivered.data
    member = _member(submissions, data.cin)
    member.note_span(start=data.start, end=data.end, version=data.aggregate_version)
    if not member.pending_events:
        return []
    waiting = submissions.member_record(data.cin) if member.cin != data.cin else member  # under a frozen CIN
    return [member, *([waiting] if waiting is not member else []),
            *submissions.rejudge_waiting(waiting, member, cause="member eligibility noted")]


def on_attribution(app: ServiceApplication, delivered: Delivered[AttributionRecorded]) -> list[Aggregate]:
    data = delivered.data
    if data.kind != "pcp":
        return []
    member = _member(_app(app), data.cin)
    member.note_attribution(kind="pcp", assignee=data.assignee, start=data.start, end=data.end,
                            version=data.aggregate_version)
    return [member]


def on_alias(app: ServiceApplication, delivered: Delivered[AliasAdded]) -> list[Aggregate]:
    """A frozen CIN now points to a current one: files judged `not_a_member` under the frozen CIN are judged again
    as the current member's."""
    submissions, data = _app(app), delivered.data
    if submissions.member_facts(data.frozen_cin) is not None:
        return []
    alias = CinAliasFacts(data.frozen_cin, data.cin)
    waiting = submissions.member_record(data.frozen_cin)  # new when nothing waits: a file racing this one meets it
    current = submissions.member_facts(data.cin)
    if current is None:  # the current CIN's eligibility is not here yet: its files wait for it there from now on
        target = submissions.member_record(data.cin)
        for submission_id in list(waiting.waiting):
            waiting.stop_waiting(submission_id=submission_id)
            target.wait(submission_id=submission_id)
        return [alias, waiting, *([target] if target.pending_events else [])]
    changed = submissions.rejudge_waiting(waiting, current, cause="frozen CIN linked")
    return [alias, waiting, *changed]


class SubmissionReceived(Message):
    """`dsi.in.submission-received`: the HIE's record of a received file (DESIGN.md §4)."""

    hie_submission_id: str = Field(min_length=1, max_length=200)
    sending_facility: str | None = None
    participant_id: UUID | None = None
    received_at: AwareDatetime
    content_type: str
    payload: str

    @field_validator("received_at")
    @classmethod
    def plan_years(cls, value: datetime) -> datetime:
        if not in_plan_years(value):
            raise ValueError(f"outside the years {EARLIEST_YEAR}-{LATEST_YEAR}")
        return value


def on_submission_received(app: ServiceApplication, delivered: Delivered[SubmissionReceived]) -> list[Aggregate]:
    """The HIE's notification: only the NATS user `hie` may publish this subject (infra/nats/nats.conf), so the bus
    authenticates it and its `received_at` stands — within `DSI_HIE_MAX_DELAY_HOURS` before our clock (the time
    JetStream stored the message, so a consumer that was down does not refuse what arrived in time), never after
    it; otherwise it is dead-lettered at once with the reason."""
    submissions, message = _app(app), delivered.data
    if problem := stated_receipt_problem(message.received_at, delivered.event.stored_at or datetime.now(UTC)):
        raise Unprocessable(problem)
    data = message.payload.encode("utf-8")
    participant = message.participant_id or (
        submissions.participant_for_facility((message.sending_facility,)) if message.sending_facility else None)
    if message.content_type == HL7_TYPE:
        evaluation: Any = submissions.evaluate_hl7(data, message.received_at, "nats", message.hie_submission_id,
                                                   participant)
    elif message.content_type in {FHIR_TYPE, CDA_TYPE}:
        evaluation = submissions.evaluate_record(data, message.content_type, message.received_at, "nats", participant,
                                                 hie_submission_id=message.hie_submission_id)
    else:
        raise Unprocessable(f"content_type must be one of {HL7_TYPE}, {FHIR_TYPE}, {CDA_TYPE}")
    return list(evaluation.aggregates)


SUBSCRIPTIONS: tuple[Subscription[Any], ...] = (
    Subscription("DSI_IN", "dsi.in.submission-received", SubmissionReceived, on_submission_received),
    Subscription("DSI_ENROLLMENT", RulesPublished.subject, RulesPublished, on_rules_published),
    Subscription("DSI_ENROLLMENT", ParticipantRegistered.subject, ParticipantRegistered, on_participant_registered),
    Subscription("DSI_ENROLLMENT", EligibilityDetermined.subject, EligibilityDetermined, on_eligibility_determined),
    Subscription("DSI_ENROLLMENT", ParticipantDeparted.subject, ParticipantDeparted, on_participant_departed),
    Subscription("DSI_ENROLLMENT", EligibilityOpened.subject, EligibilityOpened, on_span),
    Subscription("DSI_ENROLLMENT", EligibilityChanged.subject, EligibilityChanged, on_span),
    Subscription("DSI_ENROLLMENT", EligibilityClosed.subject, EligibilityClosed, on_span),
    Subscription("DSI_ENROLLMENT", AttributionRecorded.subject, AttributionRecorded, on_attribution),
    Subscription("DSI_ENROLLMENT", AliasAdded.subject, AliasAdded, on_alias),
    Subscription("DSI_MILESTONES", MilestoneAchieved.subject, MilestoneAchieved, on_milestone_achieved),
)
