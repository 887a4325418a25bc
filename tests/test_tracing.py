"""One trace from the HTTP request that records the last signature, through NATS, to the payment."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import hl7
import hl7.mllp
import pytest
from dsi_shared.plantime import PLAN_ZONE
from dsi_shared.telemetry import inject
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from tests.harness import FORM, STAFF, Stack, eventually, signature
from tests.hl7_corpus import adt, combined
from tests.test_submissions import MEMBER, post_hl7, ready_snf

pytestmark = pytest.mark.integration


async def test_the_acceptance_request_and_the_payment_share_one_trace(stack: Stack, spans: InMemorySpanExporter) -> None:
    """Milestone 1 completes when the last of the three signed agreements is accepted: that request's trace runs
    through milestones to the payment."""
    await stack.start("enrollment", "milestones", "payments")
    pid = await stack.register()
    enrollment = stack.clients["enrollment"]
    for agreement in ("LOA", "DSA", "HIE"):
        await enrollment.post(f"/participants/{pid}/agreements", json=signature(agreement), headers=STAFF)
    spans.clear()
    await enrollment.post(f"/participants/{pid}/agreements/acceptance", json={}, headers=STAFF)

    def payment_consumed() -> list:  # type: ignore[type-arg]
        return [s for s in spans.get_finished_spans()
                if s.name == "process dsi.milestones.milestone-achieved" and s.instrumentation_scope.name == "dsi.payments"]

    async def check() -> list:  # type: ignore[type-arg]
        return payment_consumed()

    await eventually(check)
    finished = spans.get_finished_spans()
    request = next(s for s in finished if s.kind == SpanKind.SERVER
                   and s.name == "POST /participants/{participant_id}/agreements/acceptance")
    trace_id = request.context.trace_id
    hops = {(s.instrumentation_scope.name, s.name) for s in finished if s.context.trace_id == trace_id}
    assert {
        ("dsi.enrollment", "POST /participants/{participant_id}/agreements/acceptance"),
        ("dsi.enrollment", "publish dsi.enrollment.agreement-reviewed"),
        ("dsi.milestones", "process dsi.enrollment.agreement-reviewed"),
        ("dsi.milestones", "publish dsi.milestones.milestone-achieved"),
        ("dsi.payments", "process dsi.milestones.milestone-achieved"),
        ("dsi.payments", "publish dsi.payments.payment-issued"),
    } <= hops
    assert not [s for s in finished if s.instrumentation_scope.name == "fastapi"]  # its spans carry raw URL paths
    # Identifiers in URLs never reach span names or attributes; neither does anything from the form.
    for span in finished:
        text = span.name + repr(dict(span.attributes or {}))
        assert pid not in span.name and FORM["legal_name"] not in text and FORM["npi"] not in text


async def test_a_quarter_payment_links_back_to_the_hl7_file_it_pays_for(stack: Stack, spans: InMemorySpanExporter) -> None:
    pid = await ready_snf(stack)
    await stack.start("payments")
    spans.clear()
    [credited] = (await post_hl7(stack, combined("A01", MEMBER), "2025-11-01T18:00:00-07:00"))["submissions"]
    milestones = stack.runtimes["milestones"].app

    async def credit_known() -> bool:
        return credited["id"] in milestones.ledger_or_new(UUID(pid)).credits  # type: ignore[attr-defined]
    await eventually(credit_known)
    client = stack.clients["milestones"]
    await client.post("/quarters/2025Q4/close", headers=STAFF)
    [evaluation] = (await client.get("/evaluations", params={"state": "pending_validation"}, headers=STAFF)).json()["evaluations"]
    await client.post(f"/evaluations/{evaluation['id']}/validate", headers=STAFF)

    def named(name: str, scope: str) -> list[Any]:
        return [s for s in spans.get_finished_spans() if s.name == name and s.instrumentation_scope.name == scope]

    async def paid() -> list[Any]:
        return named("process dsi.milestones.evaluation-validated", "dsi.payments")
    await eventually(paid)
    [ingress] = named("POST /hl7", "dsi.submissions")
    [noted] = named("process dsi.submissions.submission-credited", "dsi.milestones")
    assert noted.context.trace_id == ingress.context.trace_id  # the file's trace reaches the credit ledger
    [evaluate] = named("evaluate participant", "dsi.milestones")
    assert ingress.context.trace_id in {link.context.trace_id for link in evaluate.links}  # the close links to it
    [validate] = named("validate evaluation", "dsi.milestones")
    assert [link.context.trace_id for link in validate.links] == [evaluate.context.trace_id]
    assert [s.context.trace_id for s in await paid()] == [validate.context.trace_id]

    async def issued() -> bool:  # and so is the quarter's payment
        return validate.context.trace_id in {s.context.trace_id for s in
                                             named("publish dsi.payments.payment-issued", "dsi.payments")}
    await eventually(issued)


async def test_an_mllp_message_starts_the_trace_its_events_travel_in(stack: Stack, spans: InMemorySpanExporter) -> None:
    await ready_snf(stack)
    snf_stack = stack
    spans.clear()
    reader, writer = await hl7.mllp.open_hl7_connection("127.0.0.1", snf_stack.mllp_port)
    # a timely admission (MLLP receipt is our clock): credited, so its credit is published in the message's trace
    admitted = (datetime.now(PLAN_ZONE) - timedelta(hours=1)).strftime("%Y%m%d%H%M%S%z")
    writer.writemessage(hl7.parse(adt("A01", MEMBER, control_id="TRACE1", occurred=admitted, recorded=admitted)))
    await asyncio.wait_for(reader.readmessage(), 30)
    writer.close()

    def mllp() -> list[Any]:
        return [s for s in spans.get_finished_spans() if s.name == "mllp message"]

    async def published() -> list[Any]:
        return [s for s in spans.get_finished_spans() if s.name == "publish dsi.submissions.submission-credited"
                and mllp() and s.context.trace_id == mllp()[0].context.trace_id]
    assert await eventually(published)
    stored = [s for s in spans.get_finished_spans() if s.name == "store append"
              and s.context.trace_id == mllp()[0].context.trace_id]
    assert stored and stored[0].attributes["dsi.store"] == "submissions"


async def test_one_trace_joins_all_five_services(stack: Stack, spans: InMemorySpanExporter) -> None:
    """A caller's W3C trace context, sent with its requests, is continued by every service the requests reach:
    the acceptance of the signed agreements (enrollment → milestones → payments, and submissions learns the
    milestone) and a roster
    naming the member's QIP entity (enrollment → qip-share)."""
    await stack.start("enrollment", "submissions", "milestones", "payments", "qip-share")
    pid = await stack.register()
    enrollment = stack.clients["enrollment"]
    for agreement in ("LOA", "DSA", "HIE"):
        await enrollment.post(f"/participants/{pid}/agreements", json=signature(agreement), headers=STAFF)
    spans.clear()
    with trace.get_tracer("tests").start_as_current_span("caller") as caller:
        headers = {**STAFF, **inject()}
        await enrollment.post(f"/participants/{pid}/agreements/acceptance", json={}, headers=headers)
        roster = f"member_id,kind,assignee,start,end\n{MEMBER},qip,1992753880,2025-01-01,\n"
        await enrollment.post("/attributions/import", content=roster, headers={**headers, "content-type": "text/csv"})
    trace_id = caller.get_span_context().trace_id

    async def joined() -> set[str]:
        scopes = {s.instrumentation_scope.name for s in spans.get_finished_spans() if s.context.trace_id == trace_id}
        wanted = {"dsi.enrollment", "dsi.submissions", "dsi.milestones", "dsi.payments", "dsi.qip-share"}
        return scopes if wanted <= scopes else set()
    await eventually(joined)
