"""What quarter closes evaluate (DOMAIN.md A3, A4): each participant's credits from submissions, PCP attribution
rosters from enrollment, the evaluations themselves and the calendar of closed quarters."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from dsi_shared.plantime import Quarter
from eventsourcing.domain import Aggregate, event

from milestones.earning import COVERAGE, PER_FILE, ZERO

PENDING, EVALUATED, WITHDRAWN = "pending", "evaluated", "withdrawn"
# Credits recorded before earning rules were kinds with parameters name the rule the old way.
RULE_KIND = {"snf_combined_adt_file": PER_FILE, "pcp_longitudinal_coverage": COVERAGE}


def kind_of(earning_rule: str) -> str:
    return RULE_KIND.get(earning_rule, earning_rule)


def _id(path: str) -> UUID:
    return uuid5(NAMESPACE_URL, f"/dsi/milestones/{path}")


class CreditLedger(Aggregate):
    """One participant's credited submissions, each with its quarter (of HIE receipt) and where it stands:
    pending until a close evaluates it; withdrawn when a cancel reverses it (before or after evaluation)."""

    @staticmethod
    def create_id(participant_id: UUID) -> UUID:
        return _id(f"credits/{participant_id}")

    @event("LedgerOpened")
    def __init__(self, participant_id: UUID) -> None:
        self.participant_id = participant_id
        self.credits: dict[str, dict[str, Any]] = {}
        self.carried = ZERO

    @property
    def reversed_before_noted(self) -> list[str]:
        """Reversals that reached the ledger before their credit (ledgers and snapshots from before: none)."""
        return list(getattr(self, "_reversed_early", []))

    def note_credit(self, submission_id: str, earning_rule: str, member_id: str, quarter: str, amount: Decimal,
                    rule_version: str, trace: dict[str, str] | None = None) -> None:
        if submission_id not in self.credits:
            self.credit_noted(submission_id=submission_id, earning_rule=earning_rule, member_id=member_id,
                              quarter=quarter, amount=amount, rule_version=rule_version, trace=trace or {})
            if submission_id in self.reversed_before_noted:  # its cancel came first: it never counts
                self.credit_withdrawn(submission_id=submission_id)

    @event("CreditNoted")
    def credit_noted(self, submission_id: str, earning_rule: str, member_id: str, quarter: str, amount: Decimal,
                     rule_version: str, trace: dict[str, str] | None = None) -> None:
        """`trace`: the W3C context the credit arrived under, so the close that counts it can link back to it."""
        self.credits[submission_id] = {"earning_rule": earning_rule, "member_id": member_id, "quarter": quarter,
                                       "amount": amount, "rule_version": rule_version, "state": PENDING,
                                       "evaluation": None, "recovered": False, "trace": trace or {}}

    def note_reversal(self, submission_id: str) -> None:
        """A cancel withdraws the credit, whichever of the two reaches the ledger first (DOMAIN.md A4: money never
        depends on the order messages arrive in — a credit's delivery retried after a conflict lands after its
        reversal): a reversal before its credit is kept, and the credit is withdrawn as it is noted."""
        credit = self.credits.get(submission_id)
        if credit is None:
            if submission_id not in self.reversed_before_noted:
                self.reversal_noted_before_credit(submission_id=submission_id)
        elif credit["state"] != WITHDRAWN:
            self.credit_withdrawn(submission_id=submission_id)

    @event("ReversalNotedBeforeCredit")
    def reversal_noted_before_credit(self, submission_id: str) -> None:
        self._reversed_early = [*self.reversed_before_noted, submission_id]

    @event("CreditWithdrawn")
    def credit_withdrawn(self, submission_id: str) -> None:
        self.credits[submission_id]["state"] = WITHDRAWN

    def active(self, rule: str, state: str | None = None) -> dict[str, dict[str, Any]]:
        return {sid: c for sid, c in self.credits.items() if kind_of(c["earning_rule"]) == rule
                and c["state"] != WITHDRAWN and (state is None or c["state"] == state)}

    def to_recover(self, rule: str) -> list[str]:
        """Credits an evaluation counted that were withdrawn afterwards, not yet set against a later one."""
        return sorted(sid for sid, c in self.credits.items() if kind_of(c["earning_rule"]) == rule and c["state"] == WITHDRAWN
                      and c["evaluation"] is not None and not c["recovered"])

    @event("CreditsEvaluated")
    def evaluated(self, evaluation_id: UUID, counted: list[str], recovered: list[str], carried: Decimal) -> None:
        for sid in counted:
            self.credits[sid]["state"], self.credits[sid]["evaluation"] = EVALUATED, evaluation_id
        for sid in recovered:
            self.credits[sid]["recovered"] = True
        self.carried = carried


class MemberAttribution(Aggregate):
    """A member's PCP attribution spans (keyed by start, newest version wins), to move the member between rosters,
    and the member's plan eligibility spans, which every roster holding the member keeps a copy of."""

    @staticmethod
    def create_id(cin: str) -> UUID:
        return _id(f"attribution/{cin}")

    @event("AttributionStarted")
    def __init__(self, cin: str) -> None:
        self.cin = cin
        self.spans: dict[str, dict[str, Any]] = {}
        self.eligibility: dict[str, dict[str, Any]] = {}

    @event("SpanNoted")
    def note_span(self, start: date, assignee: str, end: date | None, version: int) -> None:
        self.spans[start.isoformat()] = {"assignee": assignee, "end": end, "version": version}

    def note_eligibility(self, start: date, end: date | None, version: int) -> bool:
        known = self.eligibility.get(start.isoformat())
        if known is not None and known["version"] >= version:
            return False
        self.eligibility_noted(start=start, end=end, version=version)
        return True

    @event("EligibilityNoted")
    def eligibility_noted(self, start: date, end: date | None, version: int) -> None:
        self.eligibility[start.isoformat()] = {"start": start, "end": end, "version": version}

    @property
    def assignees(self) -> set[str]:
        return {span["assignee"] for span in self.spans.values()}


