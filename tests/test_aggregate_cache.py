"""Aggregates a consumer keeps across batches (`dsi_shared.aggregatecache`), on SQLite and PostgreSQL: a batch
decides from the store as it stands when the batch begins, whoever wrote it, and the cache never holds a change
that was not committed. `writer` is a second application on the same store: another replica, or an HTTP command."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

import pytest
from dsi_shared import aggregatecache
from dsi_shared.occ import retry_on_conflict
from dsi_shared.rulebook import RulesCopy, RulesReader
from dsi_shared.store import ServiceApplication
from dsi_shared.unitofwork import unit_of_work
from eventsourcing.domain import Aggregate, event
from eventsourcing.persistence import IntegrityError, Tracking

from tests.rulesdoc import amended, packaged


class Tally(Aggregate):
    @staticmethod
    def create_id(name: str) -> UUID:
        return uuid5(NAMESPACE_URL, f"/test/tallies/{name}")

    @event("TallyOpened")
    def __init__(self, name: str) -> None:
        self.name, self.notes = name, []  # type: ignore[var-annotated]

    @event("Noted")
    def note(self, text: str) -> None:
        self.notes = [*self.notes, text]


class Apps:
    def __init__(self, url: str) -> None:
        self.consumer = ServiceApplication(url)
        self.writer = ServiceApplication(url)  # another replica or an HTTP command: no unit of work, no cache
        self.position = 0

    def batch(self, decide: Callable[[ServiceApplication], list[Aggregate]]) -> None:
        """One consumer batch: decide in a unit of work, save with a tracking record (as `apply_group` does)."""
        self.position += 1
        with unit_of_work(self.consumer.repository) as work:
            work.keep(decide(self.consumer))
        self.consumer.save_tracked(work.events, Tracking("up", self.position))

    def seen(self, name: str) -> list[str]:
        """The tally as a batch would load it now."""
        with unit_of_work(self.consumer.repository):
            found = self.consumer.find(Tally.create_id(name), Tally)
        return found.notes if found else []

    def write(self, name: str, text: str) -> None:
        tally = self.writer.find(Tally.create_id(name), Tally) or Tally(name)
        tally.note(text)
        self.writer.save(tally)


@pytest.fixture
def apps(store_kind: str, store_url_for: Callable[[str], str]) -> Iterator[Apps]:
    both = Apps(store_url_for("cache"))
    yield both
    both.consumer.close()
    both.writer.close()


def note_in_batch(name: str, text: str) -> Callable[[ServiceApplication], list[Aggregate]]:
    def decide(app: ServiceApplication) -> list[Aggregate]:
        tally = app.find(Tally.create_id(name), Tally) or Tally(name)
        tally.note(text)
        return [tally]

    return decide


def test_a_batch_sees_what_another_writer_recorded_since_the_last_batch(apps: Apps) -> None:
    apps.batch(note_in_batch("a", "mine"))
    assert apps.seen("a") == ["mine"]  # now kept in the cache
    apps.write("a", "theirs")
    assert apps.seen("a") == ["mine", "theirs"]  # fast-forwarded from the log, not left stale
    apps.batch(note_in_batch("a", "mine again"))
    assert apps.seen("a") == ["mine", "theirs", "mine again"]
    assert apps.writer.find(Tally.create_id("a"), Tally).notes == ["mine", "theirs", "mine again"]  # type: ignore[union-attr]


def test_an_aggregate_another_writer_created_is_found_after_it_was_known_absent(apps: Apps) -> None:
    apps.batch(note_in_batch("a", "first"))
    assert apps.seen("b") == []  # absent, as the cache's directory of ids says
    apps.write("b", "theirs")
    assert apps.seen("b") == ["theirs"]


def test_a_batch_decided_from_a_stale_cache_conflicts_and_is_decided_again_from_fresh_state(apps: Apps) -> None:
    apps.batch(note_in_batch("a", "first"))
    assert apps.seen("a") == ["first"]
    decisions: list[list[str]] = []

    def attempt() -> None:
        with unit_of_work(apps.consumer.repository) as work:
            tally = apps.consumer.find(Tally.create_id("a"), Tally)
            assert tally is not None
            decisions.append(list(tally.notes))
            if len(decisions) == 1:
                apps.write("a", "theirs")  # another replica commits between this batch's read and its commit
            tally.note("mine")
            work.keep([tally])
        apps.consumer.save_tracked(work.events, Tracking("up", 99))

    retry_on_conflict(attempt, "the tally", attempts=3)
    assert decisions == [["first"], ["first", "theirs"]]
    assert apps.seen("a") == ["first", "theirs", "mine"]


def test_a_refused_transaction_leaves_nothing_in_the_cache(apps: Apps) -> None:
    apps.batch(note_in_batch("a", "first"))
    assert apps.seen("a") == ["first"]
    with unit_of_work(apps.consumer.repository) as work:
        work.keep(note_in_batch("a", "refused")(apps.consumer))
    with pytest.raises(IntegrityError):  # one of its positions was already recorded: the store refuses it all
        apps.consumer.save_tracked(work.events, Tracking("up", 50), Tracking("up", 1))
    assert apps.seen("a") == ["first"]


def test_a_handler_that_fails_after_changing_a_kept_aggregate_leaves_nothing_in_the_cache(apps: Apps) -> None:
    apps.batch(note_in_batch("a", "first"))
    assert apps.seen("a") == ["first"]
    with pytest.raises(RuntimeError), unit_of_work(apps.consumer.repository):
        tally = apps.consumer.find(Tally.create_id("a"), Tally)
        assert tally is not None
        tally.note("never saved")
        raise RuntimeError("handler failed")
    assert apps.seen("a") == ["first"]


def test_after_more_new_events_than_it_catches_up_the_cache_starts_again_from_the_store(
        apps: Apps, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aggregatecache, "CATCH_UP_LIMIT", 3)
    apps.batch(note_in_batch("a", "first"))
    assert apps.seen("a") == ["first"]
    for n in range(4):
        apps.write("a", f"theirs {n}")
    apps.write("c", "new")
    assert apps.seen("a") == ["first", "theirs 0", "theirs 1", "theirs 2", "theirs 3"]
    assert apps.seen("c") == ["new"]


def test_an_aggregate_loaded_while_another_batch_caught_up_is_not_kept(apps: Apps) -> None:
    """Two consumer threads share the cache: a load that raced with a catch-up might be older than the position
    the cache has reached, so it is used once and not kept."""
    apps.batch(note_in_batch("a", "first"))
    kept = apps.consumer.repository.kept  # type: ignore[attr-defined]
    assert kept is not None
    kept.catch_up()

    def load_while_another_thread_catches_up() -> Any:
        loaded = apps.writer.find(Tally.create_id("a"), Tally)
        apps.write("a", "theirs")
        kept.catch_up()
        return loaded

    assert kept.get(Tally.create_id("a"), load_while_another_thread_catches_up).notes == ["first"]
    assert apps.seen("a") == ["first", "theirs"]


def test_the_rules_book_read_in_a_batch_follows_a_version_another_writer_noted(apps: Apps) -> None:
    """`RulesReader` reads the kept copy without copying it: it must still be replaced, never stale, after a
    version is noted elsewhere."""
    reader = RulesReader()

    def versions() -> list[str]:
        with unit_of_work(apps.consumer.repository):
            return [v.version for v in reader.book(apps.consumer).versions]

    first = packaged()
    apps.batch(lambda app: [note(RulesReader.copy_in(app), first)])
    assert versions() == [first["version"]]
    later = amended("later", "2031-01-01", {})
    apps.writer.save(note(RulesReader.copy_in(apps.writer), later))
    assert versions() == [first["version"], "later"]


def note(copy: RulesCopy, document: dict[str, Any]) -> RulesCopy:
    assert copy.note(document)
    return copy
