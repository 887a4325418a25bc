"""The auditor's independent re-derivation (DESIGN.md §3): the upstream facts — enrollment's and submissions'
published events, read back from their own stores — run through this service's handlers into a scratch store in
memory, giving each participant's Milestone 1 and credit ledger as they follow from those facts alone. The audit
compares them with what this service recorded."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from itertools import islice
from typing import Any
from uuid import UUID

from dsi_shared.events import IncomingEvent
from dsi_shared.store import FastRepository
from dsi_shared.unitofwork import unit_of_work
from eventsourcing.application import Repository

from milestones.application import Milestones
from milestones.domain import MILESTONE_1, ParticipantProgress
from milestones.handlers import SUBSCRIPTIONS
from milestones.ledger import CreditLedger

UPSTREAMS = ("enrollment", "submissions")
WINDOW = 2000  # upstream events handled before their new events are saved to the scratch store


class _Scratch(Milestones):
    """The scratch store: no snapshots (they pay nothing in memory; rosters and ledgers then load through the unit of
    work like the rest), and aggregates kept across windows, as a consumer keeps them across batches: the rules copy
    every handler reads is rebuilt once, not once per event."""

    def construct_repository(self) -> Repository[UUID]:
        repository = super().construct_repository()
        assert isinstance(repository, FastRepository)
        repository.kept = self.aggregate_cache()
        return repository


def shadow_from(upstream: Callable[[str], Iterable[IncomingEvent]]) -> Milestones:
    """A scratch milestones store fed only with the upstream events this service subscribes to.

    The events are handled as the consumer handles a fetched batch (`unitofwork`): a handler sees what earlier
    events changed, exactly as if each had been saved alone, and a window's new events are saved together, so an
    aggregate is not rebuilt from the scratch store for every event that touches it."""
    shadow = _Scratch("memory://", {"IS_SNAPSHOTTING_ENABLED": "n"})
    subscriptions = {s.subject: s for s in SUBSCRIPTIONS}
    handled = ((subscriptions[event.type], event) for service in UPSTREAMS for event in upstream(service)
               if event.type in subscriptions)
    while window := list(islice(handled, WINDOW)):
        with unit_of_work(shadow.repository) as work:
            for subscription, event in window:
                work.keep(subscription.deliver(shadow, event))
        shadow.save(*work.events)
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
