"""ParticipantProgress aggregate and the Milestone 1 rule (DOMAIN.md A2.4, A4).

"Once all these documents have been signed and accepted, you will have completed Milestone 1." An eligible
participant whose LOA, DSA and HIE are each signed and accepted (by staff review or the counterparty; merely
not rejected is not accepted), signed by its due date — its own, set when the LOA is executed, else its type's
Milestone 1 date — earns the Milestone 1 amount of the rules version in force on the day the last one was
signed. A completion after the due date, or after the participant left, is recorded as missed with the reason;
a rules correction that moves the date can still turn a miss into an achievement (never the reverse).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from dsi_shared.plantime import plan_day
from dsi_shared.rulebook import RuleBook
from eventsourcing.domain import Aggregate, event

REQUIRED_AGREEMENTS = frozenset({"LOA", "DSA", "HIE"})
MILESTONE_1 = "M1"
COMPLETED_AFTER_DEADLINE = "completed_after_milestone1_deadline"
LEFT_BEFORE_COMPLETION = "left_program_before_completion"
ACHIEVED, MISSED, PENDING = "achieved", "missed", "pending"


@dataclass(frozen=True)
class Milestone1Decision:
    outcome: str  # achieved | missed | pending
    reason: str | None = None
    completed_at: datetime | None = None
    deadline: date | None = None
    amount: Decimal | None = None
    rule_version: str | None = None
    basis: tuple[str, ...] = ()


def counted_agreements(signatures: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per agreement, the first signature that is accepted and not rejected."""
    counted: dict[str, dict[str, Any]] = {}
    for signature in signatures:
        if signature.get("accepted") and not signature["rejected"]:
            counted.setdefault(signature["agreement"], signature)
    return counted


def decide_milestone1(*, eligible: bool, provider_type: str | None, signatures: list[dict[str, Any]],
                      due_on: date | None, departure: dict[str, Any] | None, book: RuleBook) -> Milestone1Decision:
    """A2.4, under the rules version in force on the day the last of the three agreements was signed."""
    counted = counted_agreements(signatures)
    if not eligible or not REQUIRED_AGREEMENTS <= counted.keys():
        return Milestone1Decision(PENDING)
    completed_at = max(counted[kind]["signed_at"] for kind in REQUIRED_AGREEMENTS)
    rules = book.in_force(plan_day(completed_at))
    row = rules.provider_type(provider_type or "") if rules else None
    if rules is None or row is None:
        return Milestone1Decision(PENDING, "no_rules_in_force_for_type")
    deadline = due_on or row.milestone1_by
    basis = tuple(sorted(counted[kind]["document_id"] for kind in REQUIRED_AGREEMENTS))
    decided = {"completed_at": completed_at, "deadline": deadline, "rule_version": rules.version, "basis": basis}
    if departure is not None and departure["effective_on"] <= plan_day(completed_at):
        return Milestone1Decision(MISSED, LEFT_BEFORE_COMPLETION, **decided)
    if plan_day(completed_at) > deadline:
        return Milestone1Decision(MISSED, COMPLETED_AFTER_DEADLINE, **decided)
    return Milestone1Decision(ACHIEVED, amount=row.milestone1_amount, **decided)


