"""Aggregates a consumer keeps across its batches, kept as fresh as the store's notification log.

Without it a consumer rebuilds every aggregate a message touches from the store (one query, and every event since
the last snapshot), and asks the store about every aggregate that does not exist yet. The cache holds aggregates as
of a notification-log position. When a batch's unit of work first loads an aggregate, the cache catches up: one
query reads the log after that position (every writer's events: other replicas, HTTP commands, this consumer's own
commits) and applies each to the aggregate it belongs to, if cached. The batch therefore decides from the store as
it stood when the batch began. A batch that decided from a state another writer has since changed fails at commit
(optimistic concurrency) and is decided again; that attempt catches up first and sees the change.

The cache only ever holds states read from the store, kept pickled: a handler gets a fresh object, so a decision
that fails, or a transaction that is refused, never leaves its changes in the cache (and unpickling is several
times cheaper than a deep copy, or than decoding the events again). A directory of every aggregate id in
the store (kept while the store has at most `directory_max` aggregates) answers "not created yet" without a query.
"""

from __future__ import annotations

import pickle
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import ApplicationRecorder, Mapper
from eventsourcing.postgres import PostgresAggregateRecorder
from eventsourcing.sqlite import SQLiteAggregateRecorder
from psycopg.sql import SQL, Identifier

CATCH_UP_LIMIT = 5000  # more new events than this since the last batch: start again from an empty cache


@dataclass
class _Kept:
    version: int
    state: bytes  # the aggregate pickled: never changed in place
    shared: Any = None  # one unpickled copy for readers that never change it (`get(copy=False)`)


class AggregateCache:
    def __init__(self, recorder: ApplicationRecorder, mapper: Mapper[UUID], maxsize: int,
                 directory_max: int) -> None:
        self.recorder, self.mapper = recorder, mapper
        self.maxsize, self.directory_max = maxsize, directory_max
        self.position: int | None = None  # the log position the cache reflects (None: not started)
        self._aggregates: OrderedDict[UUID, _Kept] = OrderedDict()  # least recently used first
        self._directory: set[UUID] | None = None  # every aggregate id in the store, when it is small enough
        self._lock = threading.Lock()  # one consumer thread per upstream stream share it

    def catch_up(self) -> None:
        """Bring the cache up to the end of the notification log (one query when nothing new was recorded)."""
        with self._lock:
            if self.position is not None:
                new = self.recorder.select_notifications(start=self.position, limit=CATCH_UP_LIMIT,
                                                         inclusive_of_start=False)
                if len(new) < CATCH_UP_LIMIT:
                    for notification in new:
                        self._apply(notification)
                    self.position = new[-1].id if new else self.position
                    return
            self._restart()

    def get(self, aggregate_id: UUID, load: Callable[[], Any], copy: bool = True) -> Any:
        """A copy of the aggregate as the cache has it (the kept one itself when not `copy`: only for a reader that
        never changes it); a miss is `load`ed from the store and kept."""
        with self._lock:
            kept = self._aggregates.get(aggregate_id)
            if kept is not None:
                self._aggregates.move_to_end(aggregate_id)
                if copy:
                    return pickle.loads(kept.state)
                if kept.shared is None:
                    kept.shared = pickle.loads(kept.state)
                return kept.shared
            if self._directory is not None and aggregate_id not in self._directory:
                raise AggregateNotFoundError(f"Aggregate {aggregate_id!r} not found.")
            position = self.position
        aggregate = load()  # the store now: at least as new as `position`
        try:
            state = pickle.dumps(aggregate, pickle.HIGHEST_PROTOCOL)  # before the caller can change it
        except Exception:  # noqa: BLE001 - an aggregate that cannot be pickled is simply not kept
            return aggregate
        with self._lock:
            # kept only if no catch-up ran meanwhile: one might have passed over events newer than what was loaded
            if position == self.position and self.maxsize > 0:
                self._aggregates[aggregate_id] = _Kept(aggregate.version, state)
                while len(self._aggregates) > self.maxsize:
                    self._aggregates.popitem(last=False)
        return aggregate

    def _apply(self, notification: Any) -> None:
        aggregate_id = UUID(str(notification.originator_id))
        if self._directory is not None:
            self._directory.add(aggregate_id)
            if len(self._directory) > self.directory_max:
                self._directory = None
        kept = self._aggregates.get(aggregate_id)
        if kept is None or notification.originator_version <= kept.version:
            return  # not kept, or already in the state that was loaded
        if notification.originator_version == kept.version + 1:
            domain_event: Any = self.mapper.to_domain_event(notification)
            aggregate = domain_event.mutate(pickle.loads(kept.state))
            self._aggregates[aggregate_id] = _Kept(aggregate.version, pickle.dumps(aggregate, pickle.HIGHEST_PROTOCOL),
                                                   shared=aggregate)  # a new object, never handed out before
        else:
            del self._aggregates[aggregate_id]  # a gap cannot happen in an ordered log; never guess

    def _restart(self) -> None:
        """Forget everything and reflect the log from its end (the first batch, or after a long pause)."""
        self._aggregates.clear()
        self.position = self.recorder.max_notification_id() or 0
        self._directory = self._read_directory()  # read after `position`: may include later ids, never fewer

    def _read_directory(self) -> set[UUID] | None:
        """Every aggregate id in the store, or None when there are more than `directory_max`."""
        recorder, limit = self.recorder, self.directory_max + 1
        if isinstance(recorder, PostgresAggregateRecorder):
            query = SQL("SELECT originator_id FROM {0}.{1} WHERE originator_version = 1 LIMIT %s").format(
                Identifier(recorder.datastore.schema), Identifier(recorder.events_table_name))
            with recorder.datastore.transaction(commit=False) as cursor:
                cursor.execute(query, (limit,))
                ids = [row["originator_id"] for row in cursor.fetchall()]
        elif isinstance(recorder, SQLiteAggregateRecorder):
            with recorder.datastore.transaction(commit=False) as cursor:
                cursor.execute(f"SELECT originator_id FROM {recorder.events_table_name} "
                               "WHERE originator_version = 1 LIMIT ?", (limit,))
                ids = [row["originator_id"] for row in cursor.fetchall()]
        else:
            return None
        return {UUID(str(i)) for i in ids} if len(ids) <= self.directory_max else None
