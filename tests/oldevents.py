"""Events as they were stored before a field existed, for tests that pin "an old event must always load"
(DESIGN.md §2)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from eventsourcing.domain import Aggregate
from eventsourcing.persistence import StoredEvent


def rebuilt_without(app: Any, aggregate: Aggregate, new_fields: Iterable[str]) -> Any:
    """`aggregate` rebuilt by `app`'s mapper from its pending events stored without `new_fields`."""
    fields = tuple(new_fields)
    rebuilt = None
    for domain_event in aggregate.collect_events():
        stored = app.mapper.to_stored_event(domain_event)
        state = app.mapper.transcoder.decode(stored.state)
        for new_field in fields:
            state.pop(new_field, None)
        old = StoredEvent(stored.originator_id, stored.originator_version, stored.topic,
                          app.mapper.transcoder.encode(state))
        rebuilt = app.mapper.to_domain_event(old).mutate(rebuilt)
    return rebuilt
