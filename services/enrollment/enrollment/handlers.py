"""NATS → commands. Each handler returns the aggregates whose new events are saved with the tracking record."""

from __future__ import annotations

from datetime import datetime

from dsi_shared.consumer import Subscription
from dsi_shared.contracts import Delivered, Message
from dsi_shared.errors import PermanentError
from dsi_shared.events import to_jsonable
from dsi_shared.identifiers import Identifier, Npi, Tin
from dsi_shared.store import ServiceApplication
from eventsourcing.domain import Aggregate
from milestones.contract import MilestoneAchieved, MilestoneMissed
from pydantic import model_validator

from enrollment.application import Enrollment
from enrollment.domain import BY_CONTRACTS_SYSTEM, participant_id

CONTRACTS_SYSTEM_ACCEPTANCE = "accepted by the contracts system"


class _AgreementMessage(Message):
    """What the contracts system's messages share: the agreement, and the provider named by
    `participant_id`, or by `npi`/`tin` (a DSA may be signed before the interest form)."""

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


def on_agreement_signed(app: ServiceApplication, delivered: Delivered[AgreementSignedMessage]) -> list[Aggregate]:
    assert isinstance(app, Enrollment)
    message = delivered.data
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


def on_agreement_accepted(app: ServiceApplication, delivered: Delivered[AgreementAcceptedMessage]) -> list[Aggregate]:
    """Recorded as an AgreementReviewed (accepted, decided by the contracts system); an acceptance of a signature
    not recorded yet is held and applied when the signature arrives."""
    assert isinstance(app, Enrollment)
    m = delivered.data
    if m.participant_id:
        participant = app.participant(participant_id(m.participant_id))
        participant.accept(m.agreement, m.document_id, CONTRACTS_SYSTEM_ACCEPTANCE, BY_CONTRACTS_SYSTEM, m.accepted_at)
        return [participant]
    _, aggregates = app.accept_by_identity(m.npi, m.tin, m.agreement, m.document_id, CONTRACTS_SYSTEM_ACCEPTANCE,
                                           BY_CONTRACTS_SYSTEM, m.accepted_at)
    return aggregates


def on_milestone_achieved(app: ServiceApplication, delivered: Delivered[MilestoneAchieved]) -> list[Aggregate]:
    """Milestones tells enrollment what became of a milestone, so the participant record shows it."""
    assert isinstance(app, Enrollment)
    m = delivered.data
    participant = app.participant(participant_id(str(m.participant_id)))
    details = to_jsonable(m.model_dump(include={"achieved_at", "amount", "quarter", "rule_version", "deadline"}))
    participant.note_milestone(m.milestone, "achieved", details)
    return [participant]


def on_milestone_missed(app: ServiceApplication, delivered: Delivered[MilestoneMissed]) -> list[Aggregate]:
    assert isinstance(app, Enrollment)
    m = delivered.data
    participant = app.participant(participant_id(str(m.participant_id)))
    details = to_jsonable(m.model_dump(include={"reason", "completed_at", "deadline", "rule_version"}))
    participant.note_milestone(m.milestone, "missed", details)
    return [participant]


SUBSCRIPTIONS = (
    Subscription("DSI_IN", "dsi.in.agreement-signed", AgreementSignedMessage, on_agreement_signed),
    Subscription("DSI_IN", "dsi.in.agreement-accepted", AgreementAcceptedMessage, on_agreement_accepted),
    Subscription("DSI_MILESTONES", MilestoneAchieved.subject, MilestoneAchieved, on_milestone_achieved),
    Subscription("DSI_MILESTONES", MilestoneMissed.subject, MilestoneMissed, on_milestone_missed),
)
