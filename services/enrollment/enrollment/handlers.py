"""NATS → commands. Each handler returns the aggregates whose new events are saved with the tracking record."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from dsi_shared.consumer import Subscription
from dsi_shared.errors import PermanentError
from dsi_shared.events import IncomingEvent
from dsi_shared.identifiers import Identifier, Npi, Tin
from dsi_shared.store import ServiceApplication
from eventsourcing.domain import Aggregate
from pydantic import BaseModel, ConfigDict, model_validator

from enrollment.application import Enrollment
from enrollment.domain import BY_CONTRACTS_SYSTEM, participant_id

CONTRACTS_SYSTEM_ACCEPTANCE = "accepted by the contracts system"


class _AgreementMessage(BaseModel):
    """What the contracts system's messages share: the agreement, and the provider named by
    `participant_id`, or by `npi`/`tin` (a DSA may be signed before the interest form)."""

    model_config = ConfigDict(extra="ignore")
    participant_id: Identifier | None = None
    npi: Npi | None = None
    tin: Tin | None = None
    agreement: str

    @model_validator(mode="after")
    def names_the_provider(self) -> _AgreementMessage:
        if not (self.participant_id or self.npi or self.tin):
            raise PermanentError("participant_id: missing (or name the provider by npi/tin)")
        return self


class AgreementSignedMessage(_AgreementMessage):
    """`dsi.in.agreement-signed` from the e-signature/contracts system (DESIGN.md §4)."""

    signed_at: datetime
    document_id: Identifier


def on_agreement_signed(app: ServiceApplication, event: IncomingEvent) -> list[Aggregate]:
    assert isinstance(app, Enrollment)
    message = AgreementSignedMessage.model_validate(event.data)
    if message.participant_id:
        participant = app.participant(participant_id(message.participant_id))
        participant.sign(message.agreement, message.signed_at, message.document_id, channel="nats")
        return [participant]
    _, aggregates = app.sign_by_identity(message.npi, message.tin, message.agreement, message.signed_at,
                                         message.document_id, "nats")
    return aggregates


class AgreementAcceptedMessage(_AgreementMessage):
    """`dsi.in.agreement-accepted` from the contracts system: the counterparty accepted a signed agreement
    (A2.4: "Once all these documents have been signed and accepted"); `accepted_at` with a UTC offset."""

    document_id: Identifier
    accepted_at: datetime

    @model_validator(mode="after")
    def accepted_at_has_an_offset(self) -> AgreementAcceptedMessage:
        if self.accepted_at.tzinfo is None:
            raise PermanentError("accepted_at: must carry a UTC offset")
        return self


def on_agreement_accepted(app: ServiceApplication, event: IncomingEvent) -> list[Aggregate]:
    """Recorded as an AgreementReviewed (accepted, decided by the contracts system); an acceptance of a signature
    not recorded yet is held and applied when the signature arrives."""
    assert isinstance(app, Enrollment)
    m = AgreementAcceptedMessage.model_validate(event.data)
    if m.participant_id:
        participant = app.participant(participant_id(m.participant_id))
        participant.accept(m.agreement, m.document_id, CONTRACTS_SYSTEM_ACCEPTANCE, BY_CONTRACTS_SYSTEM, m.accepted_at)
        return [participant]
    _, aggregates = app.accept_by_identity(m.npi, m.tin, m.agreement, m.document_id, CONTRACTS_SYSTEM_ACCEPTANCE,
                                           BY_CONTRACTS_SYSTEM, m.accepted_at)
    return aggregates


def on_milestone_decided(app: ServiceApplication, event: IncomingEvent) -> list[Aggregate]:
    """Milestones tells enrollment what became of Milestone 1, so the participant record shows it."""
    assert isinstance(app, Enrollment)
    data = event.data
    participant = app.participant(participant_id(data["participant_id"]))
    outcome = "achieved" if event.type.endswith("milestone-achieved") else "missed"
    details: dict[str, Any] = {k: data[k] for k in ("achieved_at", "amount", "quarter", "rule_version", "reason", "completed_at",
                                    "deadline") if k in data}
    participant.note_milestone(data["milestone"], outcome, details)
    return [participant]


SUBSCRIPTIONS = (
    Subscription("DSI_IN", "dsi.in.agreement-signed", on_agreement_signed),
    Subscription("DSI_IN", "dsi.in.agreement-accepted", on_agreement_accepted),
    Subscription("DSI_MILESTONES", "dsi.milestones.milestone-achieved", on_milestone_decided),
    Subscription("DSI_MILESTONES", "dsi.milestones.milestone-missed", on_milestone_decided),
)
