"""Group commit on SQLite: a fetched batch is decided in one unit of work and saved in one transaction with every
message's tracking record; a failing message splits the batch; duplicates are skipped."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

import pytest
from dsi_shared.bus import Naming
from dsi_shared.consumer import Subscription, TrackingConsumer
from dsi_shared.contracts import Delivered, Message
from dsi_shared.store import ServiceApplication
from eventsourcing.domain import Aggregate, event
from eventsourcing.persistence import IntegrityError, Tracking
from nats.aio.msg import Msg


class Counter(Aggregate):
    @staticmethod
    def create_id(name: str) -> UUID:
        return uuid5(NAMESPACE_URL, f"/test/counters/{name}")

    @event("CounterOpened")
    def __init__(self, name: str) -> None:
        self.name, self.seen = name, []  # type: ignore[var-annotated]

    @event("Counted")
    def count(self, note: str) -> None:
        self.seen = [*self.seen, note]


class Count(Message):
    counter: str
    note: str
    fail: bool = False


def on_count(app: ServiceApplication, delivered: Delivered[Count]) -> list[Aggregate]:
    """Loads through `find` (as the services' `*_or_new` helpers do); counts, then fails when asked to."""
    data = delivered.data
    counter = app.find(Counter.create_id(data.counter), Counter) or Counter(data.counter)
    counter.count(data.note)
    if data.fail:
        raise RuntimeError("handler failed")
    return [counter]


def message(sequence: int, counter: str, note: str, fail: bool = False) -> Msg:
    body = json.dumps({"counter": counter, "note": note, "fail": fail}).encode()
    reply = f"$JS.ACK.DSI_IN.test.1.{sequence}.{sequence}.1700000000000000000.0"
    return Msg(None, subject="dsi.in.count", reply=reply, data=body)  # type: ignore[arg-type]


@pytest.fixture
def consumer(tmp_path: Path) -> TrackingConsumer:
    app = ServiceApplication(f"sqlite:///{tmp_path / 'group.db'}")
    handlers: dict[str, Subscription[Any]] = {"dsi.in.count": Subscription("DSI_IN", "dsi.in.count", Count, on_count)}
    return TrackingConsumer(app, "test", None, Naming(""), "DSI_IN", handlers,  # type: ignore[arg-type]
                            ack_wait=30, max_attempts=3)


def notes(app: ServiceApplication, name: str) -> list[str]:
    found = app.find(Counter.create_id(name), Counter)
    return found.seen if found else []


def test_several_tracking_records_are_saved_with_the_events_in_one_transaction_or_none_is(tmp_path: Path) -> None:
    app = ServiceApplication(f"sqlite:///{tmp_path / 's.db'}")
    assert app.save_tracked([Counter("a")], Tracking("up", 1), Tracking("up", 2), Tracking("up", 3)) is True
    assert all(app.has_processed(Tracking("up", n)) for n in (1, 2, 3))
    with pytest.raises(IntegrityError):  # one position of the group was already recorded: nothing is written
        app.save_tracked([Counter("b")], Tracking("up", 4), Tracking("up", 2))
    assert not app.has_processed(Tracking("up", 4)) and app.find(Counter.create_id("b"), Counter) is None


def test_a_handler_sees_what_an_earlier_message_of_the_batch_created_and_changed(consumer: TrackingConsumer) -> None:
    items = [consumer._read(message(n, "a" if n != 2 else "b", f"n{n}")) for n in (1, 2, 3, 4)]
    group = consumer.apply_group(items)
    assert group.outcomes == ["applied"] * 4
    app = consumer.app
    assert notes(app, "a") == ["n1", "n3", "n4"] and notes(app, "b") == ["n2"]
    assert all(app.has_processed(Tracking("nats:DSI_IN", n)) for n in (1, 2, 3, 4))
    # One transaction, the events in the order the messages made them.
    stored = app.recorder.select_notifications(start=None, limit=100)
    assert [(n.originator_id, n.originator_version) for n in stored] == [
        (Counter.create_id("a"), 1), (Counter.create_id("a"), 2), (Counter.create_id("b"), 1),
        (Counter.create_id("b"), 2), (Counter.create_id("a"), 3), (Counter.create_id("a"), 4)]


def test_aggregates_created_earlier_in_the_batch_are_listed_by_ids_created_with(consumer: TrackingConsumer) -> None:
    listed: list[list[UUID]] = []

    def listing(app: ServiceApplication, delivered: Delivered[Count]) -> list[Aggregate]:
        listed.append(list(app.ids_created_with(Counter.CounterOpened)))  # type: ignore[attr-defined]
        return on_count(app, delivered)

    consumer.handlers["dsi.in.count"] = Subscription("DSI_IN", "dsi.in.count", Count, listing)
    consumer.apply_group([consumer._read(message(n, f"c{n}", "x")) for n in (1, 2)])
    assert listed == [[], [Counter.create_id("c1")]]


def test_a_failing_message_splits_the_batch_and_leaves_no_trace_of_its_changes(consumer: TrackingConsumer) -> None:
    items = [consumer._read(message(1, "a", "n1")), consumer._read(message(2, "a", "n2", fail=True)),
             consumer._read(message(3, "a", "n3"))]
    group = consumer.apply_group(items)
    assert group.outcomes == ["applied"]  # the messages before the failing one, committed as a group
    app = consumer.app
    assert notes(app, "a") == ["n1"] and not app.has_processed(Tracking("nats:DSI_IN", 2))
    assert consumer.apply_group(items[2:]).outcomes == ["applied"]  # the rest continue
    assert notes(app, "a") == ["n1", "n3"]


def test_duplicates_in_a_batch_are_skipped_and_applied_once(consumer: TrackingConsumer) -> None:
    consumer.apply_group([consumer._read(message(1, "a", "n1"))])
    again = [consumer._read(message(1, "a", "n1")), consumer._read(message(2, "a", "n2")),
             consumer._read(message(2, "a", "n2"))]  # a redelivery, and the same position twice in one fetch
    assert consumer.apply_group(again).outcomes == ["duplicate", "applied", "duplicate"]
    assert notes(consumer.app, "a") == ["n1", "n2"]


def test_a_conflict_at_commit_is_decided_again_from_fresh_state(consumer: TrackingConsumer) -> None:
    app = consumer.app
    consumer.apply_group([consumer._read(message(1, "a", "n1"))])
    original, calls = app.save_tracked, []

    def racing(*args: Any) -> bool:
        if not calls:  # another writer changes the aggregate between this group's decision and its commit
            other = app.find(Counter.create_id("a"), Counter)
            assert other is not None
            other.count("http")
            app.save(other)
        calls.append(args)
        return original(*args)

    app.save_tracked = racing  # type: ignore[method-assign]
    assert consumer.apply_group([consumer._read(message(2, "a", "n2"))]).outcomes == ["applied"]
    assert len(calls) == 2 and notes(app, "a") == ["n1", "http", "n2"]
