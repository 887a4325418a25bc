"""Submissions (DOMAIN.md A3): one Submission per received combined file or longitudinal record, with its facts,
verdict and reasons; VisitCredits makes a qualifying event earn once and lets a cancel withdraw it; and the
facts this service keeps from enrollment and milestones (participants, facilities, members), projected from
their events.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from dsi_shared.plantime import PLAN_ZONE, plan_day
from dsi_shared.rulebook import CoveragePerPeriod, PerQualifyingFile, ProviderTypeRules, RuleBook, RulesDocument
from eventsourcing.domain import Aggregate, event

ZERO = Decimal("0.00")
CREDITED, REJECTED, RECORDED = "credited", "rejected", "recorded"


def reason_code(reason: str) -> str:
    """A reason's code, the part before any ':' (`duplicate_of:<id>` → `duplicate_of`): what is counted and published,
    never the detail after it."""
    return str(reason).split(":", 1)[0]


def ns(path: str) -> UUID:
    return uuid5(NAMESPACE_URL, f"/dsi/submissions/{path}")


class Submission(Aggregate):
    announced: list[str] | None = None  # the verdict and reason codes `FileJudged` last stated (a list: JSON keeps it)

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
        self.history: list[dict[str, Any]] = []  # each judgment in order, with what caused a judgment again

    @property
    def event_time(self) -> datetime | None:
        """The qualifying event's time, as the file's facts recorded it."""
        raw = self.facts.get("event_time")
        return datetime.fromisoformat(raw) if raw else None

    @property
    def event_key(self) -> str | None:
        """What makes one qualifying event earn once ("the event, not the message, is the unit"): its type and its
        plan-local time."""
        moment = self.event_time
        return f"{self.facts['event_type']}|{moment.astimezone(PLAN_ZONE).isoformat()}" if moment else None

    @event("SubmissionCredited")
    def credit_event(self, participant_id: UUID, member_id: str, amount: Decimal, rule_version: str,
                     earning_rule: str, event_key: str, quarter: str, captured_on: date, attributed: bool | None) -> None:
        self.verdict, self.amount, self.reasons = CREDITED, amount, []
        self.credit = {"member_id": member_id, "rule_version": rule_version, "earning_rule": earning_rule,
                       "event_key": event_key, "quarter": quarter, "captured_on": captured_on, "attributed": attributed}
        self.history.append({"verdict": CREDITED, "amount": str(amount), "rule_version": rule_version})

    @event("SubmissionRejected")
    def reject(self, reasons: list[str]) -> None:
        self.verdict, self.reasons = REJECTED, reasons
        self.history.append({"verdict": REJECTED, "reasons": reasons})

    @event("SubmissionRecorded")
    def record(self, reasons: list[str]) -> None:
        """Kept, neither credited nor rejected (not a qualifying event, or the type's rule is forthcoming)."""
        self.verdict, self.reasons = RECORDED, reasons
        self.history.append({"verdict": RECORDED, "reasons": reasons})

    @event("SubmissionRejudged")
    def rejudge(self, verdict: str, reasons: list[str], rule_version: str | None, cause: str) -> None:
        """A later fact (Milestone 1, a rules correction) changed why this file does not earn; a file that now
        earns gets `SubmissionCredited` next."""
        self.verdict, self.reasons = verdict, reasons
        self.history.append({"judged_again": cause, "verdict": verdict, "reasons": reasons, "rule_version": rule_version})

    @event("SubmissionCreditReversed")
    def reverse(self, participant_id: UUID, cancelled_by: UUID, amount: Decimal, quarter: str) -> None:
        self.reversed_by, self.amount = cancelled_by, ZERO
        self.reasons = [*self.reasons, f"cancelled_by:{cancelled_by}"]
        self.history.append({"credit_reversed_by": str(cancelled_by)})

    @event("FileJudged")
    def judged(self, participant_id: UUID | None, received_at: datetime, verdict: str, reasons: list[str]) -> None:
        """The verdict the file now has and its reason codes (published as `dsi.submissions.file-judged`)."""
        self.announced = [verdict, *reasons]

    def collect_events(self) -> list[Any]:
        """Before its new events are saved (every save path takes them here), a file whose verdict or reason codes
        changed since it last said so states them once more in `FileJudged`: once per save, with the verdict it ends
        with (judged again to credited is one `FileJudged`, not two; a credit reversed states its new reasons)."""
        if self.verdict is not None:
            codes = [reason_code(r) for r in self.reasons]
            if self.announced != [self.verdict, *codes]:
                self.judged(participant_id=self.participant_id, received_at=self.received_at, verdict=self.verdict,
                            reasons=codes)
        return list(super().collect_events())


class VisitCredits(Aggregate):
    """The credited qualifying events of one participant's member's visit (`visit` "": the member's events that
    came without a visit id, keyed on type and time alone): each earns once; a cancel finds the latest credit of the
    event type it cancels."""

    @staticmethod
    def create_id(participant_id: UUID, member_id: str, visit: str) -> UUID:
        return ns(f"visit/{participant_id}/{member_id}/{visit}")

    @event("VisitOpened")
    def __init__(self, participant_id: UUID, member_id: str, visit: str) -> None:
        self.participant_id, self.member_id, self.visit = participant_id, member_id, visit
        self.credits: list[dict[str, Any]] = []

    def credited(self, event_key: str) -> dict[str, Any] | None:
        """The event's credit that stands: a cancelled one is no duplicate (the event sent again after its cancel,
        a correction, earns again)."""
        return next((c for c in self.credits if c["event_key"] == event_key and not c["reversed"]), None)

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
        self.milestone1_at: datetime | None = None
        self.departed_on: date | None = None

    @event("RegistrationNoted")
    def note_registration(self, provider_type: str, npi: str | None, sending_facilities: list[str]) -> None:
        self.provider_type, self.npi, self.sending_facilities = provider_type, npi, sending_facilities

    @event("EligibilityNoted")
    def note_eligibility(self, eligible: bool, rule_version: str, schedule: dict[str, Any] | None = None) -> None:
        """`schedule`: only in events from before rules were effective-dated; the rules book decides now."""
        self.eligible, self.rule_version = eligible, rule_version

    @event("Milestone1Noted")
    def note_milestone1(self, achieved_at: datetime) -> None:
        self.milestone1_at = achieved_at

    @event("DepartureNoted")
    def note_departure(self, effective_on: date) -> None:
        self.departed_on = effective_on


class HeldFiles(Aggregate):
    """One participant's files and records that did not earn for a reason a later fact can change (Milestone 1
    not yet noted, before data sharing, a rule forthcoming, ...): what a new fact makes us judge again."""

    @staticmethod
    def create_id(participant_id: UUID) -> UUID:
        return ns(f"held/{participant_id}")

    @event("HeldFilesOpened")
    def __init__(self, participant_id: UUID) -> None:
        self.participant_id = participant_id
        self.held: list[UUID] = []

    @event("FileHeld")
    def hold(self, submission_id: UUID) -> None:
        self.held.append(submission_id)

    @event("FileReleased")
    def release(self, submission_id: UUID) -> None:
        self.held.remove(submission_id)


class FacilityIndex(Aggregate):
    """An MSH-4 sending-facility id (or NPI) → the participant that sends as it."""

    @staticmethod
    def create_id(facility: str) -> UUID:
        return ns(f"facility/{facility.strip().upper()}")

    @event("FacilityNoted")
    def __init__(self, facility: str, participant_id: UUID) -> None:
        self.participant_id = participant_id


NOT_A_MEMBER = "not_a_member"  # the one reason a member's eligibility arriving later can lift


class MemberFacts(Aggregate):
    """A member's eligibility spans and PCP attributions, as enrollment published them; and the files and records
    judged `not_a_member` under this CIN, to judge again when its eligibility arrives (DOMAIN.md A4: "Money never
    depends on the order in which two streams' messages arrive": a roster after the file, retroactive eligibility).
    A CIN enrollment never published is kept only for what waits on it (`known` is False)."""

    @staticmethod
    def create_id(cin: str) -> UUID:
        return ns(f"member/{cin}")

    @event("MemberNoted")
    def __init__(self, cin: str) -> None:
        self.cin = cin
        self.spans: dict[str, dict[str, Any]] = {}
        self.attributions: list[dict[str, Any]] = []
        self.waiting: list[UUID] = []  # submissions judged not_a_member under this CIN

    @property
    def known(self) -> bool:
        """Enrollment published something of this member (not only files waiting on it)."""
        return bool(self.spans or self.attributions)

    @event("FileWaitsOnMember")
    def wait(self, submission_id: UUID) -> None:
        self.waiting.append(submission_id)

    @event("FileNoLongerWaitsOnMember")
    def stop_waiting(self, submission_id: UUID) -> None:
        self.waiting.remove(submission_id)

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


def resolve_member(cin: str, get: Callable[[UUID], Any]) -> MemberFacts | None:
    """The member enrollment published under `cin`, or under the CIN a frozen one now points to; `get` loads an
    aggregate by id (None when absent): the store, or the what-if's rebuilt aggregates."""
    member = get(MemberFacts.create_id(cin))
    if not isinstance(member, MemberFacts) or not member.known:
        alias = get(CinAliasFacts.create_id(cin))
        current = alias.current_cin if isinstance(alias, CinAliasFacts) else cin
        member = get(MemberFacts.create_id(current)) if current != cin else None
    return member if isinstance(member, MemberFacts) and member.known else None


# -- the rules (pure): each verdict is decided here, under the rules version in force on the day it concerns ------------

@dataclass(frozen=True)
class Judgment:
    """What a file or record earns under one rules version, and why."""

    verdict: str
    reasons: list[str]
    rule_version: str | None = None
    earning_rule: str | None = None  # the rule's kind
    amount: Decimal = ZERO
    ignored: list[str] = field(default_factory=list)  # message kinds recorded and ignored


def participant_reasons(participant: ParticipantFacts | None, on: date, row: ProviderTypeRules | None) -> list[str]:
    """Why a participant cannot earn for data captured on `on` (A3): empty when it can. "Only participants that
    achieved Milestone 1 earn, and only for data captured on or after their type's data-sharing start date" —
    that date read from the rules version in force on `on`."""
    if participant is None or participant.provider_type is None:
        return ["not_enrolled"]
    reasons = []
    if not participant.eligible:
        reasons.append("not_enrolled")
    if participant.milestone1_at is None:
        reasons.append("milestone1_not_achieved")
    if row is not None and on < row.data_sharing_starts:
        reasons.append("before_data_sharing_start")
    if participant.departed_on is not None and on >= participant.departed_on:
        reasons.append("withdrawn")
    return reasons


def per_file_rule(rules: RulesDocument | None, participant: ParticipantFacts | None) -> PerQualifyingFile | None:
    rule = rules.earning_rule(participant.provider_type) if rules and participant else None
    return rule if isinstance(rule, PerQualifyingFile) else None


def cancelled_event(book: RuleBook, participant: ParticipantFacts | None, trigger: str, on: date) -> str | None:
    """The qualifying event a cancel trigger withdraws ("a cancel (A11/A12/A13) withdraws the credit of the event
    it cancels"), per the participant's rule in force that day; None when the trigger cancels nothing."""
    rule = per_file_rule(book.in_force(on), participant)
    return rule.cancel_events.get(trigger) if rule else None


def completeness(messages: list[dict[str, Any]], rule: PerQualifyingFile) -> tuple[list[str], list[str]]:
    """A3 "Complete": the ADT's own problems, and each associated message (ORU, RDE) of the file — its own
    problems and whether it is for the ADT's patient and visit. "A message of another kind in the file is
    recorded and ignored; it does not make the file incomplete." Returns (problems, ignored kinds)."""
    problems: list[str] = []
    ignored: list[str] = []
    for position, message in enumerate(messages):
        if position == 0:
            problems.extend(message.get("problems", []))
        elif message["type"] in rule.associated_message_types:
            problems.extend(f"{message['type']} {p}" for p in message.get("problems", []))
            if not message.get("belongs", True):
                problems.append(f"{message['type']} MSH-10 {message['control_id']} is for another patient or visit")
        else:
            ignored.append(message["type"])
    return problems, ignored


def is_timely(event_time: datetime, received_at: datetime, rule: PerQualifyingFile) -> bool:
    """"Timely: received by the HIE within 72 hours of the qualifying event" (the window is the rule's
    `timeliness_hours`), in real elapsed time: both go to UTC first, since Python subtracts two datetimes that
    share one ZoneInfo as wall-clock times and would count a DST night's missing or repeated hour wrongly."""
    return received_at.astimezone(UTC) - event_time.astimezone(UTC) <= timedelta(hours=rule.timeliness_hours)


def judge_snf_file(*, event_type: str, event_time: datetime | None, received_at: datetime,
                   messages: list[dict[str, Any]], member: MemberFacts | None, participant: ParticipantFacts | None,
                   book: RuleBook) -> Judgment:
    """A3 skilled nursing / long-term care: "$400 for each timely submission to the HIE of a complete combined
    ADT/RDE/ORU file for a plan member", under the rules version in force on the event's (plan-local) date.
    `messages[0]` is the ADT. Duplicates and cancels are the application's (they need the visit's history)."""
    on = plan_day(event_time or received_at)
    rules = book.in_force(on)
    if rules is None:
        return Judgment(REJECTED, ["no_rules_in_force"])
    if participant is None or participant.provider_type is None:
        return Judgment(REJECTED, ["not_enrolled"], rules.version)
    row = rules.provider_type(participant.provider_type)
    rule = per_file_rule(rules, participant)
    if rule is None:
        other = row.earning_rule if row else None
        return Judgment(RECORDED, ["earning_rule_forthcoming" if other is None
                                   else f"earning_rule_does_not_credit_adt:{other.kind}"], rules.version)
    if event_type not in rule.qualifying_events:
        return Judgment(RECORDED, [f"not_a_qualifying_event:{event_type}"], rules.version, rule.kind)
    problems, ignored = completeness(messages, rule)
    reasons = [f"incomplete:{p}" for p in problems]
    if event_time is None:
        return Judgment(REJECTED, reasons or ["incomplete:event time missing"], rules.version, rule.kind, ignored=ignored)
    if not is_timely(event_time, received_at, rule):
        reasons.append("late")
    if event_time.astimezone(UTC) > received_at.astimezone(UTC):  # compare instants, not wall times
        reasons.append("event_time_after_receipt")
    if member is None or not member.member_on(on):
        reasons.append(NOT_A_MEMBER)
    reasons.extend(participant_reasons(participant, on, row))
    if reasons:
        return Judgment(REJECTED, reasons, rules.version, rule.kind, ignored=ignored)
    return Judgment(CREDITED, [], rules.version, rule.kind, rule.amount, ignored)


def judge_record(*, problems: list[str], received_at: datetime, member: MemberFacts | None,
                 participant: ParticipantFacts | None, book: RuleBook) -> Judgment:
    """A3 primary care: a longitudinal record counts toward the quarter's coverage when the participant's type
    earns by `coverage_per_period` under the version in force on the day the HIE received it. The record itself
    earns nothing; the quarter's evaluation does."""
    on = plan_day(received_at)
    rules = book.in_force(on)
    if rules is None:
        return Judgment(REJECTED, ["no_rules_in_force"])
    if problems:
        return Judgment(REJECTED, [f"incomplete:{p}" for p in problems], rules.version)
    row = rules.provider_type(participant.provider_type) if participant and participant.provider_type else None
    if row is not None and not isinstance(row.earning_rule, CoveragePerPeriod):
        other = row.earning_rule
        return Judgment(RECORDED, ["earning_rule_forthcoming" if other is None
                                   else f"earning_rule_does_not_credit_records:{other.kind}"], rules.version)
    reasons = ([] if member is not None and member.member_on(on) else [NOT_A_MEMBER]) + \
        participant_reasons(participant, on, row)
    if reasons:
        return Judgment(REJECTED, reasons, rules.version)
    assert row is not None and isinstance(row.earning_rule, CoveragePerPeriod)
    return Judgment(CREDITED, [], rules.version, row.earning_rule.kind)


# Verdicts a later fact can change: Milestone 1 noted, a rules version (a correction) published. Whatever the
# order the facts arrive in, the file ends judged under all of them.
FINAL_REASONS = ("unprocessable:", "unknown_sending_facility", "not_hl7", "no_qualifying_event", "duplicate_of:",
                 "cancels", "unknown_participant")


def may_change(submission: Submission) -> bool:
    return submission.verdict in {REJECTED, RECORDED} and not any(
        r.startswith(FINAL_REASONS) for r in submission.reasons) and "rejudgeable" in submission.facts


for _internal in (HeldFiles.HeldFilesOpened, HeldFiles.FileHeld, HeldFiles.FileReleased,  # type: ignore[attr-defined]
                  MemberFacts.FileWaitsOnMember, MemberFacts.FileNoLongerWaitsOnMember):  # type: ignore[attr-defined]
    _internal.relay = False  # bookkeeping: what to judge again


class UnreadableFrame(Aggregate):
    """An MLLP frame that could not be read at all (not HL7, not text): kept compactly, one event per frame, with
    its hash, size and reason, never its bytes, and never published (issue 12 §3: garbage must not flood the
    store or the bus)."""

    @event("UnreadableFrameReceived")
    def __init__(self, channel: str, received_at: datetime, payload_sha256: str, size: int, reason: str) -> None:
        self.channel, self.received_at, self.payload_sha256 = channel, received_at, payload_sha256
        self.size, self.reason = size, reason


UnreadableFrame.UnreadableFrameReceived.relay = False  # type: ignore[attr-defined]
