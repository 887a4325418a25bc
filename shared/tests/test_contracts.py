"""Declared public events: only they leave a store, with only their fields, read back typed and upcast."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar
from uuid import uuid4

import pytest
from dsi_shared import events
from dsi_shared.contracts import (
    Contract,
    PublicEvent,
    Upcaster,
    compatibility_problems,
    lock_entries,
    schema_version,
)
from dsi_shared.relay import outgoing
from dsi_shared.store import ServiceApplication
from eventsourcing.domain import Aggregate, event
from pydantic import ValidationError


class Widget(Aggregate):
    @event("WidgetPriced")
    def __init__(self, price: Decimal, owner_name: str) -> None:
        self.price, self.owner_name = price, owner_name

    @event("WidgetPolished")
    def polish(self) -> None:
        pass


class WidgetPriced(PublicEvent):
    subject = "dsi.enrollment.widget-priced"
    recorded_as = "Widget.WidgetPriced"
    price: Decimal


CONTRACT = Contract("enrollment", (WidgetPriced,))


def test_only_declared_events_leave_the_store_with_only_their_declared_fields(tmp_path: Path) -> None:
    app = ServiceApplication(f"sqlite:///{tmp_path / 'w.db'}")
    widget = Widget(Decimal("10.50"), "Jane Doe")
    widget.polish()
    app.save(widget)
    first, second = app.recorder.select_notifications(start=None, limit=2)
    subject, body = outgoing(CONTRACT, first.id, app.mapper.to_domain_event(first)) or ("", b"")
    received = events.decode(body, subject, "x")
    assert subject == "dsi.enrollment.widget-priced"
    assert received.data == {"price": "10.50", "aggregate_id": str(widget.id), "aggregate_version": 1}
    assert received.dataschema == "urn:dsi:schema:dsi.enrollment.widget-priced:1"
    assert b"Jane" not in body  # a field the contract does not declare never travels
    assert outgoing(CONTRACT, second.id, app.mapper.to_domain_event(second)) is None


def test_a_consumer_reads_the_typed_model_and_refuses_a_payload_that_breaks_it() -> None:
    envelope = events.IncomingEvent(type=WidgetPriced.subject, id="enrollment:1", source="/dsi/enrollment",
                                    data={"price": "3.20", "aggregate_id": str(uuid4()), "aggregate_version": 2,
                                          "added_later": True})
    read = WidgetPriced.read(envelope)
    assert isinstance(read, WidgetPriced) and read.price == Decimal("3.20") and read.aggregate_version == 2
    with pytest.raises(ValidationError):  # a ValueError: the consumer dead-letters it at once, with the reason
        WidgetPriced.read(events.IncomingEvent(type=WidgetPriced.subject, id="enrollment:2", source="/dsi/enrollment",
                                               data={"cost": "3.20", "aggregate_id": str(uuid4()),
                                                     "aggregate_version": 1}))


class WidgetPricedV2(PublicEvent):
    """Version 2 renamed `price` to `amount`: version-1 history is read through the upcaster."""

    subject = "dsi.enrollment.widget-priced"
    recorded_as = "Widget.WidgetPriced"
    version = 2
    upcasters: ClassVar[dict[int, Upcaster]] = {1: lambda d: {**{k: v for k, v in d.items() if k != "price"},
                                                              "amount": d["price"]}}
    amount: Decimal


def test_history_published_under_an_earlier_version_is_upcast_to_the_current_model() -> None:
    data: dict[str, Any] = {"price": "7", "aggregate_id": str(uuid4()), "aggregate_version": 1}
    for schema in ("urn:dsi:schema:dsi.enrollment.widget-priced:1", None):  # None: before schemas were named
        old = events.IncomingEvent(type=WidgetPriced.subject, id="enrollment:1", source="/dsi/enrollment",
                                   data=data, dataschema=schema)
        assert WidgetPricedV2.read(old).amount == Decimal("7")
    assert schema_version("urn:dsi:schema:dsi.enrollment.widget-priced:2") == 2


def test_removing_or_retyping_a_field_without_a_new_version_is_a_contract_break() -> None:
    locked = lock_entries([CONTRACT])

    class Renamed(PublicEvent):
        subject = "dsi.enrollment.widget-priced"
        recorded_as = "Widget.WidgetPriced"
        cost: Decimal

    class Retyped(PublicEvent):
        subject = "dsi.enrollment.widget-priced"
        recorded_as = "Widget.WidgetPriced"
        price: int

    class Added(WidgetPriced):
        colour: str | None = None

    assert compatibility_problems(locked, lock_entries([Contract("enrollment", (Renamed,))])) == [
        "dsi.enrollment.widget-priced v1: field price removed without a new version"]
    assert compatibility_problems(locked, lock_entries([Contract("enrollment", (Retyped,))])) == [
        "dsi.enrollment.widget-priced v1: field price retyped without a new version"]
    assert compatibility_problems(locked, lock_entries([Contract("enrollment", (Added,))])) == []
    assert compatibility_problems(locked, lock_entries([Contract("enrollment", (WidgetPricedV2,))])) == []
    assert compatibility_problems(locked, lock_entries([Contract("enrollment", ())])) == [
        "dsi.enrollment.widget-priced: no longer published"]


def test_a_contract_names_its_subjects_after_the_events_they_are_recorded_as() -> None:
    class Misnamed(PublicEvent):
        subject = "dsi.enrollment.widget-sold"
        recorded_as = "Widget.WidgetPriced"

    with pytest.raises(ValueError, match=r"does not name Widget\.WidgetPriced"):
        Contract("enrollment", (Misnamed,))
    with pytest.raises(ValueError, match="not a subject of payments"):
        Contract("payments", (WidgetPriced,))
