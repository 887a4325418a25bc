"""One trace from the HTTP request that records the last signature, through NATS, to the payment."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from tests.harness import FORM, STAFF, Stack, eventually, signature

pytestmark = pytest.mark.integration


async def test_last_signature_request_and_the_payment_share_one_trace(stack: Stack, spans: InMemorySpanExporter) -> None:
    await stack.start("enrollment", "milestones", "payments")
    pid = await stack.register()
    enrollment = stack.clients["enrollment"]
    for agreement in ("LOA", "DSA"):
        await enrollment.post(f"/participants/{pid}/agreements", json=signature(agreement), headers=STAFF)
    spans.clear()
    await enrollment.post(f"/participants/{pid}/agreements", json=signature("HIE"), headers=STAFF)

    def payment_consumed() -> list:  # type: ignore[type-arg]
        return [s for s in spans.get_finished_spans()
                if s.name == "process dsi.milestones.milestone-achieved" and s.instrumentation_scope.name == "dsi.payments"]

    async def check() -> list:  # type: ignore[type-arg]
        return payment_consumed()

    await eventually(check)
    finished = spans.get_finished_spans()
    request = next(s for s in finished if s.kind == SpanKind.SERVER
                   and s.name == "POST /participants/{participant_id}/agreements")
    trace_id = request.context.trace_id
    hops = {(s.instrumentation_scope.name, s.name) for s in finished if s.context.trace_id == trace_id}
    assert {
        ("dsi.enrollment", "POST /participants/{participant_id}/agreements"),
        ("dsi.enrollment", "publish dsi.enrollment.agreement-signed"),
        ("dsi.milestones", "process dsi.enrollment.agreement-signed"),
        ("dsi.milestones", "publish dsi.milestones.milestone-achieved"),
        ("dsi.payments", "process dsi.milestones.milestone-achieved"),
        ("dsi.payments", "publish dsi.payments.payment-issued"),
    } <= hops
    assert not [s for s in finished if s.instrumentation_scope.name == "fastapi"]  # its spans carry raw URL paths
    # Identifiers in URLs never reach span names or attributes; neither does anything from the form.
    for span in finished:
        text = span.name + repr(dict(span.attributes or {}))
        assert pid not in span.name and FORM["legal_name"] not in text and FORM["npi"] not in text