class AttributionRoster(Aggregate):
    """The members attributed to one assignee (a participant id or NPI), with their spans, and each member's plan
    eligibility spans (the coverage denominator counts only plan members in the quarter)."""

    @staticmethod
    def create_id(assignee: str) -> UUID:
        return _id(f"roster/{assignee.strip().upper()}")

    @event("RosterStarted")
    def __init__(self, assignee: str) -> None:
        self.assignee = assignee
        self.spans: dict[str, dict[str, date | None]] = {}  # "cin|start" → {"start", "end"}
        self.membership: dict[str, dict[str, dict[str, date | None]]] = {}  # cin → {start: {"start", "end"}}

    @event("MemberAttributed")
    def attribute(self, cin: str, start: date, end: date | None) -> None:
        self.spans[f"{cin}|{start.isoformat()}"] = {"start": start, "end": end}

    @event("MemberUnattributed")
    def unattribute(self, cin: str, start: date) -> None:
        self.spans.pop(f"{cin}|{start.isoformat()}", None)

    @event("MembershipNoted")
    def note_membership(self, cin: str, start: date, end: date | None) -> None:
        self.membership.setdefault(cin, {})[start.isoformat()] = {"start": start, "end": end}

    def members_in(self, first: date, last: date) -> set[str]:
        """Members attributed in the quarter [first, last] who are plan members in it."""

        def covered(span: dict[str, date | None]) -> bool:  # the span [start, end] (None: open) overlaps the quarter
            start, end = span["start"], span["end"]
            return start is not None and start <= last and (end is None or end >= first)

        attributed = {key.partition("|")[0] for key, span in self.spans.items() if covered(span)}
        plan_members = {cin for cin, spans in self.membership.items() for span in spans.values() if covered(span)}
        return attributed & plan_members


PENDING_VALIDATION, VALIDATED, REJECTED = "pending_validation", "validated", "rejected"


