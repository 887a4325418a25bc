"""Snapshots of the aggregates that grow with every member and every credited file (issue 14 §3): a PCP's
attribution roster (two events per member) and a participant's credit ledger (one per file). Without them a quarter
close, and every attribution or credit the consumer applies, replays each of them from its first event.

A snapshot is eventsourcing's `Snapshot` of the state as recorded (reloaded from the store, never the object in
hand), written through the application's own mapper: stored exactly as the events are (same transcoding, and the
same cipher and compressor whenever the store has them), in the store's snapshots table. It is taken after any
save (a command's, the consumer's, the close's) whose new events pass a checkpoint: every `BASE_STEP` events, the
step growing with the aggregate (a quarter of its version) so that a huge roster is not rewritten every few events.
Only rosters and ledgers are looked up in the snapshot store; `IS_SNAPSHOTTING_ENABLED=n` turns snapshots off
(every load replays from the first event, as before). `dsi audit replay` checks each one (`verify`).
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from dsi_shared.service import AuditReport
from dsi_shared.store import FastRepository
from eventsourcing.application import AggregateNotFoundError, ProcessingEvent
from eventsourcing.domain import Aggregate, Snapshot
from eventsourcing.persistence import EventStore, IntegrityError

from milestones.ledger import AttributionRoster, CreditLedger

SNAPSHOTTED: tuple[type[Aggregate], ...] = (AttributionRoster, CreditLedger)
BASE_STEP = 200


def step(version: int) -> int:
    """Checkpoints are the multiples of the step: BASE_STEP, or about a quarter of the version when larger."""
    return max(BASE_STEP, 1 << max(version.bit_length() - 3, 0))


def passes_checkpoint(before: int, after: int) -> bool:
    """Whether a save that took an aggregate from version `before` to `after` passed a checkpoint."""
    return any(v % step(v) == 0 for v in range(before + 1, after + 1))


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
            self.store.put([Snapshot.take(recorded)])
        except IntegrityError:
            pass  # a replica saving the same aggregate took this snapshot first: the same recorded state


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
