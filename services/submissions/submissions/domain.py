"""Submissions (DOMAIN.md A3): one Submission per received combined file or longitudinal record, with its facts,
verdict and reasons; VisitCredits makes a qualifying event earn once and lets a cancel withdraw it; and the
facts this service keeps from enrollment and milestones (participants, facilities, members), projected from
their events.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from dsi_shared.plantime import PLAN_ZONE
from eventsourcing.domain import Aggregate, event

from submissions.hl7time import is_timely

SNF_FILE_AMOUNT = Decimal("400.00")  # A3: $400 per timely, complete combined ADT/RDE/ORU file
ZERO = Decimal("0.00")
CREDITED, REJECTED, RECORDED = "credited", "rejected", "recorded"
SNF_RULE, PCP_RULE = "snf_combined_adt_file", "pcp_longitudinal_coverage"


def ns(path: str) -> UUID:
    return uuid5(NAMESPACE_URL, f"/dsi/submissions/{path}")


class Submission(Aggregate):
    @event("SubmissionReceived")
    def __init__(self, channel: str, received_at: datetime, content_type: str, payload_sha256: str,
                 hie_submission_id: str | None, participant_id: UUID | None, facts: dict[str, Any]) -> None:
        self.channel, self.received_at, self.content_type = channel, received_at, content_type
        self.payload_sha256, self.hie_submission_id = payload_sha256, hie_submission_id
        self.participant_id, self.facts = participant_id, facts
        self.verdict: str | None = None
        self.reasons: list[str] = []
        self.amount = ZERO
        self.credit: dict[str, Any] | None = None
        self.reversed_by: UUID | None = None

    @event("SubmissionCredited")
    def credit_event(self, participant_id: UUID, member_id: str, amount: Decimal, rule_version: str,
                     earning_rule: str, event_key: str, quarter: str, captured_on: date, attributed: bool | None) -> None:
        self.verdict, self.amount = CREDITED, amount
        self.credit = {"member_id": member_id, "rule_version": rule_version, "earning_rule": earning_rule,
                       "event_key": event_key, "quarter": quarter, "captured_on": captured_on, "attributed": attributed}

    @event("SubmissionRejected")
    def reject(self, reasons: list[str]) -> None:
        self.verdict, self.reasons = REJECTED, reasons

    @event("SubmissionRecorded")
    def record(self, reasons: list[str]) -> None:
        """Kept, neither credited nor rejected (not a qualifying event, or the type's rule is forthcoming)."""
        self.verdict, self.reasons = RECORDED, reasons

    @event("SubmissionCreditReversed")
    def reverse(self, participant_id: UUID, cancelled_by: UUID, amount: Decimal, quarter: str) -> None:
        self.reversed_by, self.amount = cancelled_by, ZERO
        self.reasons = [*self.reasons, f"cancelled_by:{cancelled_by}"]


class VisitCredits(Aggregate):
    """The credited qualifying events of one participant's member's visit: each earns once; a cancel finds
    the latest credit of the event type it cancels."""

    @staticmethod
    def create_id(participant_id: UUID, member_id: str, visit: str) -> UUID:
        return ns(f"visit/{participant_id}/{member_id}/{visit}")

    @event("VisitOpened")
    def __init__(self, participant_id: UUID, member_id: str, visit: str) -> None:
        self.participant_id, self.member_id, self.visit = participant_id, member_id, visit
        self.credits: list[dict[str, Any]] = []

    def credited(self, event_key: str) -> dict[str, Any] | None:
        return next((c for c in self.credits if c["event_key"] == event_key), None)

    @event("EventCredited")
    def add(self, event_key: str, event_type: str, submission_id: UUID) -> None:
        self.credits.append({"event_key": event_key, "event_type": event_type, "submission_id": submission_id,
                             "reversed": False})

    def latest_active(self, event_type: str) -> dict[str, Any] | None:
        return next((c for c in reversed(self.credits) if c["event_type"] == event_type and not c["reversed"]), None)

    @event("EventCreditReversed")
    def withdraw(self, event_key: str, cancelled_by: UUID) -> None:
        for credit in self.credits:
            if credit["event_key"] == event_key:
                credit["reversed"] = True


# -- what this service knows from enrollment and milestones (projections; A3 "only ... participants that achieved
#    Milestone 1 earn ... only data about the plan's own members") ---------------------------------------------------

class ParticipantFacts(Aggregate):
    @staticmethod
    def create_id(participant_id: UUID) -> UUID:
        return ns(f"participant/{participant_id}")

    @event("ParticipantNoted")
    def __init__(self, participant_id: UUID) -> None:
        self.participant_id = participant_id
        self.provider_type: str | None = None
        self.npi: str | None = None
        self.sending_facilities: list[str] = []
        self.eligible = False
        self.rule_version: str | None = None
        self.schedule: dict[str, Any] = {}
        self.milestone1_at: datetime | None = None
        self.departed_on: date | None = None

    @event("RegistrationNoted")
    def note_registration(self, provider_type: str, npi: str | None, sending_facilities: list[str]) -> None:
        self.provider_type, self.npi, self.sending_facilities = provider_type, npi, sending_facilities

    @event("EligibilityNoted")
    def note_eligibility(self, eligible: bool, rule_version: str, schedule: dict[str, Any]) -> None:
        self.eligible, self.rule_version, self.schedule = eligible, rule_version, schedule

    @event("Milestone1Noted")
    def note_milestone1(self, achieved_at: datetime) -> None:
        self.milestone1_at = achieved_at

    @event("DepartureNoted")
    def note_departure(self, effective_on: date) -> None:
        self.departed_on = effective_on

    @property
    def earning_rule(self) -> str | None:
        return self.schedule.get("earning_rule")

    @property
    def data_sharing_starts(self) -> date | None:
        raw = self.schedule.get("data_sharing_starts")
        return date.fromisoformat(raw) if raw else None


class FacilityIndex(Aggregate):
    """An MSH-4 sending-facility id (or NPI) → the participant that sends as it."""

    @staticmethod
    def create_id(facility: str) -> UUID:
        return ns(f"facility/{facility.strip().upper()}")

    @event("FacilityNoted")
    def __init__(self, facility: str, participant_id: UUID) -> None:
        self.participant_id = participant_id


class MemberFacts(Aggregate):
    """A member's eligibility spans, PCP attributions and frozen CINs, as enrollment published them."""

    @staticmethod
    def create_id(cin: str) -> UUID:
        return ns(f"member/{cin}")

    @event("MemberNoted")
    def __init__(self, cin: str) -> None:
        self.cin = cin
        self.spans: dict[str, dict[str, Any]] = {}
        self.attributions: list[dict[str, Any]] = []

    def note_span(self, start: date, end: date | None, version: int) -> None:
        """Enrollment's events for one member arrive on several subjects: keep the newest fact per span."""
        known = self.spans.get(start.isoformat())
        if known is None or known["version"] < version:
            self.span_noted(start=start, end=end, version=version)

    @event("SpanNoted")
    def span_noted(self, start: date, end: date | None, version: int) -> None:
        self.spans[start.isoformat()] = {"start": start, "end": end, "version": version}

    def note_attribution(self, kind: str, assignee: str, start: date, end: date | None, version: int) -> None:
        known = next((a for a in self.attributions if a["kind"] == kind and a["start"] == start), None)
        if known is None or known["version"] < version:
            self.attribution_noted(kind=kind, assignee=assignee, start=start, end=end, version=version)

    @event("AttributionNoted")
    def attribution_noted(self, kind: str, assignee: str, start: date, end: date | None, version: int) -> None:
        self.attributions = [a for a in self.attributions if not (a["kind"] == kind and a["start"] == start)]
        self.attributions.append({"kind": kind, "assignee": assignee, "start": start, "end": end, "version": version})

    def member_on(self, day: date) -> bool:
        return any(s["start"] <= day and (s["end"] is None or day <= s["end"]) for s in self.spans.values())

    def attributed_to(self, participant_refs: set[str], day: date) -> bool:
        return any(a["kind"] == "pcp" and a["assignee"] in participant_refs and a["start"] <= day
                   and (a["end"] is None or day <= a["end"]) for a in self.attributions)


class CinAliasFacts(Aggregate):
    @staticmethod
    def create_id(frozen_cin: str) -> UUID:
        return ns(f"alias/{frozen_cin}")

    @event("AliasNoted")
    def __init__(self, frozen_cin: str, current_cin: str) -> None:
        self.current_cin = current_cin


# -- the rule (pure) -----------------------------------------------------------------------------------------------

def participant_reasons(participant: ParticipantFacts | None, on: date) -> list[str]:
    """Why a participant cannot earn for data captured on `on` (A3): empty when it can."""
    if participant is None or participant.provider_type is None:
        return ["not_enrolled"]
    reasons = []
    if not participant.eligible:
        reasons.append("not_enrolled")
    if participant.milestone1_at is None:
        reasons.append("milestone1_not_achieved")
    starts = participant.data_sharing_starts
    if starts is not None and on < starts:
        reasons.append("before_data_sharing_start")
    if participant.departed_on is not None and on >= participant.departed_on:
        reasons.append("withdrawn")
    return reasons


def snf_file_reasons(*, problems: list[str], event_time: datetime | None, received_at: datetime,
                     member: MemberFacts | None, participant: ParticipantFacts | None) -> list[str]:
    """Every reason a combined ADT file does not earn $400 (empty = credit). Timely: 72 h real time."""
    reasons = [f"incomplete:{p}" for p in problems]
    if event_time is None:
        return reasons or ["incomplete:event time missing"]
    captured_on = event_time.astimezone(PLAN_ZONE).date()
    if not is_timely(event_time, received_at):
        reasons.append("late")
    if event_time.astimezone(UTC) > received_at.astimezone(UTC):  # compare instants, not wall times
        reasons.append("event_time_after_receipt")
    if member is None or not member.member_on(captured_on):
        reasons.append("not_a_member")
    reasons.extend(participant_reasons(participant, captured_on))
    return reasons
