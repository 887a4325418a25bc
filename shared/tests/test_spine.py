"""The spine's pure parts and its store on SQLite: naming, envelopes, tokens, tracking, trace stamping."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from dsi_shared import events
from dsi_shared.blobs import Blob, BlobStore
from dsi_shared.bus import Naming, segment, service_stream
from dsi_shared.config import eventsourcing_env, parse_tokens
from dsi_shared.consumer import Subscription, by_stream, tracking_for
from dsi_shared.contracts import Delivered, Message
from dsi_shared.errors import InvalidMessage
from dsi_shared.store import ServiceApplication
from dsi_shared.telemetry import setup_telemetry
from eventsourcing.domain import Aggregate, event
from eventsourcing.persistence import Tracking
from opentelemetry import trace


class Thing(Aggregate):
    @event("ThingMade")
    def __init__(self, on: date, amount: Decimal) -> None:
        self.on, self.amount = on, amount


def test_event_names_and_subjects_follow_the_contract() -> None:
    assert events.kebab("MilestoneAchieved") == "milestone-achieved"
    assert events.kebab("PaymentIssued") == "payment-issued"
    assert segment("qip-share") == "qip" and service_stream("qip-share") == "DSI_QIP"
    naming = Naming("t1")
    assert naming.subject("dsi.in.agreement-signed") == "t1.dsi.in.agreement-signed"
    assert naming.contract_subject("t1.dsi.in.agreement-signed") == "dsi.in.agreement-signed"
    assert Naming("").stream("DSI_IN") == "DSI_IN" and naming.stream("DSI_IN") == "t1_DSI_IN"


def test_cloudevent_round_trip_keeps_money_exact_and_ids_traceable() -> None:
    body = events.encode("payments", 7, "dsi.payments.payment-issued", {"amount": Decimal("400.00"), "on": date(2025, 1, 2)},
                         time=datetime(2025, 1, 2, tzinfo=UTC), subject="p1")
    incoming = events.decode(body, "dsi.payments.payment-issued", "fallback")
    assert incoming.data == {"amount": "400.00", "on": "2025-01-02"}
    assert (incoming.id, incoming.source, incoming.upstream_position) == ("payments:7", "/dsi/payments", ("payments", 7))
    assert tracking_for(incoming, "DSI_PAYMENTS", 99) == Tracking("payments", 7)


def test_outside_publishers_are_tracked_by_stream_position() -> None:
    incoming = events.decode(b'{"participant_id": "x"}', "dsi.in.agreement-signed", "DSI_IN:5")
    assert incoming.source == "external"
    assert tracking_for(incoming, "DSI_IN", 5) == Tracking("nats:DSI_IN", 5)
    forged = events.IncomingEvent("dsi.in.x", {}, id="payments:1", source="external")
    assert tracking_for(forged, "DSI_IN", 6) == Tracking("nats:DSI_IN", 6)  # cannot claim another service's position


def test_a_claim_to_be_another_services_event_counts_only_on_that_services_stream() -> None:
    """"Tracking by upstream position must only be derived from the stream the message actually came from (a
    message on DSI_IN is tracked as DSI_IN position, whatever it claims)" (issue 12)."""
    body = events.encode("milestones", 7, "dsi.milestones.milestone-achieved", {}, time=datetime(2025, 1, 2, tzinfo=UTC),
                         subject="p1")
    planted = events.decode(body, "dsi.in.submission-received", "fallback")
    assert (planted.source, planted.upstream_position) == ("/dsi/milestones", ("milestones", 7))  # a perfect forgery
    assert tracking_for(planted, "DSI_IN", 41) == Tracking("nats:DSI_IN", 41)
    assert tracking_for(planted, "DSI_ENROLLMENT", 42) == Tracking("nats:DSI_ENROLLMENT", 42)
    assert tracking_for(planted, "DSI_MILESTONES", 43) == Tracking("milestones", 7)
    qip = events.decode(events.encode("qip-share", 3, "dsi.qip.delivery-recorded", {}, time=datetime(2025, 1, 2, tzinfo=UTC),
                                      subject="d"), "dsi.qip.delivery-recorded", "fallback")
    assert tracking_for(qip, "DSI_QIP", 9) == Tracking("qip-share", 3)


@pytest.mark.parametrize("body", [b"\xff", b"[1, 2]", b'{"specversion": "1.0"}'])
def test_malformed_messages_are_invalid(body: bytes) -> None:
    with pytest.raises(InvalidMessage):
        events.decode(body, "dsi.in.x", "f")


def test_tokens_map_to_known_roles_only() -> None:
    assert parse_tokens("a:program-staff, b:auditor") == {"a": "program-staff", "b": "auditor"}
    with pytest.raises(ValueError):
        parse_tokens("a:admin")


def test_store_url_selects_the_backend() -> None:
    assert eventsourcing_env("postgresql://u:p%40ss@db:5433/dsi_payments") == {
        "PERSISTENCE_MODULE": "eventsourcing.postgres", "POSTGRES_DBNAME": "dsi_payments", "POSTGRES_HOST": "db",
        "POSTGRES_PORT": "5433", "POSTGRES_USER": "u", "POSTGRES_PASSWORD": "p@ss"}
    with pytest.raises(ValueError):
        eventsourcing_env("mysql://x")


