"""The auditor's independent re-derivation (DESIGN.md §3): the upstream facts — enrollment's and submissions'
published events, read back from their own stores — run through this service's handlers into a scratch store in
memory, giving each participant's Milestone 1 and credit ledger as they follow from those facts alone. The audit
compares them with what this service recorded."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from dsi_shared.events import IncomingEvent

from milestones.application import Milestones
from milestones.domain import MILESTONE_1, ParticipantProgress
from milestones.handlers import SUBSCRIPTIONS
from milestones.ledger import CreditLedger

UPSTREAMS = ("enrollment", "submissions")


def shadow_from(upstream: Callable[[str], Iterable[IncomingEvent]]) -> Milestones:
    """A scratch milestones store fed only with the upstream events this service subscribes to."""
    shadow = Milestones("memory://")
    subscriptions = {s.subject: s for s in SUBSCRIPTIONS}
    for service in UPSTREAMS:
        for event in upstream(service):
            subscription = subscriptions.get(event.type)
            if subscription is not None:
                shadow.save(*subscription.deliver(shadow, event))
    return shadow


def milestone1(progress: ParticipantProgress | None) -> str:
    """Milestone 1 as one comparable line."""
    if progress is None:
        return "no facts"
    if MILESTONE_1 in progress.achieved:
        m1 = progress.achieved[MILESTONE_1]
        return f"achieved {m1['achieved_at'].isoformat()} ${m1['amount']} ({m1['rule_version']})"
    if MILESTONE_1 in progress.missed:
        return f"missed: {progress.missed[MILESTONE_1]['reason']}"
    return "not yet"


def credited(shadow: Milestones, participant_id: Any) -> set[str]:
    """The submissions the upstream facts credit to a participant (ever: a later reversal is recovered, not undone)."""
    ledger = shadow.find(CreditLedger.create_id(participant_id), CreditLedger)
    return set(ledger.credits) if ledger is not None else set()
