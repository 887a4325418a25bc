"""Enrollment's facts → qip-share: members' QIP-entity assignment spans (`attribution-recorded`, kind `qip`).
The newest enrollment version of a span (by its start) wins; an older one redelivered changes nothing."""

from __future__ import annotations

from datetime import date

from dsi_shared.consumer import Subscription
from dsi_shared.events import IncomingEvent
from dsi_shared.store import ServiceApplication
from eventsourcing.domain import Aggregate

from qip_share.application import QipShare


def on_attribution_recorded(app: ServiceApplication, event: IncomingEvent) -> list[Aggregate]:
    assert isinstance(app, QipShare)
    data = event.data
    if data["kind"] != "qip":
        return []
    member = app.member_or_new(data["cin"])
    changed = member.note_span(start=date.fromisoformat(data["start"]), assignee=data["assignee"],
                               end=date.fromisoformat(data["end"]) if data.get("end") else None,
                               version=int(data["aggregate_version"]))
    return [member] if changed else []


SUBSCRIPTIONS = (
    Subscription("DSI_ENROLLMENT", "dsi.enrollment.attribution-recorded", on_attribution_recorded),
)