class ParticipantProgress(Aggregate):
    @staticmethod
    def create_id(participant_id: UUID) -> UUID:
        return uuid5(NAMESPACE_URL, f"/dsi/milestones/progress/{participant_id}")

    @event("ProgressStarted")
    def __init__(self, participant_id: UUID) -> None:
        self.participant_id = participant_id
        self.eligibility: dict[str, Any] | None = None
        self.signatures: list[dict[str, Any]] = []
        self.departure: dict[str, Any] | None = None
        self.achieved: dict[str, dict[str, Any]] = {}
        self.missed: dict[str, dict[str, Any]] = {}
        self.schedule: dict[str, Any] = {}  # only in progress recorded before rules were effective-dated
        self.registration: dict[str, Any] = {}
        self.due_on: date | None = None
        self.findings: list[dict[str, Any]] = []
        self.early_reviews: dict[str, tuple[bool, bool]] = {}  # reviews noted before their signature

    # -- facts from enrollment --------------------------------------------------------------------------------
    def note_registration(self, provider_type: str, npi: str | None, legal_name: str,
                          individual_npis: list[str] | None = None) -> None:
        declared = sorted(individual_npis or [])
        noted = {"provider_type": provider_type, "npi": npi, "legal_name": legal_name, "individual_npis": declared}
        if noted != {**self.registration, "individual_npis": self.registration.get("individual_npis", [])}:
            self.registration_noted(provider_type=provider_type, npi=npi, legal_name=legal_name,
                                    individual_npis=declared)

    @event("RegistrationNoted")
    def registration_noted(self, provider_type: str, npi: str | None, legal_name: str,
                           individual_npis: list[str] | None = None) -> None:
        self.registration = {"provider_type": provider_type, "npi": npi, "legal_name": legal_name,
                             "individual_npis": list(individual_npis or [])}

    @event("ScheduleNoted")
    def schedule_noted(self, schedule: dict[str, Any]) -> None:
        """Recorded before rules were effective-dated (a frozen copy); kept so old logs load, never read."""
        self.schedule = schedule

    @property
    def provider_type(self) -> str | None:
        return self.registration.get("provider_type")

    @property
    def references(self) -> set[str]:
        """How attribution files name this participant: "the longitudinal records associated with Alliance
        Members" attributed to it by its id or by any NPI it declared — its own, and an umbrella group's individual
        PCPs'."""
        npis = [self.registration.get("npi"), *self.registration.get("individual_npis", [])]
        return {str(self.participant_id).upper(), *(n.upper() for n in npis if n)}

    def note_eligibility(self, eligible: bool, rule_version: str) -> None:
        known = self.eligibility or {}
        if (known.get("eligible"), known.get("rule_version")) != (eligible, rule_version):
            self.eligibility_noted(eligible=eligible, rule_version=rule_version, milestone1_by=None)

    @event("EligibilityNoted")
    def eligibility_noted(self, eligible: bool, rule_version: str, milestone1_by: date | None) -> None:
        """`milestone1_by`: only in events from before rules were effective-dated; the book decides now."""
        self.eligibility = {"eligible": eligible, "rule_version": rule_version, "milestone1_by": milestone1_by}

    def note_agreement(self, agreement: str, signed_at: datetime, document_id: str) -> None:
        if not any(s["agreement"] == agreement and s["document_id"] == document_id for s in self.signatures):
            self.record_agreement(agreement=agreement, signed_at=signed_at, document_id=document_id)

    @event("AgreementNoted")
    def record_agreement(self, agreement: str, signed_at: datetime, document_id: str) -> None:
        rejected, accepted = self.early_reviews.pop(f"{agreement}|{document_id}", (False, False))
        self.signatures.append({"agreement": agreement, "signed_at": signed_at, "document_id": document_id,
                                "rejected": rejected, "accepted": accepted})

    def note_review(self, agreement: str, document_id: str, decision: str) -> None:
        """A staff review or an acceptance from outside. One that arrives before its signature (a redelivery out of
        order) is kept and applies when the signature is noted."""
        rejected, accepted = decision == "rejected", decision == "accepted"
        signature = next((s for s in self.signatures if s["agreement"] == agreement
                          and s["document_id"] == document_id), None)
        known = (signature["rejected"], signature.get("accepted")) if signature is not None \
            else self.early_reviews.get(f"{agreement}|{document_id}")
        if known is not None and tuple(known) == (rejected, accepted):
            return
        self.review_noted(agreement=agreement, document_id=document_id, rejected=rejected, accepted=accepted)
        paid = self.achieved.get(MILESTONE_1)
        if rejected and paid is not None and document_id in paid["basis"]:
            self.finding_recorded(milestone=MILESTONE_1, finding="basis_agreement_rejected_after_payment",
                                  document_id=document_id)

    @event("ReviewNoted")
    def review_noted(self, agreement: str, document_id: str, rejected: bool, accepted: bool | None = None) -> None:
        """`accepted` is None in reviews noted before acceptance was required: those were not acceptances."""
        signature = next((s for s in self.signatures if s["agreement"] == agreement
                          and s["document_id"] == document_id), None)
        if signature is None:
            self.early_reviews[f"{agreement}|{document_id}"] = (rejected, bool(accepted))
        else:
            signature["rejected"], signature["accepted"] = rejected, bool(accepted)

    @event("FindingRecorded")
    def finding_recorded(self, milestone: str, finding: str, document_id: str) -> None:
        """For staff: something changed after money was paid. Never a silent claw-back."""
        self.findings.append({"milestone": milestone, "finding": finding, "document_id": document_id})

    def note_due_date(self, due_on: date) -> None:
        if due_on != self.due_on:
            self.due_date_noted(due_on=due_on)

    @event("DueDateNoted")
    def due_date_noted(self, due_on: date) -> None:
        self.due_on = due_on

    def note_departure(self, kind: str, effective_on: date) -> None:
        if self.departure is None:
            self.departure_noted(kind=kind, effective_on=effective_on)

    @event("DepartureNoted")
    def departure_noted(self, kind: str, effective_on: date) -> None:
        self.departure = {"kind": kind, "effective_on": effective_on}

    # -- the rule ----------------------------------------------------------------------------------------------
    def counted_agreements(self) -> dict[str, dict[str, Any]]:
        return counted_agreements(self.signatures)

    def decide_milestone_1(self, book: RuleBook) -> None:
        """Apply `decide_milestone1` to the facts noted so far. Achieved is for good; a miss may still become an
        achievement when a fact or a rules correction changes (never the reverse)."""
        if MILESTONE_1 in self.achieved:
            return
        decision = decide_milestone1(eligible=bool(self.eligibility and self.eligibility["eligible"]),
                                     provider_type=self.provider_type, signatures=self.signatures, due_on=self.due_on,
                                     departure=self.departure, book=book)
        if decision.outcome == ACHIEVED:
            assert decision.completed_at is not None and decision.amount is not None and decision.deadline is not None
            self.achieve(participant_id=self.participant_id, milestone=MILESTONE_1, amount=decision.amount,
                         achieved_at=decision.completed_at, quarter=str(book.calendar.quarter_at(decision.completed_at)),
                         rule_version=decision.rule_version or "", deadline=decision.deadline, basis=list(decision.basis))
        elif decision.outcome == MISSED and MILESTONE_1 not in self.missed:
            assert decision.completed_at is not None and decision.reason is not None
            self.miss(participant_id=self.participant_id, milestone=MILESTONE_1, reason=decision.reason,
                      completed_at=decision.completed_at, deadline=decision.deadline,
                      rule_version=decision.rule_version or "")

    @event("MilestoneAchieved")
    def achieve(self, participant_id: UUID, milestone: str, amount: Decimal, achieved_at: datetime, quarter: str,
                rule_version: str, deadline: date, basis: list[str]) -> None:
        self.missed.pop(milestone, None)
        self.achieved[milestone] = {"amount": amount, "achieved_at": achieved_at, "quarter": quarter,
                                    "rule_version": rule_version, "deadline": deadline, "basis": basis}

    @event("MilestoneMissed")
    def miss(self, participant_id: UUID, milestone: str, reason: str, completed_at: datetime, deadline: date | None,
             rule_version: str) -> None:
        self.missed[milestone] = {"reason": reason, "completed_at": completed_at, "deadline": deadline,
                                  "rule_version": rule_version}