def test_tracking_is_exact_per_position_so_an_earlier_redelivery_still_applies(tmp_path: Path) -> None:
    app = ServiceApplication(f"sqlite:///{tmp_path / 's.db'}")
    assert app.save_tracked([Thing(date(2025, 1, 1), Decimal("1"))], Tracking("up", 3)) is True
    assert not app.has_processed(Tracking("up", 2))
    assert app.save_tracked([Thing(date(2025, 1, 1), Decimal("2"))], Tracking("up", 2)) is True
    assert app.save_tracked([Thing(date(2025, 1, 1), Decimal("3"))], Tracking("up", 3)) is False  # duplicate: nothing
    assert app.save_tracked([], Tracking("up", 4)) is True  # a no-op decision is tracked too
    assert app.has_processed(Tracking("up", 4))
    assert app.recorder.max_notification_id() == 2


def test_events_carry_the_trace_they_were_recorded_in_but_domain_events_do_not(tmp_path: Path) -> None:
    setup_telemetry("dsi-unit-tests")  # a real provider, else spans carry no context to stamp
    app = ServiceApplication(f"sqlite:///{tmp_path / 's.db'}")
    thing = Thing(date(2025, 1, 1), Decimal("1.10"))
    with trace.get_tracer("test").start_as_current_span("request") as span:
        app.save(thing)
        trace_id = format(span.get_span_context().trace_id, "032x")
    notification = app.recorder.select_notifications(start=None, limit=1)[0]
    domain_event, context = app.tracing_mapper.decode_notification(notification)
    assert context["traceparent"].split("-")[1] == trace_id
    assert "_trace_context" not in vars(app.repository.get(thing.id)) and domain_event.amount == Decimal("1.10")
    assert app.repository.get(thing.id).on == date(2025, 1, 1)


def test_subscriptions_are_grouped_into_one_ordered_consumer_per_stream() -> None:
    def handle(app: ServiceApplication, delivered: Delivered[Message]) -> list[Aggregate]:
        return []

    grouped = by_stream([Subscription("DSI_ENROLLMENT", "dsi.enrollment.agreement-signed", Message, handle),
                         Subscription("DSI_ENROLLMENT", "dsi.enrollment.agreement-reviewed", Message, handle),
                         Subscription("DSI_IN", "dsi.in.agreement-signed", Message, handle)])
    assert {stream: sorted(handlers) for stream, handlers in grouped.items()} == {
        "DSI_ENROLLMENT": ["dsi.enrollment.agreement-reviewed", "dsi.enrollment.agreement-signed"],
        "DSI_IN": ["dsi.in.agreement-signed"]}
    with pytest.raises(ValueError, match="not a subject of DSI_IN"):
        by_stream([Subscription("DSI_IN", "dsi.enrollment.agreement-signed", Message, handle)])
    with pytest.raises(ValueError, match="two handlers"):
        by_stream([Subscription("DSI_IN", "dsi.in.x", Message, handle), Subscription("DSI_IN", "dsi.in.x", Message, handle)])


def test_blobs_are_kept_once_by_hash_beside_the_event_store(tmp_path: Path) -> None:
    app = ServiceApplication(f"sqlite:///{tmp_path / 'blobs.db'}")
    blobs = BlobStore(app)
    first = Blob("ab" * 32, 3, "text/plain", "k1", b"\x00\x01\x02")
    blobs.put(first)
    blobs.put(Blob("ab" * 32, 1, "other", "k2", b"x"))  # same hash again: the first row stands
    assert blobs.get("ab" * 32) == first
    assert blobs.get("cd" * 32) is None
    assert BlobStore(app).get("ab" * 32) == first  # the table survives a second opening


def test_json_nested_past_the_limit_is_refused_before_parsing() -> None:
    """Issue 12 §4: JSON nested 2,000 levels raised RecursionError (a 500)."""
    from dsi_shared import jsonsafe

    deep = "[" * 2000 + "]" * 2000
    with pytest.raises(jsonsafe.JsonTooDeep):
        jsonsafe.loads(deep)
    assert isinstance(jsonsafe.JsonTooDeep("x"), ValueError)
    assert jsonsafe.json_depth('{"a": ["[[[[", {"b": "\\"]]]"}]}') == 3  # brackets inside strings do not nest
    assert jsonsafe.loads(b'{"a": [1, {"b": 2}]}') == {"a": [1, {"b": 2}]}


def test_every_command_retries_a_version_conflict_through_one_helper() -> None:
    """Issue 12 §4: concurrent writers got IntegrityError (500). The helper decides again; a conflict that
    persists is ConcurrentChange (HTTP 409, a redelivery on NATS), never a raw IntegrityError."""
    from dsi_shared.occ import ConcurrentChange, retry_on_conflict
    from eventsourcing.persistence import IntegrityError

    calls: list[int] = []

    def conflicted_twice() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise IntegrityError("duplicate key")
        return "saved"

    assert retry_on_conflict(conflicted_twice) == "saved" and len(calls) == 3

    def always() -> None:
        raise IntegrityError("duplicate key")

    with pytest.raises(ConcurrentChange, match="the participant changed concurrently 4 times"):
        retry_on_conflict(always, "the participant", attempts=4)
