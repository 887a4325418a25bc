"""Upstream facts → the ledger: registrations open accounts, achieved milestones become payments."""

from __future__ import annotations

from typing import Any

from dsi_shared.consumer import Subscription
from dsi_shared.contracts import Delivered
from dsi_shared.rulebook import RulesReader
from dsi_shared.store import ServiceApplication
from enrollment.contract import ParticipantRegistered, RulesPublished
from eventsourcing.domain import Aggregate
from milestones.contract import EvaluationValidated, MilestoneAchieved

from payments.application import Payments


def on_participant_registered(app: ServiceApplication, delivered: Delivered[ParticipantRegistered]) -> list[Aggregate]:
    """The payee, and the organization a later round shares its cap with (absent in older registrations)."""
    assert isinstance(app, Payments)
    data = delivered.data
    return app.register(data.aggregate_id, data.legal_name, data.npi, data.tin, data.organization_id)


def on_milestone_achieved(app: ServiceApplication, delivered: Delivered[MilestoneAchieved]) -> list[Aggregate]:
    assert isinstance(app, Payments)
    data = delivered.data
    return app.pay(data.participant_id, data.milestone, data.amount, data.quarter, data.rule_version,
                   source_event=delivered.event.id, covers=[f"agreement:{d}" for d in data.basis])


def on_evaluation_validated(app: ServiceApplication, delivered: Delivered[EvaluationValidated]) -> list[Aggregate]:
    """A quarter's evaluation, validated by program staff, becomes a payment (when it earned anything)."""
    assert isinstance(app, Payments)
    data = delivered.data
    if data.earned <= 0 or not data.milestone:
        return []  # recorded by milestones with its figures; nothing to pay
    return app.pay(data.participant_id, data.milestone, data.earned, data.quarter, data.rule_version,
                   source_event=delivered.event.id, covers=[f"submission:{c}" for c in data.credits])


def on_rules_published(app: ServiceApplication, delivered: Delivered[RulesPublished]) -> list[Aggregate]:
    """The cap is program data: kept here, applied as of the quarter each payment is for. Payments held because no
    rules were in force for their quarter are decided now."""
    assert isinstance(app, Payments)
    copy = RulesReader.copy_in(app)
    if not copy.note(delivered.data.document):
        return [copy] if copy.pending_events else []
    return [copy, *app.settle_all_held(copy.book, copy.version)]


SUBSCRIPTIONS: tuple[Subscription[Any], ...] = (
    Subscription("DSI_ENROLLMENT", RulesPublished.subject, RulesPublished, on_rules_published),
    Subscription("DSI_ENROLLMENT", ParticipantRegistered.subject, ParticipantRegistered, on_participant_registered),
    Subscription("DSI_MILESTONES", MilestoneAchieved.subject, MilestoneAchieved, on_milestone_achieved),
    Subscription("DSI_MILESTONES", EvaluationValidated.subject, EvaluationValidated, on_evaluation_validated),
)
