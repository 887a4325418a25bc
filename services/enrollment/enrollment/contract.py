"""What enrollment publishes (`dsi.enrollment.*`): participants' enrollment facts, members' plan eligibility and
attribution, and the program rules. Everything else it records stays in its store: interest-form details (contact
e-mail, counties, EHR), held signatures, member demographics.

Member CINs travel only on the member subjects (eligibility-*, attribution-recorded, alias-added): submissions
checks a file's member was a plan member attributed to the provider, milestones counts attributed members for
coverage, qip-share scopes each QIP entity's members. No names, birth dates or addresses."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal
from uuid import UUID

from dsi_shared.contracts import Contract, PublicEvent
from pydantic import Field


class ParticipantRegistered(PublicEvent):
    """A provider's interest form was recorded (`aggregate_id` is the participant)."""

    subject = "dsi.enrollment.participant-registered"
    recorded_as = "Participant.ParticipantRegistered"
    legal_name: str = Field(description="the payee's legal name (payments)")
    npi: str | None = Field(description="the organization's NPI")
    tin: str | None = Field(description="the payee's TIN (payments)")
    provider_type: str = Field(description="the rules document's provider type, e.g. snf or pcp")
    sending_facilities: list[str] = Field(description="HL7 MSH-4 ids the provider's files come from (submissions)")
    counties: list[str] = Field(default_factory=list, description=(
        "the counties it serves, as the interest form named them (the console's participants filter; empty in "
        "registrations published before it was added)"))
    individual_npis: list[str] | None = Field(default=None, description="a PCP group's clinicians (attribution)")
    organization_id: UUID | None = Field(default=None, description=(
        "a later round's organization: its first participation's id (null: the organization's first participation, "
        "or registered before it was published); payments shares the cap across it under `cap_scope` organization"))


class EligibilityDetermined(PublicEvent):
    """Whether the interest form makes the provider eligible, under which rules version."""

    subject = "dsi.enrollment.eligibility-determined"
    recorded_as = "Participant.EligibilityDetermined"
    eligible: bool
    rule_version: str
    reasons: list[str] = Field(description="why not eligible (empty when eligible)")


class AgreementSigned(PublicEvent):
    """One of the three agreements was signed (the same document twice is recorded once)."""

    subject = "dsi.enrollment.agreement-signed"
    recorded_as = "Participant.AgreementSigned"
    agreement: str = Field(description="DSA, PARTICIPATION or DATA_SHARING_TERMS")
    signed_at: datetime
    document_id: str


class AgreementReviewed(PublicEvent):
    """A signed agreement was accepted or rejected (by staff, the contracts system or the DSA list)."""

    subject = "dsi.enrollment.agreement-reviewed"
    recorded_as = "Participant.AgreementReviewed"
    agreement: str
    document_id: str
    decision: Literal["accepted", "rejected"]
    reason: str | None
    accepted_at: datetime | None = Field(default=None, description="when the counterparty accepted, if it said")


class AgreementDueDateSet(PublicEvent):
    """The participant's own date to have its agreements signed and accepted (A2.4)."""

    subject = "dsi.enrollment.agreement-due-date-set"
    recorded_as = "Participant.AgreementDueDateSet"
    due_on: date
    reason: str


class ParticipantDeparted(PublicEvent):
    """The participant left the program (withdrew or was terminated) as of a date."""

    subject = "dsi.enrollment.participant-departed"
    recorded_as = "Participant.ParticipantDeparted"
    kind: str
    effective_on: date


class RulesPublished(PublicEvent):
    """A version of the program rules document (effective-dated; a correction too)."""

    subject = "dsi.enrollment.rules-published"
    recorded_as = "ProgramRules.RulesPublished"
    document: dict[str, Any] = Field(description="the whole rules document (`dsi_shared.rulebook.RulesDocument`)")
    reason: str


class _Span(PublicEvent):
    cin: str = Field(description="the member's Medi-Cal CIN")
    start: date
    end: date | None


class EligibilityOpened(_Span):
    """A member's plan eligibility span began (from the 834)."""

    subject = "dsi.enrollment.eligibility-opened"
    recorded_as = "Member.EligibilityOpened"


class EligibilityChanged(_Span):
    """A member's eligibility span changed (its end, most often)."""

    subject = "dsi.enrollment.eligibility-changed"
    recorded_as = "Member.EligibilityChanged"


class EligibilityClosed(_Span):
    """A member's eligibility span was terminated."""

    subject = "dsi.enrollment.eligibility-closed"
    recorded_as = "Member.EligibilityClosed"


class AttributionRecorded(_Span):
    """A member's assignment span: `kind` pcp (to a provider, by NPI) or qip (to a QIP entity)."""

    subject = "dsi.enrollment.attribution-recorded"
    recorded_as = "Member.AttributionRecorded"
    kind: str
    assignee: str


class AliasAdded(PublicEvent):
    """A member's earlier (frozen) CIN now names the member `cin`."""

    subject = "dsi.enrollment.alias-added"
    recorded_as = "Member.AliasAdded"
    cin: str
    frozen_cin: str


CONTRACT = Contract("enrollment", (
    ParticipantRegistered, EligibilityDetermined, AgreementSigned, AgreementReviewed, AgreementDueDateSet,
    ParticipantDeparted, RulesPublished, EligibilityOpened, EligibilityChanged, EligibilityClosed, AttributionRecorded,
    AliasAdded,
))
