"""Tamper evidence for a service's event store (DESIGN.md §3): a hash chain over its notification log, sealed
beside it, with checkpoints published outside the database.

For each event, in log order: `event_hash = SHA-256(originator_id | version | topic | state)` (the recorded bytes,
not the position) and `chain_hash = SHA-256(previous chain_hash | position | event_hash)`. A sealer appends both to
`<app>_chain` as events are recorded; a checkpoint (position, chain hash, time) goes to JetStream, which the
database's own operators cannot rewrite. `verify` recomputes everything from the events and names the position of
an altered, deleted, inserted or reordered event, a rewritten chain table, or a log rewritten to match its own
chain (the checkpoints then disagree). Events after the sealed head are reported as not yet sealed.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

from eventsourcing.persistence import Notification
from eventsourcing.postgres import PostgresProcessRecorder
from eventsourcing.sqlite import SQLiteProcessRecorder
from psycopg.sql import SQL, Identifier

from dsi_shared.store import DDL_LOCK, ServiceApplication

GENESIS = "0" * 64
T = TypeVar("T")


def event_hash(n: Notification) -> str:
    digest = hashlib.sha256(f"{n.originator_id}|{n.originator_version}|{n.topic}|".encode())
    digest.update(n.state)
    return digest.hexdigest()


def link(previous: str, position: int, hashed: str) -> str:
    return hashlib.sha256(f"{previous}|{position}|{hashed}".encode()).hexdigest()


@dataclass(frozen=True)
class Seal:
    position: int
    event_hash: str
    chain_hash: str


@dataclass(frozen=True)
class Checkpoint:
    service: str
    position: int
    chain_hash: str
    at: datetime


@dataclass
class Verification:
    service: str
    events: int = 0
    sealed_head: int = 0
    unsealed: int = 0
    checkpoints: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        return not self.problems


class HashChain:
    def __init__(self, app: ServiceApplication) -> None:
        self.app = app
        self.recorder = app.process_recorder
        self.table = f"{app.name.lower()}_chain"
        columns = "position BIGINT PRIMARY KEY, event_hash TEXT NOT NULL, chain_hash TEXT NOT NULL"
        if isinstance(self.recorder, PostgresProcessRecorder):
            self._name = SQL("{0}.{1}").format(Identifier(self.recorder.datastore.schema), Identifier(self.table))
            with self.recorder.datastore.transaction(commit=True) as cursor:
                cursor.execute(DDL_LOCK)
                cursor.execute(SQL("CREATE TABLE IF NOT EXISTS {0} (" + columns + ")").format(self._name))
        elif isinstance(self.recorder, SQLiteProcessRecorder):
            with self.recorder.datastore.transaction(commit=True) as cursor:
                cursor.execute(f'CREATE TABLE IF NOT EXISTS "{self.table}" ({columns})')
        else:
            raise TypeError(f"no hash chain for {type(self.recorder).__name__}")

    # -- sealing ---------------------------------------------------------------------------------------------
    def head(self) -> Seal | None:
        rows = self._query("SELECT position, event_hash, chain_hash FROM {t} ORDER BY position DESC LIMIT 1", ())
        return Seal(int(rows[0][0]), str(rows[0][1]), str(rows[0][2])) if rows else None

    def seal(self, limit: int = 5000) -> Seal | None:
        """Chain up to `limit` events recorded after the sealed head, in one transaction; the new head (or None
        when nothing was new). Two sealers racing: the loser's insert fails on the primary key and nothing is lost."""
        head = self.head()
        previous, after = (head.chain_hash, head.position) if head else (GENESIS, 0)
        page = self.app.recorder.select_notifications(start=after, limit=limit, inclusive_of_start=False)
        if not page:
            return None
        seals = []
        for notification in page:
            hashed = event_hash(notification)
            previous = link(previous, notification.id, hashed)
            seals.append(Seal(notification.id, hashed, previous))
        rows = [(s.position, s.event_hash, s.chain_hash) for s in seals]
        if isinstance(self.recorder, PostgresProcessRecorder):
            insert = SQL("INSERT INTO {0} (position, event_hash, chain_hash) VALUES (%s, %s, %s)").format(self._name)
            with self.recorder.datastore.transaction(commit=True) as cursor:
                cursor.executemany(insert, rows)
        else:
            assert isinstance(self.recorder, SQLiteProcessRecorder)
            with self.recorder.datastore.transaction(commit=True) as cursor:
                cursor.executemany(f'INSERT INTO "{self.table}" (position, event_hash, chain_hash) VALUES (?, ?, ?)', rows)
        return seals[-1]

    def seal_all(self) -> Seal | None:
        head = None
        while (sealed := self.seal()) is not None:
            head = sealed
        return head or self.head()

    # -- verifying -------------------------------------------------------------------------------------------
    def seals(self, batch: int = 5000) -> Iterator[Seal]:
        last = -1
        while rows := self._query("SELECT position, event_hash, chain_hash FROM {t} WHERE position > {p} "
                                  "ORDER BY position LIMIT {n}", (last, batch)):
            for row in rows:
                yield Seal(int(row[0]), str(row[1]), str(row[2]))
            last = int(rows[-1][0])

    def recorded_at(self, hashed: str) -> int | None:
        rows = self._query("SELECT position FROM {t} WHERE event_hash = {p} ORDER BY position LIMIT 1", (hashed,))
        return int(rows[0][0]) if rows else None

    def verify(self, checkpoints: list[Checkpoint], progress: Any = None) -> Verification:
        """Recompute the chain from the events and compare it with the sealed chain, then with the checkpoints.
        Events and seals are walked side by side; a mismatch is explained by looking one step ahead on each."""
        report = Verification(self.app.name, checkpoints=len(checkpoints))
        events, seals = _Ahead(iter(self.app.all_notifications())), _Ahead(self.seals())
        recomputed, chain_at = GENESIS, dict[int, str]()
        rewritten_reported = False
        while (event := events.peek()) is not None and (seal := seals.peek()) is not None:
            hashed = event_hash(event)
            intact = hashed == seal.event_hash
            if intact:
                if event.id != seal.position:
                    report.problems.append(f"position {event.id}: holds the event sealed at position {seal.position} "
                                           "(moved)")
            else:
                following, upcoming = seals.peek(1), events.peek(1)
                elsewhere = self.recorded_at(hashed)
                if elsewhere is None and upcoming is not None and event_hash(upcoming) == seal.event_hash:
                    report.problems.append(f"position {event.id}: an event was inserted that was never sealed")
                    self._count(report, events, progress)
                    continue  # the same seal is compared with the next event
                if following is not None and hashed == following.event_hash and (
                        upcoming is None or event_hash(upcoming) != seal.event_hash):
                    report.problems.append(f"position {seal.position}: the event sealed there was deleted")
                elif elsewhere is not None and elsewhere != seal.position:
                    report.problems.append(f"position {event.id}: holds the event sealed at position {elsewhere} "
                                           "(reordered)")
                else:
                    report.problems.append(f"position {event.id}: the event was altered after it was sealed")
            if intact or not report.problems[-1].endswith("was deleted"):
                self._count(report, events, progress)
            # Past a reported anomaly the recomputation follows the sealed hashes, so each problem is named once.
            recomputed = link(recomputed, seal.position, seal.event_hash)
            if recomputed != seal.chain_hash and not rewritten_reported:
                report.problems.append(f"position {seal.position}: the chain table was rewritten (its hash does not "
                                       "follow from the events before it)")
                rewritten_reported = True
            if intact:
                chain_at[seal.position] = recomputed
            report.sealed_head = seal.position
            seals.take()
        while (seal := seals.take()) is not None:
            report.problems.append(f"position {seal.position}: the event sealed there was deleted")
            report.sealed_head = seal.position
        while events.peek() is not None:
            self._count(report, events, progress)
            report.unsealed += 1
        for checkpoint in sorted(checkpoints, key=lambda c: c.position):
            if checkpoint.position > report.sealed_head:
                report.problems.append(f"checkpoint at position {checkpoint.position} ({checkpoint.at.isoformat()}) "
                                       "is beyond the sealed chain: sealed events were removed")
            elif checkpoint.position in chain_at and chain_at[checkpoint.position] != checkpoint.chain_hash:
                report.problems.append(f"checkpoint at position {checkpoint.position} ({checkpoint.at.isoformat()}) "
                                       "does not match: the log and its chain were rewritten at or before it")
        return report

    @staticmethod
    def _count(report: Verification, events: _Ahead[Notification], progress: Any) -> None:
        events.take()
        report.events += 1
        if progress is not None:
            progress()

    def _query(self, template: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        if isinstance(self.recorder, PostgresProcessRecorder):
            query = SQL(template.replace("{p}", "%s").replace("{n}", "%s")).format(t=self._name)
            with self.recorder.datastore.transaction(commit=False) as cursor:
                cursor.execute(query, params)
                rows = cursor.fetchall()
        else:
            assert isinstance(self.recorder, SQLiteProcessRecorder)
            sql = template.replace("{t}", f'"{self.table}"').replace("{p}", "?").replace("{n}", "?")
            with self.recorder.datastore.transaction(commit=False) as cursor:
                cursor.execute(sql, params)
                rows = cursor.fetchall()
        return [tuple(r.values()) if isinstance(r, dict) else tuple(r) for r in rows]


class _Ahead(Generic[T]):
    """An iterator one can look two items into."""

    def __init__(self, items: Iterator[T]) -> None:
        self.items, self.buffer = items, deque[T]()

    def peek(self, at: int = 0) -> T | None:
        while len(self.buffer) <= at:
            item = next(self.items, None)
            if item is None:
                return None
            self.buffer.append(item)
        return self.buffer[at]

    def take(self) -> T | None:
        found = self.peek()
        if found is not None:
            self.buffer.popleft()
        return found
