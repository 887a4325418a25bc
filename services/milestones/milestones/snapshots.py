"""Snapshots of the aggregates that grow with every member and every credited file (issue 14 §3): a PCP's
attribution roster (two events per member) and a participant's credit ledger (one per file). Without them a quarter
close, and every attribution or credit the consumer applies, replays each of them from its first event.

A snapshot is eventsourcing's `Snapshot` of the state as recorded (reloaded from the store, never the object in
hand), its per-member and per-credit entries stored as columns (`ColumnarSnapshot`), written through the
application's own mapper: stored exactly as the events are (same transcoding, and the same cipher and compressor
whenever the store has them), in the store's snapshots table. It is taken after any save (a command's, the
consumer's, the close's) whose new events pass a checkpoint: every `BASE_STEP` events, the step growing with the
aggregate (a quarter of its version) so that a huge roster is not rewritten every few events. Only rosters and
ledgers are looked up in the snapshot store; `IS_SNAPSHOTTING_ENABLED=n` turns snapshots off (every load replays
from the first event, as before). `dsi audit replay` checks each one (`verify`). A quarter close loads a block of
participants' rosters and ledgers together (`Snapshots.load_many`).
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import repeat
from typing import Any
from uuid import UUID

from dsi_shared.service import AuditReport
from dsi_shared.store import FastRepository, mutate_all
from eventsourcing.application import AggregateNotFoundError, ProcessingEvent
from eventsourcing.domain import Aggregate, Snapshot
from eventsourcing.persistence import EventStore, IntegrityError, StoredEvent
from eventsourcing.postgres import PostgresAggregateRecorder
from psycopg.sql import SQL, Identifier

from milestones.ledger import AttributionRoster, CreditLedger

SNAPSHOTTED: tuple[type[Aggregate], ...] = (AttributionRoster, CreditLedger)
BASE_STEP = 200
# The fields that hold one entry per member or per credit, stored as columns (`ColumnarSnapshot`): by name, one
# level of keys (a mapping of entries) or two (member → start → entry).
COLUMNAR: dict[type[Aggregate], dict[str, int]] = {AttributionRoster: {"spans": 1, "membership": 2},
                                                   CreditLedger: {"credits": 1}}
PACKED = "_columns_"  # where a snapshot's columnar fields are kept in its state


def step(version: int) -> int:
    """Checkpoints are the multiples of the step: BASE_STEP, or about a quarter of the version when larger."""
    return max(BASE_STEP, 1 << max(version.bit_length() - 3, 0))


def passes_checkpoint(before: int, after: int) -> bool:
    """Whether a save that took an aggregate from version `before` to `after` passed a checkpoint."""
    return any(v % step(v) == 0 for v in range(before + 1, after + 1))


class ColumnarSnapshot(Snapshot):
    """A roster's or ledger's snapshot with its per-member and per-credit entries stored as columns, each value
    written once and named by its position (`pack_entries`): the JSON of a 500-member roster is a few lists of
    strings and numbers instead of a thousand small objects, each with its dates, that the transcoder decodes one
    by one (the benchmark's 2,000 rosters and ledgers: 58 MB instead of 195, loaded in a small fraction of the
    time). It loads into the very state a plain `Snapshot` would (verified by `dsi audit replay`, `verify`); plain
    snapshots taken before still load as they were, until the next checkpoint takes a columnar one. A field whose
    entries do not fit the columns (entries with different fields) is kept as it was."""

    @classmethod
    def take(cls, aggregate: Any) -> ColumnarSnapshot:
        taken = Snapshot.take(aggregate)
        state = dict(taken.state)
        packed: dict[str, Any] = {}
        for name, depth in COLUMNAR.get(type(aggregate), {}).items():
            columns = pack_entries(state[name], depth) if name in state else None
            if columns is not None:
                packed[name] = columns
                del state[name]
        return cls(originator_id=taken.originator_id, originator_version=taken.originator_version,
                   timestamp=taken.timestamp, topic=taken.topic, state={**state, PACKED: packed})

    def mutate(self, _: None) -> Any:
        state = dict(self.state)
        for name, columns in state.pop(PACKED, {}).items():
            state[name] = unpack_entries(columns)
        return Snapshot(originator_id=self.originator_id, originator_version=self.originator_version,
                        timestamp=self.timestamp, topic=self.topic, state=state).mutate(None)


def pack_entries(entries: Any, depth: int) -> dict[str, Any] | None:
    """`entries` (string keys, `depth` levels deep, to dicts that all have the same fields) as columns: the keys of
    each level, then per field the distinct values and each entry's position among them. None when they do not fit
    (another shape, an empty inner level, entries with different fields)."""
    keys: list[list[str]] = [[] for _ in range(depth)]
    rows: list[dict[str, Any]] = []

    def walk(level: Any, path: list[str]) -> bool:
        if not isinstance(level, dict) or (path and not level):
            return False
        for key, value in level.items():
            if not isinstance(key, str):
                return False
            if len(path) + 1 < depth:
                if not walk(value, [*path, key]):
                    return False
            elif isinstance(value, dict):
                for n, part in enumerate([*path, key]):
                    keys[n].append(part)
                rows.append(value)
            else:
                return False
        return True

    if not walk(entries, []):
        return None
    fields = list(rows[0]) if rows else []
    if any(list(row) != fields for row in rows):
        return None
    return {"keys": keys, "fields": fields, "count": len(rows),
            "columns": [_pack_column([row[field] for row in rows]) for field in fields]}


def _pack_column(values: list[Any]) -> dict[str, Any]:
    if any(isinstance(v, dict | list) for v in values):  # kept one per entry: never shared between two entries
        return {"values": values}
    positions: dict[tuple[type, str], int] = {}
    distinct: list[Any] = []
    index = []
    for value in values:  # by type and repr: True is not 1, and Decimal("400.0") is not Decimal("400.00")
        position = positions.setdefault((type(value), repr(value)), len(distinct))
        if position == len(distinct):
            distinct.append(value)
        index.append(position)
    return {"distinct": distinct, "index": index} if len(distinct) > 1 else {"distinct": distinct}  # one: the same in all


def unpack_entries(packed: dict[str, Any]) -> dict[str, Any]:
    """The entries `pack_entries` packed, as they were."""
    fields, count = packed["fields"], packed["count"]
    columns = [c["values"] if "values" in c else list(map(c["distinct"].__getitem__, c["index"])) if "index" in c
               else c["distinct"] * count for c in packed["columns"]]
    # Built by `map` (no Python code run per entry): a ledger has a credit per member with a record.
    rows = list(map(dict, map(zip, repeat(fields), zip(*columns, strict=True)))) if fields \
        else [{} for _ in range(count)]
    keys = packed["keys"]
    if len(keys) == 1:
        return dict(zip(keys[0], rows, strict=True))
    entries: dict[str, Any] = {}
    for outer, inner, row in zip(keys[0], keys[1], rows, strict=True):
        if (level := entries.get(outer)) is None:
            entries[outer] = {inner: row}
        else:
            level[inner] = row
    return entries


class Snapshots:
    """Where rosters and ledgers load from (latest snapshot + the events after it), and how they are snapshotted."""

    def __init__(self, events: EventStore[UUID], snapshots: EventStore[UUID], main: FastRepository) -> None:
        self.store = snapshots
        self.repository = FastRepository(event_store=events, snapshot_store=snapshots)
        self.repository.works_for = main  # inside a consumer's batch, what earlier messages changed comes first

    def load(self, aggregate_id: UUID, version: int | None = None) -> Aggregate | None:
        try:
            found: Aggregate = self.repository.get(aggregate_id, version=version)
        except AggregateNotFoundError:
            return None
        return found

    def load_many(self, aggregate_ids: Iterable[UUID]) -> dict[UUID, Aggregate]:
        """The aggregates among `aggregate_ids` that exist, each as `load` gives it (its latest snapshot and the events
        after it), in two queries on PostgreSQL instead of two per aggregate (a quarter close loads every roster and
        ledger); elsewhere one `load` each."""
        wanted = list(dict.fromkeys(aggregate_ids))
        snapshots, events = self.store.recorder, self.repository.event_store.recorder
        if not (isinstance(snapshots, PostgresAggregateRecorder) and isinstance(events, PostgresAggregateRecorder)):
            return {i: found for i in wanted if (found := self.load(i)) is not None}
        # One index lookup per id (LATERAL): a list of ids compared with `= ANY` is estimated from the table's
        # statistics, and on a table not analysed yet the server reads the whole table instead.
        latest = ("SELECT s.originator_id, s.originator_version, s.topic, s.state FROM unnest(%s::uuid[]) AS w(id) "
                  "CROSS JOIN LATERAL (SELECT * FROM {0}.{1} x WHERE x.originator_id = w.id "
                  "ORDER BY x.originator_version DESC LIMIT 1) s")
        after = ("SELECT e.originator_id, e.originator_version, e.topic, e.state "
                 "FROM unnest(%s::uuid[], %s::bigint[]) AS w(id, after) CROSS JOIN LATERAL (SELECT * FROM {0}.{1} x "
                 "WHERE x.originator_id = w.id AND x.originator_version > w.after ORDER BY x.originator_version) e")
        loaded: dict[UUID, Any] = {}
        for stored in _select(snapshots, latest, (wanted,)):
            snapshot: Any = self.store.mapper.to_domain_event(stored)
            loaded[UUID(str(stored.originator_id))] = snapshot.mutate(None)
        versions = [loaded[i].version if i in loaded else 0 for i in wanted]
        tails: dict[UUID, list[Any]] = {}
        mapper = self.repository.event_store.mapper
        for stored in _select(events, after, (wanted, versions)):
            tails.setdefault(UUID(str(stored.originator_id)), []).append(mapper.to_domain_event(stored))
        for aggregate_id, domain_events in tails.items():
            loaded[aggregate_id] = mutate_all(loaded.get(aggregate_id), domain_events)
        return {i: loaded[i] for i in wanted if i in loaded}

    def take_after(self, processing_event: ProcessingEvent[UUID]) -> None:
        """After the events are recorded: a snapshot of each roster or ledger whose new events passed a checkpoint,
        at the last version saved."""
        versions: dict[UUID, list[int]] = {}
        for domain_event in processing_event.events:
            versions.setdefault(domain_event.originator_id, []).append(domain_event.originator_version)
        for aggregate_id, aggregate in processing_event.aggregates.items():
            saved = versions.get(aggregate_id)
            if not saved or not isinstance(aggregate, SNAPSHOTTED):
                continue
            if passes_checkpoint(min(saved) - 1, max(saved)):
                self.take(aggregate_id, max(saved))

    def take(self, aggregate_id: UUID, version: int) -> None:
        recorded = self.load(aggregate_id, version)
        if recorded is None:
            return
        try:
            self.store.put([ColumnarSnapshot.take(recorded)])
        except IntegrityError:
            pass  # a replica saving the same aggregate took this snapshot first: the same recorded state


def _select(recorder: PostgresAggregateRecorder, query: str, parameters: tuple[Any, ...]) -> list[StoredEvent]:
    """Stored events (or snapshots) from `query`, whose {0}.{1} is the recorder's table."""
    statement = SQL(query).format(Identifier(recorder.datastore.schema), Identifier(recorder.events_table_name))
    with recorder.datastore.transaction(commit=False) as cursor:
        # Not JIT-compiled: the server's estimate for a list of ids can pass its JIT threshold (always, on tables
        # not analysed yet), and compiling took longer than reading the rows.
        cursor.execute("SET LOCAL jit = off")
        cursor.execute(statement, parameters, binary=True)  # bytea as bytes, not as hex text twice its size
        return [StoredEvent(row["originator_id"], row["originator_version"], row["topic"], bytes(row["state"]))
                for row in cursor.fetchall()]


def verify(snapshots: Snapshots, rebuilt: Any, report: AuditReport, as_of: Any | None) -> None:
    """A roster or ledger as loaded through its latest snapshot must equal the one replayed from its events (the
    audit's rebuild); a snapshot beyond the last event (stale, or forged) is reported too."""
    if not isinstance(rebuilt, SNAPSHOTTED):
        return
    kind, aggregate_id = type(rebuilt).__name__, rebuilt.id
    latest = next(iter(snapshots.store.get(aggregate_id, desc=True, limit=1)), None)
    if latest is None:
        return
    if as_of is None and latest.originator_version > rebuilt.version:
        report.problems.append(f"milestones: {kind} {aggregate_id} has a snapshot at v{latest.originator_version} "
                               f"but events only to v{rebuilt.version} (stale or forged snapshot)")
        return
    loaded = snapshots.load(aggregate_id, rebuilt.version)
    if loaded is None or vars(loaded) != vars(rebuilt):
        report.problems.append(f"milestones: {kind} {aggregate_id} loaded through its snapshot differs from its "
                               f"events replayed (v{rebuilt.version}): the snapshot does not match the log")
