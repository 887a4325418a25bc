"""The hash chain over a store's notification log (DESIGN.md §3): each kind of tampering, done directly on the
rows of SQLite and PostgreSQL, is detected and its position named; a log rewritten together with its chain is
caught by a checkpoint kept outside the database."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import pytest
from dsi_shared.chain import Checkpoint, HashChain
from dsi_shared.store import ServiceApplication
from eventsourcing.domain import Aggregate, event
from eventsourcing.postgres import PostgresProcessRecorder

pytestmark = pytest.mark.integration


class Note(Aggregate):
    @event("Written")
    def __init__(self, text: str) -> None:
        self.text = text


class Notebook(ServiceApplication):
    name = "notebook"


@pytest.fixture
def book(store_kind: str, store_url_for: Any) -> Iterator[Notebook]:
    app = Notebook(store_url_for("notebook"))
    for n in range(1, 11):
        app.save(Note(f"note {n}: alpha"))
    yield app
    app.close()


class Rows:
    """Direct access to the stored event rows, as someone with database access could tamper with them."""

    def __init__(self, app: ServiceApplication) -> None:
        self.recorder = app.process_recorder
        self.pg = isinstance(self.recorder, PostgresProcessRecorder)
        self.table = self.recorder.events_table_name  # type: ignore[attr-defined]
        self.id = "notification_id" if self.pg else "rowid"
        self.mark = "%s" if self.pg else "?"

    def sql(self, statement: str, params: tuple[Any, ...] = ()) -> list[Any]:
        statement = statement.replace("{t}", self.table).replace("{id}", self.id).replace("?", self.mark)
        with self.recorder.datastore.transaction(commit=True) as cursor:  # type: ignore[attr-defined]
            cursor.execute(statement, params)
            return list(cursor.fetchall()) if statement.startswith("SELECT") else []

    def row(self, position: int) -> tuple[Any, ...]:
        [found] = self.sql("SELECT originator_id, originator_version, topic, state FROM {t} WHERE {id} = ?", (position,))
        return tuple(found.values()) if isinstance(found, dict) else tuple(found)

    def put(self, position: int, row: tuple[Any, ...]) -> None:
        self.sql("INSERT INTO {t} ({id}, originator_id, originator_version, topic, state) VALUES (?, ?, ?, ?, ?)",
                 (position, *row))


def sealed(app: Notebook) -> tuple[HashChain, Checkpoint]:
    chain = HashChain(app)
    head = chain.seal_all()
    assert head is not None and head.position == 10
    return chain, Checkpoint(app.name, head.position, head.chain_hash, datetime.now(UTC))


def test_an_untouched_log_verifies_and_new_events_are_unsealed_until_sealed(book: Notebook) -> None:
    chain, checkpoint = sealed(book)
    book.save(Note("note 11"))
    report = chain.verify([checkpoint])
    assert (report.intact, report.events, report.sealed_head, report.unsealed) == (True, 11, 10, 1)
    assert chain.seal() is not None and chain.verify([checkpoint]).unsealed == 0


def test_an_altered_event_is_named(book: Notebook) -> None:
    chain, checkpoint = sealed(book)
    rows = Rows(book)
    *_, state = rows.row(4)
    rows.sql("UPDATE {t} SET state = ? WHERE {id} = ?", (bytes(state).replace(b"alpha", b"omega"), 4))
    assert chain.verify([checkpoint]).problems == ["position 4: the event was altered after it was sealed"]


def test_a_deleted_event_is_named(book: Notebook) -> None:
    chain, checkpoint = sealed(book)
    Rows(book).sql("DELETE FROM {t} WHERE {id} = ?", (6,))
    assert chain.verify([checkpoint]).problems == ["position 6: the event sealed there was deleted"]
    Rows(book).sql("DELETE FROM {t} WHERE {id} = ?", (10,))  # the last one too
    assert chain.verify([checkpoint]).problems[-1] == "position 10: the event sealed there was deleted"


def test_an_inserted_event_is_named(book: Notebook) -> None:
    chain, checkpoint = sealed(book)
    rows = Rows(book)
    _, _, topic, state = rows.row(3)
    rows.sql("UPDATE {t} SET {id} = {id} + 100 WHERE {id} > ?", (3,))  # make room after position 3
    rows.put(4, (str(uuid4()) if not rows.pg else uuid4(), 1, topic, bytes(state).replace(b"alpha", b"forged")))
    problems = chain.verify([checkpoint]).problems
    assert problems[0] == "position 4: an event was inserted that was never sealed"
    assert problems[1:] == [f"position {p + 100}: holds the event sealed at position {p} (moved)" for p in range(4, 11)]


def test_reordered_events_are_named(book: Notebook) -> None:
    chain, checkpoint = sealed(book)
    rows = Rows(book)
    third, seventh = rows.row(3), rows.row(7)
    rows.sql("DELETE FROM {t} WHERE {id} IN (?, ?)", (3, 7))
    rows.put(3, seventh)
    rows.put(7, third)
    assert chain.verify([checkpoint]).problems == ["position 3: holds the event sealed at position 7 (reordered)",
                                                   "position 7: holds the event sealed at position 3 (reordered)"]


def test_a_log_rewritten_with_its_chain_is_caught_by_the_checkpoint(book: Notebook) -> None:
    chain, checkpoint = sealed(book)
    rows = Rows(book)
    _, _, _, state = rows.row(2)
    rows.sql("UPDATE {t} SET state = ? WHERE {id} = ?", (bytes(state).replace(b"alpha", b"omega"), 2))
    with book.process_recorder.datastore.transaction(commit=True) as cursor:  # type: ignore[attr-defined]
        cursor.execute(f'DELETE FROM "{chain.table}"')
    chain.seal_all()  # the chain recomputed over the altered log: consistent with it
    assert chain.verify([]).intact
    assert chain.verify([checkpoint]).problems == [
        f"checkpoint at position 10 ({checkpoint.at.isoformat()}) does not match: the log and its chain were "
        "rewritten at or before it"]


def test_a_rewritten_chain_row_is_named(book: Notebook) -> None:
    chain, checkpoint = sealed(book)
    with book.process_recorder.datastore.transaction(commit=True) as cursor:  # type: ignore[attr-defined]
        mark = "%s" if Rows(book).pg else "?"
        cursor.execute(f'UPDATE "{chain.table}" SET chain_hash = {mark} WHERE position = 5', ("f" * 64,))
    assert chain.verify([checkpoint]).problems == [
        "position 5: the chain table was rewritten (its hash does not follow from the events before it)"]
