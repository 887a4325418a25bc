"""NATS → submissions: the HIE's notifications of received files, and the facts this service keeps from
enrollment and milestones (projected into its own store, keyed the way submissions look them up)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any
from uuid import UUID

from dsi_shared.consumer import Subscription
from dsi_shared.errors import Unprocessable
from dsi_shared.events import IncomingEvent
from dsi_shared.plantime import EARLIEST_YEAR, LATEST_YEAR, in_plan_years
from dsi_shared.rulebook import RulesReader
from dsi_shared.store import ServiceApplication
from eventsourcing.domain import Aggregate
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from submissions.application import CDA_TYPE, FHIR_TYPE, HL7_TYPE, Submissions, stated_receipt_problem
from submissions.domain import CinAliasFacts, FacilityIndex, MemberFacts, ParticipantFacts


def _app(app: ServiceApplication) -> Submissions:
    assert isinstance(app, Submissions)
    return app


def _day(value: str | None) -> date | None:
    return date.fromisoformat(value) if value else None


def _participant(app: Submissions, participant_id: str) -> ParticipantFacts:
    pid = UUID(participant_id)
    return app.participant_facts(pid) or ParticipantFacts(pid)


def on_participant_registered(app: ServiceApplication, event: IncomingEvent) -> list[Aggregate]:
    submissions, data = _app(app), event.data
    facts = _participant(submissions, data["aggregate_id"])
    facts.note_registration(provider_type=data["provider_type"], npi=data.get("npi"),
                            sending_facilities=list(data.get("sending_facilities") or []))
    changed: list[Aggregate] = [facts]
    for facility in {*facts.sending_facilities, *filter(None, [facts.npi])}:
        if submissions.participant_for_facility((facility,)) is None:
            changed.append(FacilityIndex(facility, facts.participant_id))
    return changed


def on_eligibility_determined(app: ServiceApplication, event: IncomingEvent) -> list[Aggregate]:
    submissions, data = _app(app), event.data
    facts = _participant(submissions, data["aggregate_id"])
    facts.note_eligibility(eligible=bool(data["eligible"]), rule_version=data["rule_version"])
    return [facts]


def on_rules_published(app: ServiceApplication, event: IncomingEvent) -> list[Aggregate]:
    """A rules version (a correction too): noted, then every held file judged again under the book as it is now
    ("files and quarters not yet paid are judged under it"). Files already credited are not rewritten."""
    submissions = _app(app)
    copy = RulesReader.copy_in(submissions)
    if not copy.note(event.data["document"]):
        return [copy] if copy.pending_events else []
    return [copy, *submissions.rejudge(cause=f"rules {event.data['document']['version']} published", book=copy.book)]


def on_participant_departed(app: ServiceApplication, event: IncomingEvent) -> list[Aggregate]:
    facts = _participant(_app(app), event.data["aggregate_id"])
    facts.note_departure(effective_on=date.fromisoformat(event.data["effective_on"]))
    return [facts]


def on_milestone_achieved(app: ServiceApplication, event: IncomingEvent) -> list[Aggregate]:
    if event.data["milestone"] != "M1":
        return []
    submissions = _app(app)
    facts = _participant(submissions, event.data["participant_id"])
    facts.note_milestone1(achieved_at=datetime.fromisoformat(event.data["achieved_at"]))
    return [facts, *submissions.rejudge(cause="milestone 1 noted", participant=facts)]


def _member(app: Submissions, cin: str) -> MemberFacts:
    return app.member_facts(cin) or MemberFacts(cin)


def on_span(app: ServiceApplication, event: IncomingEvent) -> list[Aggregate]:
    data = event.data
    member = _member(_app(app), data["cin"])
    start = date.fromisoformat(data["start"])
    member.note_span(start=start, end=_day(data.get("end")), version=int(data["aggregate_version"]))
    return [member]


def on_attribution(app: ServiceApplication, event: IncomingEvent) -> list[Aggregate]:
    data = event.data
    if data["kind"] != "pcp":
        return []
    member = _member(_app(app), data["cin"])
    member.note_attribution(kind="pcp", assignee=data["assignee"], start=date.fromisoformat(data["start"]),
                            end=_day(data.get("end")), version=int(data["aggregate_version"]))
    return [member]


def on_alias(app: ServiceApplication, event: IncomingEvent) -> list[Aggregate]:
    submissions = _app(app)
    if submissions.member_facts(event.data["frozen_cin"]) is not None:
        return []
    return [CinAliasFacts(event.data["frozen_cin"], event.data["cin"])]


class SubmissionReceived(BaseModel):
    """`dsi.in.submission-received`: the HIE's record of a received file (DESIGN.md §4)."""

    model_config = ConfigDict(extra="ignore")
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


def on_submission_received(app: ServiceApplication, event: IncomingEvent) -> list[Aggregate]:
    """The HIE's notification: only the NATS user `hie` may publish this subject (infra/nats/nats.conf), so the bus
    authenticates it and its `received_at` stands — within `DSI_HIE_MAX_DELAY_HOURS` before our clock (the time
    JetStream stored the message, so a consumer that was down does not refuse what arrived in time), never after
    it; otherwise it is dead-lettered at once with the reason."""
    submissions, message = _app(app), SubmissionReceived.model_validate(event.data)
    if problem := stated_receipt_problem(message.received_at, event.stored_at or datetime.now(UTC)):
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


SUBSCRIPTIONS = (
    Subscription("DSI_IN", "dsi.in.submission-received", on_submission_received),
    Subscription("DSI_ENROLLMENT", "dsi.enrollment.rules-published", on_rules_published),
    Subscription("DSI_ENROLLMENT", "dsi.enrollment.participant-registered", on_participant_registered),
    Subscription("DSI_ENROLLMENT", "dsi.enrollment.eligibility-determined", on_eligibility_determined),
    Subscription("DSI_ENROLLMENT", "dsi.enrollment.participant-departed", on_participant_departed),
    Subscription("DSI_ENROLLMENT", "dsi.enrollment.eligibility-opened", on_span),
    Subscription("DSI_ENROLLMENT", "dsi.enrollment.eligibility-changed", on_span),
    Subscription("DSI_ENROLLMENT", "dsi.enrollment.eligibility-closed", on_span),
    Subscription("DSI_ENROLLMENT", "dsi.enrollment.attribution-recorded", on_attribution),
    Subscription("DSI_ENROLLMENT", "dsi.enrollment.alias-added", on_alias),
    Subscription("DSI_MILESTONES", "dsi.milestones.milestone-achieved", on_milestone_achieved),
)
