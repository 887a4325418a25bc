"""Tracking records as the auditor reads them (issue 12 §1): every (upstream service, notification id) a consumer
recorded as processed must name an event that upstream actually published. One that does not was planted (or
the upstream log lost an event) — either way an auditor must see it, since a tracking record makes the real
event at that position look processed."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from eventsourcing.postgres import PostgresProcessRecorder
from eventsourcing.sqlite import SQLiteProcessRecorder
from psycopg.sql import SQL, Identifier

from dsi_shared.contracts import Contract
from dsi_shared.relay import outgoing
from dsi_shared.store import ServiceApplication


def tracking_records(app: ServiceApplication) -> Iterator[tuple[str, int]]:
    """Every (application name, notification id) the store's consumers recorded as processed."""
    recorder = app.process_recorder
    if isinstance(recorder, PostgresProcessRecorder):
        query = SQL("SELECT application_name, notification_id FROM {0}.{1} ORDER BY 1, 2").format(
            Identifier(recorder.datastore.schema), Identifier(recorder.tracking_table_name))
        with recorder.datastore.transaction(commit=False) as cursor:
            cursor.execute(query)
            rows = cursor.fetchall()
    elif isinstance(recorder, SQLiteProcessRecorder):
        with recorder.datastore.transaction(commit=False) as cursor:
            cursor.execute("SELECT application_name, notification_id FROM tracking ORDER BY 1, 2")
            rows = cursor.fetchall()
    else:
        raise TypeError(f"no tracking listing for {type(recorder).__name__}")
    for row in rows:  # sqlite3.Row and psycopg's dict rows both index by column name
        yield str(row["application_name"]), int(row["notification_id"])


def orphan_tracking(app: ServiceApplication, open_store: Callable[[str], ServiceApplication | None],
                    contracts: Mapping[str, Contract]) -> list[str]:
    """Problems: tracking records naming one of our services' positions that its store never published (under its
    `contracts[service]`). `open_store(service)` gives that service's store (None when it is not being audited);
    records of outside publishers (`nats:<stream>`) are positions on a stream, not checkable against a store."""
    by_upstream: dict[str, list[int]] = {}
    for name, position in tracking_records(app):
        if not name.startswith("nats:"):
            by_upstream.setdefault(name, []).append(position)
    problems: list[str] = []
    for upstream, positions in sorted(by_upstream.items()):
        store, contract = open_store(upstream), contracts.get(upstream)
        if store is None or contract is None:
            continue
        try:
            for position in positions:
                if not _published(store, contract, position):
                    problems.append(f"{app.name}: tracking record ({upstream}, {position}) has no matching event "
                                    f"published by {upstream}: planted, or lost upstream")
        finally:
            store.close()
    return problems


def _published(store: ServiceApplication, contract: Contract, position: int) -> bool:
    found = store.recorder.select_notifications(start=position, limit=1)
    if not found or found[0].id != position:
        return False
    return outgoing(contract, position, store.mapper.to_domain_event(found[0])) is not None
