"""Enrollment's facts → qip-share: members' QIP-entity assignment spans (`attribution-recorded`, kind `qip`).
The newest enrollment version of a span (by its start) wins; an older one redelivered changes nothing."""

from __future__ import annotations

from dsi_shared.consumer import Subscription
from dsi_shared.contracts import Delivered
from dsi_shared.store import ServiceApplication
from enrollment.contract import AttributionRecorded
from eventsourcing.domain import Aggregate

from qip_share.application import QipShare


def on_attribution_recorded(app: ServiceApplication, delivered: Delivered[AttributionRecorded]) -> list[Aggregate]:
    assert isinstance(app, QipShare)
    data = delivered.data
    if data.kind != "qip":
        return []
    member = app.member_or_new(data.cin)
    changed = member.note_span(start=data.start, assignee=data.assignee, end=data.end, version=data.aggregate_version)
    return [member] if changed else []


SUBSCRIPTIONS = (
    Subscription("DSI_ENROLLMENT", AttributionRecorded.subject, AttributionRecorded, on_attribution_recorded),
)
