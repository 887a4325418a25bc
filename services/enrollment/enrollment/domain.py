"""Participants (DOMAIN.md A1, A2): interest form, eligibility verdict, agreements, withdrawal.

Also ProviderIdentity: one per NPI (or TIN when there is no NPI), so a duplicate registration is refused and a
DSA signed before the interest form is kept until the participant appears.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from dsi_shared.errors import PermanentError, Unprocessable
from eventsourcing.domain import Aggregate, event

# A2.3: the plan's letter of agreement, the DxF Data Sharing Agreement, the HIE participation agreement.
AGREEMENTS = ("LOA", "DSA", "HIE")
HELD_BEFORE_FORM = frozenset({"DSA"})  # "The DSA may be signed at any time, even before the interest form."
ACTIVE, INELIGIBLE, WITHDRAWN, TERMINATED = "eligible", "ineligible", "withdrawn", "terminated"


class InvalidAgreement(Unprocessable):
    pass


class DuplicateParticipant(PermanentError):
    def __init__(self, key: str, participant_id: UUID) -> None:
        super().__init__(f"a participant with this {key.split(':')[0].upper()} is already registered: {participant_id}")
        self.participant_id = participant_id


class InvalidTransition(PermanentError):
    pass


def check_signature(agreement: str, signed_at: datetime) -> None:
    if agreement not in AGREEMENTS:
        raise InvalidAgreement(f"agreement must be one of {', '.join(AGREEMENTS)}")
    if signed_at.tzinfo is None:
        raise InvalidAgreement("signed_at must carry a UTC offset")


class Participant(Aggregate):
    @event("ParticipantRegistered")
    def __init__(self, legal_name: str, npi: str | None, tin: str | None, provider_type: str,
                 counties: list[str], ehr_product: str | None, is_hospital: bool, umbrella_group: str | None,
                 manages_ehr: bool, sending_facilities: list[str], contact_email: str, submitted_on: date,
                 facility_kind: str | None = None) -> None:
        self.legal_name = legal_name
        self.npi = npi
        self.tin = tin
        self.provider_type = provider_type
        self.counties = counties
        self.ehr_product = ehr_product
        self.is_hospital = is_hospital
        self.facility_kind = facility_kind
        self.umbrella_group = umbrella_group
        self.manages_ehr = manages_ehr
        self.sending_facilities = sending_facilities
        self.contact_email = contact_email
        self.submitted_on = submitted_on
        self.eligible: bool | None = None
        self.reasons: list[str] = []
        self.rule_version: str | None = None
        self.schedule: dict[str, Any] | None = None
        self.signatures: list[dict[str, Any]] = []
        self.milestones: dict[str, dict[str, Any]] = {}
        self.departure: dict[str, Any] | None = None

    # -- eligibility (A1) ---------------------------------------------------------------------------------
    @event("EligibilityDetermined")
    def determine_eligibility(self, eligible: bool, reasons: list[str], rule_version: str,
                              schedule: dict[str, Any] | None) -> None:
        self.eligible, self.reasons, self.rule_version, self.schedule = eligible, reasons, rule_version, schedule

    @property
    def status(self) -> str:
        if self.departure is not None:
            return str(self.departure["kind"])
        return ACTIVE if self.eligible else INELIGIBLE

    # -- agreements (A2) ----------------------------------------------------------------------------------
    def sign(self, agreement: str, signed_at: datetime, document_id: str, channel: str) -> bool:
        """Record a signature; the same signature (agreement + document) reported twice is one (A2)."""
        check_signature(agreement, signed_at)
        if self._signature(agreement, document_id) is not None:
            return False
        self.record_signature(agreement=agreement, signed_at=signed_at, document_id=document_id, channel=channel)
        return True

    @event("AgreementSigned")
    def record_signature(self, agreement: str, signed_at: datetime, document_id: str, channel: str) -> None:
        self.signatures.append({"agreement": agreement, "signed_at": signed_at, "document_id": document_id,
                                "channel": channel, "review": None})

    def review(self, agreement: str, document_id: str, decision: str, reason: str | None) -> bool:
        """Program staff accept or reject a signature. A rejected signature does not count toward Milestone 1."""
        signature = self._signature(agreement, document_id)
        if signature is None:
            raise InvalidAgreement("no such signature for this participant")
        if decision not in {"accepted", "rejected"}:
            raise InvalidAgreement("decision must be accepted or rejected")
        if decision == "rejected" and not (reason or "").strip():
            raise InvalidAgreement("a rejection needs a reason")
        if signature["review"] and signature["review"]["decision"] == decision:
            return False
        self.record_review(agreement=agreement, document_id=document_id, decision=decision, reason=reason)
        return True

    @event("AgreementReviewed")
    def record_review(self, agreement: str, document_id: str, decision: str, reason: str | None) -> None:
        signature = self._signature(agreement, document_id)
        assert signature is not None
        signature["review"] = {"decision": decision, "reason": reason}

    def _signature(self, agreement: str, document_id: str) -> dict[str, Any] | None:
        return next((s for s in self.signatures if s["agreement"] == agreement and s["document_id"] == document_id), None)

    def agreement(self, kind: str) -> dict[str, Any] | None:
        """The signature that counts: the first one of that agreement not rejected by staff."""
        return next((s for s in self.signatures if s["agreement"] == kind
                     and (s["review"] or {}).get("decision") != "rejected"), None)

    # -- leaving the program ------------------------------------------------------------------------------
    def leave(self, kind: str, effective_on: date, reason: str) -> None:
        if kind not in {WITHDRAWN, TERMINATED}:
            raise InvalidTransition("kind must be withdrawn or terminated")
        if self.departure is not None:
            raise InvalidTransition(f"participant already {self.departure['kind']} on {self.departure['effective_on']}")
        self.departed(kind=kind, effective_on=effective_on, reason=reason)

    @event("ParticipantDeparted")
    def departed(self, kind: str, effective_on: date, reason: str) -> None:
        self.departure = {"kind": kind, "effective_on": effective_on, "reason": reason}

    # -- what milestones tells us -------------------------------------------------------------------------
    def note_milestone(self, milestone: str, outcome: str, details: dict[str, Any]) -> bool:
        if self.milestones.get(milestone, {}).get("outcome") == outcome:
            return False
        self.record_milestone(milestone=milestone, outcome=outcome, details=details)
        return True

    @event("MilestoneNoted")
    def record_milestone(self, milestone: str, outcome: str, details: dict[str, Any]) -> None:
        self.milestones[milestone] = {"outcome": outcome, **details}


class ProviderIdentity(Aggregate):
    """An NPI or TIN: who claimed it, and DSA signatures reported before any participant had it."""

    @staticmethod
    def create_id(key: str) -> UUID:
        return uuid5(NAMESPACE_URL, f"/dsi/enrollment/identity/{key}")

    @event("IdentityOpened")
    def __init__(self, key: str) -> None:
        self.key = key
        self.participant_id: UUID | None = None
        self.held: list[dict[str, Any]] = []

    def claim(self, participant_id: UUID) -> list[dict[str, Any]]:
        """Claim for a new participant; returns the signatures held for it."""
        if self.participant_id is not None and self.participant_id != participant_id:
            raise DuplicateParticipant(self.key, self.participant_id)
        held = [h for h in self.held if not h["attached"]]
        self.claimed(participant_id=participant_id)
        return held

    @event("IdentityClaimed")
    def claimed(self, participant_id: UUID) -> None:
        self.participant_id = participant_id
        for held in self.held:
            held["attached"] = True

    def hold(self, agreement: str, signed_at: datetime, document_id: str) -> bool:
        check_signature(agreement, signed_at)
        if agreement not in HELD_BEFORE_FORM:
            raise InvalidAgreement(f"only the {', '.join(sorted(HELD_BEFORE_FORM))} may be signed before the interest form")
        if any(h["document_id"] == document_id and h["agreement"] == agreement for h in self.held):
            return False
        self.signature_held(agreement=agreement, signed_at=signed_at, document_id=document_id)
        return True

    @event("SignatureHeld")
    def signature_held(self, agreement: str, signed_at: datetime, document_id: str) -> None:
        self.held.append({"agreement": agreement, "signed_at": signed_at, "document_id": document_id, "attached": False})


def identity_keys(npi: str | None, tin: str | None) -> list[str]:
    """NPI identifies an organization; TIN only when it has no NPI (one TIN may cover several NPIs)."""
    if npi:
        return [f"npi:{npi}"]
    if tin:
        return [f"tin:{tin}"]
    raise PermanentError("an interest form needs an NPI or a TIN")


def participant_id(value: str | UUID) -> UUID:
    try:
        return value if isinstance(value, UUID) else UUID(str(value))
    except ValueError:
        raise PermanentError("participant_id is not a UUID") from None
