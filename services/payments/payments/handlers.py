"""Upstream facts → the ledger: registrations open accounts, achieved milestones become payments."""

from __future__ import annotations

from decimal import Decimal
from uuid import UUID

from dsi_shared.consumer import Subscription
from dsi_shared.events import IncomingEvent
from dsi_shared.rulebook import RulesReader
from dsi_shared.store import ServiceApplication
from eventsourcing.domain import Aggregate

from payments.application import Payments


def on_participant_registered(app: ServiceApplication, event: IncomingEvent) -> list[Aggregate]:
    assert isinstance(app, Payments)
    data = event.data
    account = app.account_or_new(UUID(data["aggregate_id"]))
    account.record_payee(data["legal_name"], data.get("npi"), data.get("tin"))
    return [account]


def on_milestone_achieved(app: ServiceApplication, event: IncomingEvent) -> list[Aggregate]:
    assert isinstance(app, Payments)
    data = event.data
    account = app.account_or_new(UUID(data["participant_id"]))
    account.pay(data["milestone"], Decimal(data["amount"]), data["quarter"], data["rule_version"],
                source_event=event.id, cap=app.cap_for(data["quarter"]),
                covers=[f"agreement:{d}" for d in data.get("basis") or []])
    return [account]


def on_evaluation_validated(app: ServiceApplication, event: IncomingEvent) -> list[Aggregate]:
    """A quarter's evaluation, validated by program staff, becomes a payment (when it earned anything)."""
    assert isinstance(app, Payments)
    data = event.data
    if Decimal(data["earned"]) <= 0 or not data.get("milestone"):
        return []  # recorded by milestones with its figures; nothing to pay
    account = app.account_or_new(UUID(data["participant_id"]))
    account.pay(data["milestone"], Decimal(data["earned"]), data["quarter"], data["rule_version"],
                source_event=event.id, cap=app.cap_for(data["quarter"]),
                covers=[f"submission:{c}" for c in data.get("credits") or []])
    return [account]


def on_rules_published(app: ServiceApplication, event: IncomingEvent) -> list[Aggregate]:
    """The cap is program data: kept here, applied as of the quarter each payment is for."""
    assert isinstance(app, Payments)
    copy = RulesReader.copy_in(app)
    copy.note(event.data["document"])
    return [copy] if copy.pending_events else []


SUBSCRIPTIONS = (
    Subscription("DSI_ENROLLMENT", "dsi.enrollment.rules-published", on_rules_published),
    Subscription("DSI_ENROLLMENT", "dsi.enrollment.participant-registered", on_participant_registered),
    Subscription("DSI_MILESTONES", "dsi.milestones.milestone-achieved", on_milestone_achieved),
    Subscription("DSI_MILESTONES", "dsi.milestones.evaluation-validated", on_evaluation_validated),
)