class Evaluation(Aggregate):
    """One participant's result for one quarter close: inputs, rule, amount; pending until staff validate it."""

    @staticmethod
    def create_id(participant_id: UUID, quarter: str, subject: str = "quarter") -> UUID:
        return _id(f"evaluation/{participant_id}/{quarter}/{subject}")

    @event("EvaluationRecorded")
    def __init__(self, participant_id: UUID, quarter: str, subject: str, milestone: str | None, earning_rule: str | None,
                 rule_version: str, earned: Decimal, outcome: str, figures: dict[str, Any]) -> None:
        self.participant_id, self.quarter, self.subject = participant_id, quarter, subject
        self.milestone, self.earning_rule, self.rule_version = milestone, earning_rule, rule_version
        self.earned, self.outcome, self.figures = earned, outcome, figures
        self.state = PENDING_VALIDATION
        self.decision: dict[str, Any] | None = None

    @event("CoverageEvaluated")
    def note_coverage(self, participant_id: UUID, quarter: str, threshold_percent: int | None,
                      attributed_members: int, members_with_record: int, coverage_percent: Decimal) -> None:
        """Its coverage figures as counts, for the bus (its `figures` hold them already, with the credits counted)."""

    def with_coverage_noted(self) -> Evaluation:
        """A coverage evaluation just recorded, stating its figures (`CoverageEvaluated`)."""
        figures = self.figures
        self.note_coverage(participant_id=self.participant_id, quarter=self.quarter,
                           threshold_percent=figures["threshold_percent"], attributed_members=figures["attributed_members"],
                           members_with_record=figures["members_with_record"],
                           coverage_percent=Decimal(figures["coverage_percent"]))
        return self

    # Repeats what payments needs (participant, milestone, amount, credits): the relayed event is all it sees.
    @event("EvaluationValidated")
    def validate(self, participant_id: UUID, quarter: str, milestone: str | None, earned: Decimal, rule_version: str,
                 credits: list[str], validated_by: str, validated_at: datetime) -> None:
        self.state = VALIDATED
        self.decision = {"by": validated_by, "at": validated_at}

    @event("EvaluationRejected")
    def reject(self, reason: str, rejected_by: str, rejected_at: datetime) -> None:
        self.state = REJECTED
        self.decision = {"by": rejected_by, "at": rejected_at, "reason": reason}

    @property
    def paid_credits(self) -> list[str]:
        return sorted([*self.figures.get("credits", []), *self.figures.get("late_credits", [])])


class CloseCalendar(Aggregate):
    """The quarters closed so far, in order: a quarter closes once, and never before one already closed."""

    @staticmethod
    def create_id() -> UUID:
        return _id("calendar")

    @event("CalendarStarted")
    def __init__(self) -> None:
        self.closed: dict[str, dict[str, Any]] = {}

    @property
    def latest(self) -> Quarter | None:
        return max((Quarter.parse(q) for q in self.closed), default=None)

    @event("QuarterClosed")
    def close(self, quarter: str, closed_at: datetime, closed_by: str, evaluations: int, participants: int,
              earned: Decimal, adjustments: int) -> None:
        self.closed[quarter] = {"closed_at": closed_at, "closed_by": closed_by, "evaluations": evaluations,
                                "participants": participants, "earned": earned, "adjustments": adjustments}


# Projections of other services' facts and bookkeeping stay in this store; the bus carries evaluations and closes.
for _internal in (CreditLedger.LedgerOpened, CreditLedger.CreditNoted, CreditLedger.CreditWithdrawn,  # type: ignore[attr-defined]
                  CreditLedger.CreditsEvaluated, MemberAttribution.AttributionStarted,  # type: ignore[attr-defined]
                  MemberAttribution.SpanNoted, MemberAttribution.EligibilityNoted,  # type: ignore[attr-defined]
                  AttributionRoster.RosterStarted, AttributionRoster.MemberAttributed,  # type: ignore[attr-defined]
                  AttributionRoster.MemberUnattributed, AttributionRoster.MembershipNoted,  # type: ignore[attr-defined]
                  CloseCalendar.CalendarStarted):  # type: ignore[attr-defined]
    _internal.relay = False
