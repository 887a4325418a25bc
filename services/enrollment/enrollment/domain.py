"""Participants (DOMAIN.md A1, A2): interest form, eligibility verdict, agreements and their acceptance, due dates,
withdrawal.

Also ProviderIdentity: one per NPI (or TIN when there is no NPI). It lists every application made under it (an
ineligible provider may apply again; an organization may join a later round for another provider type), and keeps
a DSA signed, or an acceptance reported, before the interest form until the participant appears.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from dsi_shared.errors import PermanentError, Unprocessable
from dsi_shared.plantime import EARLIEST_YEAR, LATEST_YEAR, in_plan_years
from eventsourcing.domain import Aggregate, event

# A2.3: the plan's letter of agreement, the DxF Data Sharing Agreement, the HIE participation agreement.
AGREEMENTS = ("LOA", "DSA", "HIE")
HELD_BEFORE_FORM = frozenset({"DSA"})  # "The DSA may be signed at any time, even before the interest form."
# "Deadline to Sign Alliance Agreements": the agreements of the plan's program; the statewide DSA "may be signed at
# any time", so it is never flagged late.
PLAN_AGREEMENTS = ("LOA", "HIE")
ACTIVE, INELIGIBLE, WITHDRAWN, TERMINATED = "eligible", "ineligible", "withdrawn", "terminated"
ACCEPTED, REJECTED = "accepted", "rejected"
AWAITING_REVIEW = "awaiting_review"
# who decided a review (AgreementReviewed.decided_by)
BY_STAFF, BY_CONTRACTS_SYSTEM, BY_DSA_LIST = "staff", "contracts-system", "dsa-signatory-list"


class InvalidAgreement(Unprocessable):
    pass


class DuplicateParticipant(PermanentError):
    def __init__(self, key: str, participant_id: UUID) -> None:
        super().__init__(f"an eligible participant with this {key.split(':')[0].upper()} is already registered for "
                         f"this provider type: {participant_id}")
        self.participant_id = participant_id


class InvalidTransition(PermanentError):
    pass


def check_signature(agreement: str, signed_at: datetime) -> None:
    if agreement not in AGREEMENTS:
        raise InvalidAgreement(f"agreement must be one of {', '.join(AGREEMENTS)}")
    if signed_at.tzinfo is None:
        raise InvalidAgreement("signed_at must carry a UTC offset")
    if not in_plan_years(signed_at):
        raise InvalidAgreement(f"signed_at: outside the years {EARLIEST_YEAR}-{LATEST_YEAR}")


class Participant(Aggregate):
    @event("ParticipantRegistered")
    def __init__(self, legal_name: str, npi: str | None, tin: str | None, provider_type: str,
                 counties: list[str], ehr_product: str | None, is_hospital: bool, umbrella_group: str | None,
                 manages_ehr: bool, sending_facilities: list[str], contact_email: str, submitted_on: date,
                 facility_kind: str | None = None, previous_application: UUID | None = None,
                 organization_id: UUID | None = None, individual_npis: list[str] | None = None) -> None:
        """`previous_application`: the earlier, ineligible application this one applies again after (A1).
        `organization_id`: for a later round of an organization already participating under another provider
        type, its first participation's id (None for an organization's first participation)."""
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
        self.previous_application = previous_application
        self.individual_npis = list(individual_npis or [])  # an umbrella group's individual PCPs, for attribution
        self.organization_id = organization_id
        self.eligible: bool | None = None
        self.reasons: list[str] = []
        self.rule_version: str | None = None
        self.flags: list[str] = []
        self.signatures: list[dict[str, Any]] = []
        self.milestones: dict[str, dict[str, Any]] = {}
        self.departure: dict[str, Any] | None = None
        self.held_acceptances: list[dict[str, Any]] = []
        self.due_date: dict[str, Any] | None = None
        self.signing_extension: dict[str, Any] | None = None

    @property
    def organization(self) -> UUID:
        """The organization this participation belongs to: its first participation's id."""
        return self.organization_id or self.id

    # -- eligibility (A1) ---------------------------------------------------------------------------------
    @event("EligibilityDetermined")
    def determine_eligibility(self, eligible: bool, reasons: list[str], rule_version: str,
                              schedule: dict[str, Any] | None, flags: list[str] | None = None) -> None:
        """`schedule`: only in events recorded before rules were effective-dated (a frozen copy, no longer used).
        `flags`: what staff should look at without it making the form ineligible."""
        self.eligible, self.reasons, self.rule_version = eligible, reasons, rule_version
        self.flags = list(flags or [])

    @property
    def status(self) -> str:
        if self.departure is not None:
            return str(self.departure["kind"])
        return ACTIVE if self.eligible else INELIGIBLE

    # -- agreements (A2) ----------------------------------------------------------------------------------
    def sign(self, agreement: str, signed_at: datetime, document_id: str, channel: str) -> bool:
        """Record a signature; the same signature (agreement + document) reported twice is one (A2). An acceptance
        that arrived before the signature is applied now."""
        check_signature(agreement, signed_at)
        if self._signature(agreement, document_id) is not None:
            return False
        self.record_signature(agreement=agreement, signed_at=signed_at, document_id=document_id, channel=channel)
        held = next((h for h in self.held_acceptances if (h["agreement"], h["document_id"]) == (agreement, document_id)),
                    None)
        if held is not None:
            self.record_review(agreement=agreement, document_id=document_id, decision=ACCEPTED, reason=held["reason"],
                               decided_by=held["decided_by"], accepted_at=held["accepted_at"])
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
        if decision not in {ACCEPTED, REJECTED}:
            raise InvalidAgreement("decision must be accepted or rejected")
        if decision == REJECTED and not (reason or "").strip():
            raise InvalidAgreement("a rejection needs a reason")
        if signature["review"] and signature["review"]["decision"] == decision:
            return False
        self.record_review(agreement=agreement, document_id=document_id, decision=decision, reason=reason,
                           decided_by=BY_STAFF)
        return True

    def accept_signed(self, reason: str) -> list[dict[str, str]]:
        """One staff action after a look at them: accept every signed document not yet reviewed (one
        AgreementReviewed each). Rejected and already accepted documents are left as they are."""
        pending = [s for s in self.signatures if s["review"] is None]
        for signature in pending:
            self.record_review(agreement=signature["agreement"], document_id=signature["document_id"],
                               decision=ACCEPTED, reason=reason, decided_by=BY_STAFF)
        return [{"agreement": s["agreement"], "document_id": s["document_id"]} for s in pending]

    def accept(self, agreement: str, document_id: str, reason: str, decided_by: str,
               accepted_at: datetime | None = None) -> bool:
        """An acceptance from outside program staff (the contracts system, the DSA signatory list). A signature
        not known yet: the acceptance is held and applied when the signature arrives. A staff decision already
        taken (accepted or rejected) stands: the acceptance changes nothing."""
        if agreement not in AGREEMENTS:
            raise InvalidAgreement(f"agreement must be one of {', '.join(AGREEMENTS)}")
        if accepted_at is not None and accepted_at.tzinfo is None:
            raise InvalidAgreement("accepted_at must carry a UTC offset")
        if accepted_at is not None and not in_plan_years(accepted_at):
            raise InvalidAgreement(f"accepted_at: outside the years {EARLIEST_YEAR}-{LATEST_YEAR}")
        signature = self._signature(agreement, document_id)
        if signature is None:
            if any((h["agreement"], h["document_id"]) == (agreement, document_id) for h in self.held_acceptances):
                return False
            self.acceptance_held(agreement=agreement, document_id=document_id, reason=reason, decided_by=decided_by,
                                 accepted_at=accepted_at)
            return True
        if signature["review"] is not None:
            return False
        self.record_review(agreement=agreement, document_id=document_id, decision=ACCEPTED, reason=reason,
                           decided_by=decided_by, accepted_at=accepted_at)
        return True

    @event("AcceptanceHeld")
    def acceptance_held(self, agreement: str, document_id: str, reason: str, decided_by: str,
                        accepted_at: datetime | None) -> None:
        self.held_acceptances.append({"agreement": agreement, "document_id": document_id, "reason": reason,
                                      "decided_by": decided_by, "accepted_at": accepted_at})

    @event("AgreementReviewed")
    def record_review(self, agreement: str, document_id: str, decision: str, reason: str | None,
                      decided_by: str = BY_STAFF, accepted_at: datetime | None = None) -> None:
        """`decided_by`: staff (every review recorded before acceptances came from elsewhere), contracts-system or
        dsa-signatory-list. `accepted_at`: when the counterparty accepted, when it said so."""
        signature = self._signature(agreement, document_id)
        assert signature is not None
        signature["review"] = {"decision": decision, "reason": reason, "decided_by": decided_by}
        if accepted_at is not None:
            signature["review"]["accepted_at"] = accepted_at
        self.held_acceptances = [h for h in self.held_acceptances
                                 if (h["agreement"], h["document_id"]) != (agreement, document_id)]

    def signature_of(self, agreement: str, document_id: str) -> dict[str, Any] | None:
        return self._signature(agreement, document_id)

    def _signature(self, agreement: str, document_id: str) -> dict[str, Any] | None:
        return next((s for s in self.signatures if s["agreement"] == agreement and s["document_id"] == document_id), None)

    def agreement(self, kind: str) -> dict[str, Any] | None:
        """The signature that counts: the first one of that agreement accepted, else the first awaiting review
        (signed, not rejected, not yet accepted). None when never signed or every signature was rejected."""
        usable = [s for s in self.signatures if s["agreement"] == kind and _decision(s) != REJECTED]
        return next((s for s in usable if _decision(s) == ACCEPTED), usable[0] if usable else None)

    def agreement_state(self, kind: str) -> dict[str, Any] | None:
        """What staff see per agreement: the signature that counts (or, when every one was rejected, the latest)
        with `signed` and `status` (accepted, rejected or awaiting_review). None when never signed."""
        signature = self.agreement(kind)
        if signature is None:
            signature = next((s for s in reversed(self.signatures) if s["agreement"] == kind), None)
        if signature is None:
            return None
        return {**signature, "signed": True, "status": _decision(signature) or AWAITING_REVIEW}

    def accepted(self, kind: str) -> bool:
        return any(s["agreement"] == kind and _decision(s) == ACCEPTED for s in self.signatures)

    # -- due dates (A2.4) -----------------------------------------------------------------------------------
    def set_due_date(self, due_on: date, reason: str) -> bool:
        """The participant's own agreement due date, set when the LOA is executed ("the provider's respective due
        date (to be determined during agreement execution)"). The same date again is no change."""
        if not reason.strip():
            raise InvalidTransition("reason: a due date needs a reason")
        if self.due_date is not None and self.due_date["due_on"] == due_on:
            return False
        self.agreement_due_date_set(due_on=due_on, reason=reason)
        return True

    @event("AgreementDueDateSet")
    def agreement_due_date_set(self, due_on: date, reason: str) -> None:
        self.due_date = {"due_on": due_on, "reason": reason}

    def extend_signing(self, until: date, reason: str) -> bool:
        """Staff allow plan agreements to be signed until `until` without being flagged late. Nothing is ever
        refused for lateness."""
        if not reason.strip():
            raise InvalidTransition("reason: an extension needs a reason")
        if self.signing_extension is not None and self.signing_extension["until"] == until:
            return False
        self.signing_extension_granted(until=until, reason=reason)
        return True

    @event("SigningExtensionGranted")
    def signing_extension_granted(self, until: date, reason: str) -> None:
        self.signing_extension = {"until": until, "reason": reason}

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
    """An NPI or TIN: the applications made under it, in order, and DSA signatures (and acceptances) reported
    before any participant had it."""

    @staticmethod
    def create_id(key: str) -> UUID:
        return uuid5(NAMESPACE_URL, f"/dsi/enrollment/identity/{key}")

    @event("IdentityOpened")
    def __init__(self, key: str) -> None:
        self.key = key
        self.participant_id: UUID | None = None  # the latest application
        self.participants: list[UUID] = []  # every application, oldest first
        self.held: list[dict[str, Any]] = []
        self.held_acceptances: list[dict[str, Any]] = []

    def claim(self, participant_id: UUID) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Add an application (whether another one may be made is the application's call: it needs the earlier
        participants); returns the signatures and acceptances held for it."""
        held = [h for h in self.held if not h["attached"]]
        acceptances = [h for h in self.held_acceptances if not h["attached"]]
        self.claimed(participant_id=participant_id)
        return held, acceptances

    @event("IdentityClaimed")
    def claimed(self, participant_id: UUID) -> None:
        self.participant_id = participant_id
        if participant_id not in self.participants:
            self.participants.append(participant_id)
        for held in [*self.held, *self.held_acceptances]:
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

    def hold_acceptance(self, agreement: str, document_id: str, reason: str, decided_by: str,
                        accepted_at: datetime | None) -> bool:
        """An acceptance naming the provider by NPI/TIN before its interest form: applied when the form arrives."""
        if agreement not in AGREEMENTS:
            raise InvalidAgreement(f"agreement must be one of {', '.join(AGREEMENTS)}")
        if accepted_at is not None and not in_plan_years(accepted_at):
            raise InvalidAgreement(f"accepted_at: outside the years {EARLIEST_YEAR}-{LATEST_YEAR}")
        if any((h["agreement"], h["document_id"]) == (agreement, document_id) for h in self.held_acceptances):
            return False
        self.identity_acceptance_held(agreement=agreement, document_id=document_id, reason=reason,
                                      decided_by=decided_by, accepted_at=accepted_at)
        return True

    @event("IdentityAcceptanceHeld")
    def identity_acceptance_held(self, agreement: str, document_id: str, reason: str, decided_by: str,
                                 accepted_at: datetime | None) -> None:
        self.held_acceptances.append({"agreement": agreement, "document_id": document_id, "reason": reason,
                                      "decided_by": decided_by, "accepted_at": accepted_at, "attached": False})


def _decision(signature: dict[str, Any]) -> str | None:
    review = signature["review"]
    return str(review["decision"]) if review else None


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
