"""Enrollment's facts → milestone progress. The enrollment stream is consumed in order (one durable consumer),
so a staff rejection is seen after the signature it rejects; every fact re-runs the Milestone 1 decision."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from uuid import UUID

from dsi_shared.consumer import Subscription
from dsi_shared.events import IncomingEvent
from dsi_shared.rulebook import RulesReader
from dsi_shared.store import ServiceApplication
from dsi_shared.telemetry import inject
from eventsourcing.domain import Aggregate

from milestones.application import Milestones
from milestones.domain import MILESTONE_1, ParticipantProgress
from milestones.ledger import AttributionRoster


def _progress(app: ServiceApplication, event: IncomingEvent) -> ParticipantProgress:
    assert isinstance(app, Milestones)
    return app.progress_or_new(UUID(event.data["aggregate_id"]))


def _decided(app: ServiceApplication, progress: ParticipantProgress) -> list[Aggregate]:
    """Every fact re-runs the Milestone 1 decision under the rules book as it is now."""
    assert isinstance(app, Milestones)
    progress.decide_milestone_1(app.rulebook())
    return [progress]


def on_eligibility_determined(app: ServiceApplication, event: IncomingEvent) -> list[Aggregate]:
    progress, data = _progress(app, event), event.data
    progress.note_eligibility(bool(data["eligible"]), data["rule_version"])
    return _decided(app, progress)


def on_participant_registered(app: ServiceApplication, event: IncomingEvent) -> list[Aggregate]:
    progress, data = _progress(app, event), event.data
    progress.note_registration(data["provider_type"], data.get("npi"), data["legal_name"],
                               list(data.get("individual_npis") or []))
    return _decided(app, progress)


def on_agreement_signed(app: ServiceApplication, event: IncomingEvent) -> list[Aggregate]:
    progress, data = _progress(app, event), event.data
    progress.note_agreement(data["agreement"], datetime.fromisoformat(data["signed_at"]), data["document_id"])
    return _decided(app, progress)


def on_agreement_reviewed(app: ServiceApplication, event: IncomingEvent) -> list[Aggregate]:
    progress, data = _progress(app, event), event.data
    progress.note_review(data["agreement"], data["document_id"], data["decision"])
    return _decided(app, progress)


def on_due_date_set(app: ServiceApplication, event: IncomingEvent) -> list[Aggregate]:
    progress, data = _progress(app, event), event.data
    progress.note_due_date(date.fromisoformat(data["due_on"]))
    return _decided(app, progress)


def on_participant_departed(app: ServiceApplication, event: IncomingEvent) -> list[Aggregate]:
    progress, data = _progress(app, event), event.data
    progress.note_departure(data["kind"], date.fromisoformat(data["effective_on"]))
    return _decided(app, progress)


def on_rules_published(app: ServiceApplication, event: IncomingEvent) -> list[Aggregate]:
    """A rules version (a correction too) reaches every participant already enrolled: Milestone 1 not yet achieved
    is decided again under the book with it. Quarters use it at their next close."""
    assert isinstance(app, Milestones)
    copy = RulesReader.copy_in(app)
    if not copy.note(event.data["document"]):
        return [copy] if copy.pending_events else []
    changed: list[Aggregate] = [copy]
    for progress in app.all_progress():
        if MILESTONE_1 not in progress.achieved:
            progress.decide_milestone_1(copy.book)
            if progress.pending_events:
                changed.append(progress)
    return changed


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
    for span in member.eligibility.values():  # the roster counts the member only while a plan member
        if roster.membership.get(data["cin"], {}).get(span["start"].isoformat()) != {"start": span["start"], "end": span["end"]}:
            roster.note_membership(cin=data["cin"], start=span["start"], end=span["end"])
    return [*changed, roster]


def on_eligibility(app: ServiceApplication, event: IncomingEvent) -> list[Aggregate]:
    """A member's plan eligibility span ("the plan members attributed ... in that quarter"): kept with the member
    and copied into every roster that holds the member."""
    assert isinstance(app, Milestones)
    data = event.data
    start = date.fromisoformat(data["start"])
    end = date.fromisoformat(data["end"]) if data.get("end") else None
    member = app.member_attribution_or_new(data["cin"])
    if not member.note_eligibility(start, end, int(data["aggregate_version"])):
        return []
    changed: list[Aggregate] = [member]
    for assignee in member.assignees:
        roster = app.roster(assignee)
        if roster is not None:
            roster.note_membership(cin=data["cin"], start=start, end=end)
            changed.append(roster)
    return changed


SUBSCRIPTIONS = (
    Subscription("DSI_ENROLLMENT", "dsi.enrollment.rules-published", on_rules_published),
    Subscription("DSI_ENROLLMENT", "dsi.enrollment.participant-registered", on_participant_registered),
    Subscription("DSI_ENROLLMENT", "dsi.enrollment.agreement-due-date-set", on_due_date_set),
    Subscription("DSI_ENROLLMENT", "dsi.enrollment.attribution-recorded", on_attribution_recorded),
    Subscription("DSI_ENROLLMENT", "dsi.enrollment.eligibility-opened", on_eligibility),
    Subscription("DSI_ENROLLMENT", "dsi.enrollment.eligibility-changed", on_eligibility),
    Subscription("DSI_ENROLLMENT", "dsi.enrollment.eligibility-closed", on_eligibility),
    Subscription("DSI_SUBMISSIONS", "dsi.submissions.submission-credited", on_submission_credited),
    Subscription("DSI_SUBMISSIONS", "dsi.submissions.submission-credit-reversed", on_submission_credit_reversed),
    Subscription("DSI_ENROLLMENT", "dsi.enrollment.eligibility-determined", on_eligibility_determined),
    Subscription("DSI_ENROLLMENT", "dsi.enrollment.agreement-signed", on_agreement_signed),
    Subscription("DSI_ENROLLMENT", "dsi.enrollment.agreement-reviewed", on_agreement_reviewed),
    Subscription("DSI_ENROLLMENT", "dsi.enrollment.participant-departed", on_participant_departed),
)
