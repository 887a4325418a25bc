"""`ServiceApplication.get_many`: many aggregates in one query, each exactly what `repository.get` rebuilds (on
PostgreSQL and SQLite)."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from dsi_shared.store import ServiceApplication
from eventsourcing.domain import Aggregate, event


class Tally(Aggregate):
    @event("Opened")
    def __init__(self, name: str) -> None:
        self.name, self.marks = name, []

    @event("Marked")
    def mark(self, n: int) -> None:
        self.marks.append(n)


class Store(ServiceApplication):
    name = "bulk"


def test_get_many_rebuilds_each_aggregate_as_get_does_and_leaves_out_unknown_ids(
        store_kind: str, store_url_for: Callable[[str], str]) -> None:
    app = Store(store_url_for("bulk"))
    tallies = [Tally(f"t{n}") for n in range(7)]
    for n, tally in enumerate(tallies):
        for mark in range(n):
            tally.mark(mark)
    app.save(*tallies)
    tallies[3].mark(99)
    app.save(tallies[3])
    unknown = uuid.uuid4()
    found = app.get_many([t.id for t in tallies] + [unknown, tallies[0].id], batch=3)
    assert set(found) == {t.id for t in tallies}
    for tally in tallies:
        expected = app.repository.get(tally.id)
        assert (found[tally.id].name, found[tally.id].marks, found[tally.id].version) == (
            expected.name, expected.marks, expected.version)
    app.close()
