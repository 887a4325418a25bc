"""ParticipantProgress aggregate and the Milestone 1 rule (DOMAIN.md A2.4, A4).

Milestone 1: an eligible participant whose LOA, DSA and HIE agreements are all signed (and not rejected by
staff) by its provider type's Milestone 1 deadline earns $10,000. A completion after the deadline, or after
the participant left the program, is recorded as missed with the reason, and earns nothing.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from dsi_shared.plantime import plan_day, quarter_of
from eventsourcing.domain import Aggregate, event

REQUIRED_AGREEMENTS = frozenset({"LOA", "DSA", "HIE"})
MILESTONE_1 = "M1"
MILESTONE_1_AMOUNT = Decimal("10000.00")
COMPLETED_AFTER_DEADLINE = "completed_after_milestone1_deadline"
LEFT_BEFORE_COMPLETION = "left_program_before_completion"


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
        self.schedule: dict[str, Any] = {}
        self.registration: dict[str, Any] = {}

    # -- facts from enrollment --------------------------------------------------------------------------------
    def note_registration(self, provider_type: str, npi: str | None, legal_name: str) -> None:
        if {"provider_type": provider_type, "npi": npi, "legal_name": legal_name} != self.registration:
            self.registration_noted(provider_type=provider_type, npi=npi, legal_name=legal_name)

    @event("RegistrationNoted")
    def registration_noted(self, provider_type: str, npi: str | None, legal_name: str) -> None:
        self.registration = {"provider_type": provider_type, "npi": npi, "legal_name": legal_name}

    def note_schedule(self, schedule: dict[str, Any]) -> None:
        """The type's schedule row at the verdict's rule version: data-sharing start and earning rule."""
        if schedule != self.schedule:
            self.schedule_noted(schedule=schedule)

    @event("ScheduleNoted")
    def schedule_noted(self, schedule: dict[str, Any]) -> None:
        self.schedule = schedule

    @property
    def data_sharing_starts(self) -> date | None:
        raw = self.schedule.get("data_sharing_starts")
        return date.fromisoformat(raw) if raw else None

    @property
    def references(self) -> set[str]:
        """How attribution files name this participant: its id, or its NPI."""
        return {str(self.participant_id).upper(), *([self.registration["npi"].upper()] if self.registration.get("npi") else [])}

    def note_eligibility(self, eligible: bool, rule_version: str, milestone1_by: date | None) -> None:
        if {"eligible": eligible, "rule_version": rule_version, "milestone1_by": milestone1_by} != self.eligibility:
            self.eligibility_noted(eligible=eligible, rule_version=rule_version, milestone1_by=milestone1_by)
        self._decide_milestone_1()

    @event("EligibilityNoted")
    def eligibility_noted(self, eligible: bool, rule_version: str, milestone1_by: date | None) -> None:
        self.eligibility = {"eligible": eligible, "rule_version": rule_version, "milestone1_by": milestone1_by}

    def note_agreement(self, agreement: str, signed_at: datetime, document_id: str) -> None:
        if not any(s["agreement"] == agreement and s["document_id"] == document_id for s in self.signatures):
            self.record_agreement(agreement=agreement, signed_at=signed_at, document_id=document_id)
        self._decide_milestone_1()

    @event("AgreementNoted")
    def record_agreement(self, agreement: str, signed_at: datetime, document_id: str) -> None:
        self.signatures.append({"agreement": agreement, "signed_at": signed_at, "document_id": document_id,
                                "rejected": False})

    def note_review(self, agreement: str, document_id: str, rejected: bool) -> None:
        signature = next((s for s in self.signatures if s["agreement"] == agreement
                          and s["document_id"] == document_id), None)
        if signature is not None and signature["rejected"] != rejected:
            self.review_noted(agreement=agreement, document_id=document_id, rejected=rejected)
        self._decide_milestone_1()

    @event("ReviewNoted")
    def review_noted(self, agreement: str, document_id: str, rejected: bool) -> None:
        for signature in self.signatures:
            if signature["agreement"] == agreement and signature["document_id"] == document_id:
                signature["rejected"] = rejected

    def note_departure(self, kind: str, effective_on: date) -> None:
        if self.departure is None:
            self.departure_noted(kind=kind, effective_on=effective_on)
        self._decide_milestone_1()

    @event("DepartureNoted")
    def departure_noted(self, kind: str, effective_on: date) -> None:
        self.departure = {"kind": kind, "effective_on": effective_on}

    # -- the rule ----------------------------------------------------------------------------------------------
    def counted_agreements(self) -> dict[str, dict[str, Any]]:
        """Per agreement, the first signature staff did not reject."""
        counted: dict[str, dict[str, Any]] = {}
        for signature in self.signatures:
            if not signature["rejected"]:
                counted.setdefault(signature["agreement"], signature)
        return counted

    def _decide_milestone_1(self) -> None:
        if MILESTONE_1 in self.achieved or MILESTONE_1 in self.missed:
            return  # decided once, for good
        counted = self.counted_agreements()
        if not (self.eligibility and self.eligibility["eligible"]) or not REQUIRED_AGREEMENTS <= counted.keys():
            return
        completed_at = max(counted[kind]["signed_at"] for kind in REQUIRED_AGREEMENTS)
        deadline = self.eligibility["milestone1_by"]
        basis = sorted(counted[kind]["document_id"] for kind in REQUIRED_AGREEMENTS)
        if self.departure is not None and self.departure["effective_on"] <= plan_day(completed_at):
            self.miss(participant_id=self.participant_id, milestone=MILESTONE_1, reason=LEFT_BEFORE_COMPLETION,
                      completed_at=completed_at, deadline=deadline, rule_version=self.eligibility["rule_version"])
        elif deadline is None or plan_day(completed_at) > deadline:
            self.miss(participant_id=self.participant_id, milestone=MILESTONE_1, reason=COMPLETED_AFTER_DEADLINE,
                      completed_at=completed_at, deadline=deadline, rule_version=self.eligibility["rule_version"])
        else:
            self.achieve(participant_id=self.participant_id, milestone=MILESTONE_1, amount=MILESTONE_1_AMOUNT,
                         achieved_at=completed_at, quarter=quarter_of(completed_at),
                         rule_version=self.eligibility["rule_version"], deadline=deadline, basis=basis)

    @event("MilestoneAchieved")
    def achieve(self, participant_id: UUID, milestone: str, amount: Decimal, achieved_at: datetime, quarter: str,
                rule_version: str, deadline: date, basis: list[str]) -> None:
        self.achieved[milestone] = {"amount": amount, "achieved_at": achieved_at, "quarter": quarter,
                                    "rule_version": rule_version, "deadline": deadline, "basis": basis}

    @event("MilestoneMissed")
    def miss(self, participant_id: UUID, milestone: str, reason: str, completed_at: datetime, deadline: date | None,
             rule_version: str) -> None:
        self.missed[milestone] = {"reason": reason, "completed_at": completed_at, "deadline": deadline,
                                  "rule_version": rule_version}
