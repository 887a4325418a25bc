"""Enrollment's facts → milestone progress. The enrollment stream is consumed in order (one durable consumer),
so a staff rejection is seen after the signature it rejects; every fact re-runs the Milestone 1 decision."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from uuid import UUID

from dsi_shared.consumer import Subscription
from dsi_shared.events import IncomingEvent
from dsi_shared.store import ServiceApplication
from dsi_shared.telemetry import inject
from eventsourcing.domain import Aggregate

from milestones.application import Milestones
from milestones.domain import ParticipantProgress
from milestones.ledger import AttributionRoster


def _progress(app: ServiceApplication, event: IncomingEvent) -> ParticipantProgress:
    assert isinstance(app, Milestones)
    return app.progress_or_new(UUID(event.data["aggregate_id"]))


def on_eligibility_determined(app: ServiceApplication, event: IncomingEvent) -> list[Aggregate]:
    progress, data = _progress(app, event), event.data
    schedule = dict(data.get("schedule") or {})
    deadline = schedule.get("milestone1_by")
    progress.note_schedule(schedule)
    progress.note_eligibility(bool(data["eligible"]), data["rule_version"],
                              date.fromisoformat(deadline) if deadline else None)
    return [progress]


def on_participant_registered(app: ServiceApplication, event: IncomingEvent) -> list[Aggregate]:
    progress, data = _progress(app, event), event.data
    progress.note_registration(data["provider_type"], data.get("npi"), data["legal_name"])
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


def on_submission_credited(app: ServiceApplication, event: IncomingEvent) -> list[Aggregate]:
    assert isinstance(app, Milestones)
    data = event.data
    ledger = app.ledger_or_new(UUID(data["participant_id"]))
    ledger.note_credit(data["aggregate_id"], data["earning_rule"], data["member_id"], data["quarter"],
                       Decimal(data["amount"]), data["rule_version"], trace=inject())
    return [ledger]


def on_submission_credit_reversed(app: ServiceApplication, event: IncomingEvent) -> list[Aggregate]:
    assert isinstance(app, Milestones)
    ledger = app.ledger_or_new(UUID(event.data["participant_id"]))
    ledger.note_reversal(event.data["aggregate_id"])
    return [ledger]


def on_attribution_recorded(app: ServiceApplication, event: IncomingEvent) -> list[Aggregate]:
    """A member's PCP attribution span (newest version per start wins) moves it between assignees' rosters."""
    assert isinstance(app, Milestones)
    data = event.data
    if data["kind"] != "pcp":
        return []
    start, version, assignee = date.fromisoformat(data["start"]), int(data["aggregate_version"]), data["assignee"]
    end = date.fromisoformat(data["end"]) if data.get("end") else None
    member = app.member_attribution_or_new(data["cin"])
    known = member.spans.get(start.isoformat())
    if known is not None and known["version"] >= version:
        return []
    member.note_span(start=start, assignee=assignee, end=end, version=version)
    changed: list[Aggregate] = [member]
    if known is not None and known["assignee"].strip().upper() != assignee.strip().upper():
        previous = app.roster(known["assignee"])
        if previous is not None:
            previous.unattribute(cin=data["cin"], start=start)
            changed.append(previous)
    roster = app.roster(assignee) or AttributionRoster(assignee)
    roster.attribute(cin=data["cin"], start=start, end=end)
    return [*changed, roster]


SUBSCRIPTIONS = (
    Subscription("DSI_ENROLLMENT", "dsi.enrollment.participant-registered", on_participant_registered),
    Subscription("DSI_ENROLLMENT", "dsi.enrollment.attribution-recorded", on_attribution_recorded),
    Subscription("DSI_SUBMISSIONS", "dsi.submissions.submission-credited", on_submission_credited),
    Subscription("DSI_SUBMISSIONS", "dsi.submissions.submission-credit-reversed", on_submission_credit_reversed),
    Subscription("DSI_ENROLLMENT", "dsi.enrollment.eligibility-determined", on_eligibility_determined),
    Subscription("DSI_ENROLLMENT", "dsi.enrollment.agreement-signed", on_agreement_signed),
    Subscription("DSI_ENROLLMENT", "dsi.enrollment.agreement-reviewed", on_agreement_reviewed),
    Subscription("DSI_ENROLLMENT", "dsi.enrollment.participant-departed", on_participant_departed),
)
