"""A consumer's unit of work: what the handlers of one fetched batch changed, not yet saved.

The consumer runs a batch's handlers in stream order and saves all their events, with every message's tracking
record, in one transaction (group commit). A handler loads aggregates through the repository
(`app.repository.get`, `app.find`, the services' `*_or_new` helpers), so while a unit of work is open in the
current thread the repository answers from it first: a handler sees what an earlier message of the batch changed
or created, exactly as if that message had been saved alone. `ids_created_with` lists aggregates created in the
batch after the stored ones. Other threads (HTTP commands) never see it: it lives in a context variable.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate

_CURRENT: ContextVar[UnitOfWork | None] = ContextVar("dsi_unit_of_work", default=None)


class UnitOfWork:
    def __init__(self, owner: object) -> None:
        self.owner = owner  # the repository it serves: several applications may share a process (tests)
        self.aggregates: dict[UUID, Aggregate] = {}
        self.events: list[Any] = []  # every new event, in the order the handlers made them
        self.created: list[tuple[UUID, type[Any]]] = []  # aggregates created in this batch, with their first event
        self.caught_up = False  # the repository's kept aggregates were brought up to the store's end for this work

    def keep(self, aggregates: Iterable[Aggregate], stamp: Any = None) -> None:
        """A handler's result: its aggregates are what later handlers of the batch load; their new events are
        taken now (`stamp`ed with the current message's trace), so the store records them in handler order."""
        for aggregate in aggregates:
            self.aggregates[aggregate.id] = aggregate
            for event in aggregate.collect_events():
                if event.originator_version == 1:
                    self.created.append((event.originator_id, type(event)))
                self.events.append(stamp(event) if stamp else event)

    def created_with(self, created_event: type[Any]) -> list[UUID]:
        return [aggregate_id for aggregate_id, kind in self.created if kind is created_event]


@contextmanager
def unit_of_work(owner: object) -> Iterator[UnitOfWork]:
    """Open a unit of work for `owner` (an application's repository) in this thread until the block ends."""
    work = UnitOfWork(owner)
    token = _CURRENT.set(work)
    try:
        yield work
    finally:
        _CURRENT.reset(token)


def current(owner: object) -> UnitOfWork | None:
    """The unit of work open in this thread for `owner`, if any."""
    work = _CURRENT.get()
    return work if work is not None and work.owner is owner else None
