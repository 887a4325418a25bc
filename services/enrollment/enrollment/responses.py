"""Enrollment's response bodies, as the OpenAPI documents them (issue 12 §5). Dates and times are ISO 8601 strings,
money decimal strings, exactly as the views in `api.py` write them. Open-ended parts (a rules row, event facts)
are `dict[str, Any]` on purpose: their shape is the rules document's or the event's, not this API's."""

from __future__ import annotations

from typing import Any

from dsi_shared.http import Answer
from pydantic import Field


class AgreementState(Answer):
    signed: bool
    status: str = Field(description="accepted, rejected or awaiting_review")
    signed_at: str
    document_id: str
    channel: str
    review: dict[str, Any] | None
    late: bool = Field(description="a plan agreement signed after the signing deadline")


class Agreements(Answer):
    LOA: AgreementState | None
    DSA: AgreementState | None
    HIE: AgreementState | None


class DueDate(Answer):
    due_on: str | None
    set_by_staff: bool
    reason: str | None


class LateSignature(Answer):
    agreement: str
    document_id: str
    signed_on: str


class Signing(Answer):
    sign_plan_agreements_by: str | None
    extension: dict[str, Any] | None
    deadline: str | None
    late_signatures: list[LateSignature]


class Participant(Answer):
    id: str
    legal_name: str
    npi: str | None
    tin: str | None
    provider_type: str
    counties: list[str]
    ehr_product: str | None
    umbrella_group: str | None
    sending_facilities: list[str]
    individual_npis: list[str]
    submitted_on: str
    eligible: bool | None
    reasons: list[str]
    rule_version: str | None
    schedule: dict[str, Any] | None = Field(description="the type's row in the rules in force today, with the cap")
    cap_scope: str | None
    flags: list[str]
    status: str
    departure: dict[str, Any] | None
    previous_application: str | None
    later_applications: list[str]
    organization_id: str | None
    organization_participations: list[str]
    agreements: Agreements
    agreements_accepted: bool
    agreement_due_date: DueDate
    signing: Signing
    signatures: list[dict[str, Any]]
    milestone1: dict[str, Any] = Field(description="`achieved` and, once evaluated, the outcome's facts")


class HistoryEntry(Answer):
    version: int
    event: str
    recorded_at: str


class ParticipantDetail(Participant):
    history: list[HistoryEntry]


class ParticipantList(Answer):
    participants: list[Participant]
    count: int = Field(description="every participant matching the filters (this page holds at most `limit`)")
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last page")


class Signed(Participant):
    recorded: bool = Field(description="false: the same signature was already recorded")


class Changed(Participant):
    changed: bool


class Accepted(Participant):
    accepted: list[dict[str, str]] = Field(description="the documents this action accepted")


class EarlySignature(Answer):
    participant_id: str | None
    held_until_interest_form: bool


class SignatoryResult(Answer):
    """One row's outcome; an `unmatched` row has no document or confirmation (the route leaves them out)."""

    line: int
    matched_by: str | None = Field(description="npi, tin or name; null when unmatched")
    participant_id: str | None
    outcome: str = Field(description="recorded, recorded_for_review, already or unmatched")
    document_id: str | None = None
    needs_staff_confirmation: bool | None = None


class SignatoryReport(Answer):
    list_date: str
    rows: int
    matched: int
    weak_matches: int
    unmatched: int
    recorded: int
    already: int
    rejected: int
    errors: list[dict[str, Any]]
    ignored_columns: list[str]
    results: list[SignatoryResult]


class RulesVersion(Answer):
    version: str
    effective_from: str
    reason: str | None = Field(description="why staff published it")
    published_at: str | None = Field(description="when it was published (ISO 8601)")
    correction: bool = Field(description="effective before the day it was published: it reaches participants "
                                         "already enrolled, and what it changed is shown by the what-if")


class ProgramRules(Answer):
    current: dict[str, Any] = Field(description="the latest published rules document")
    in_force: dict[str, Any] | None
    versions: list[str]
    effective: list[RulesVersion]


class Published(Answer):
    version: str
    changed: bool


class MemberView(Answer):
    member_id: str
    requested_frozen_id: str | None
    frozen_ids: list[str]
    on: str
    member_on_date: bool
    eligibility: dict[str, Any] | None
    attributed_participant: str | None
    assigned_qip_entity: str | None
    spans: list[dict[str, Any]]
    attributions: list[dict[str, Any]]


class RosterReport(Answer):
    kind: str
    format: str
    sha256: str
    size: int
    rows: int
    accepted: int
    members_changed: int
    rejected: int
    errors: list[dict[str, Any]] = Field(description="per line: the line, the field and the error kind, never values")
    # Row outcomes (absent from reports recorded before they existed): accepted = added + changed + terminated +
    # unchanged; rows = accepted + not_applied + rejected.
    added: int | None = None
    changed: int | None = None
    terminated: int | None = None
    unchanged: int | None = None
    not_applied: int | None = None
    notes: list[dict[str, Any]] | None = Field(None, description="per line: outcome and the leniency applied or why "
                                                                "it was not applied (field codes, never values)")
    leniencies: dict[str, int] | None = Field(None, description="lines per leniency applied")
    provider_sources: dict[str, Any] | None = Field(None, description=(
        "ATR PCP lists: members attributed to their own attributedProvider NPI and to the Group's NPI (the fallback "
        "when a member names none), and the lines of the latter"))
    already_imported: bool
