"""No PHI in spans or logs (DESIGN.md §5): a run of all five services over a corpus of members — rosters (CSV, 834),
HL7 files by HTTP and MLLP (good and malformed), QIP feeds and a delivery, bad requests naming members, a poison
message — then every exported span (names, attributes, events, status) and every log line is scanned for every
member id, name, birth date and address in the corpus."""

from __future__ import annotations

import asyncio
import logging

import hl7
import hl7.mllp
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.harness import STAFF, Stack, quiet
from tests.hl7_corpus import adt, combined
from tests.test_submissions import CSV, ENDED, HIE, MEMBER, OTHER, post_hl7, ready_snf
from tests.x12_834 import Enrollee, build_834, cin

pytestmark = pytest.mark.integration
EXTRA = Enrollee(cin(40), family="QUINTANILLA", given="EUSEBIA", birth="19371109")
PHI = [MEMBER, ENDED, OTHER, EXTRA.cin, "DOE", "JANE", "ROE", "RITA", "QUINTANILLA", "EUSEBIA", "19450612",
       "1945-06-12", "1950-01-01", "19371109", "123 MAIN ST", "MRN556"]


def span_text(spans: InMemorySpanExporter) -> str:
    parts = []
    for span in spans.get_finished_spans():
        parts += [span.name, repr(dict(span.attributes or {})), span.status.description or ""]
        parts += [event.name + repr(dict(event.attributes or {})) for event in span.events]
        parts += [repr(dict(link.attributes or {})) for link in span.links]
    return "\n".join(parts)


async def test_no_member_id_name_birth_date_or_address_reaches_spans_or_logs(
        stack: Stack, spans: InMemorySpanExporter, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    spans.clear()
    await ready_snf(stack)  # members by CSV, a participant, its agreements
    await stack.start("payments", "qip-share")
    enrollment, qip = stack.clients["enrollment"], stack.clients["qip-share"]
    await enrollment.post("/members/import", content=build_834([EXTRA]), headers={**STAFF, "content-type": "text/plain"})
    await enrollment.post("/members/import", content=CSV.replace("1H", ""), headers={**STAFF, "content-type": "text/csv"})
    await enrollment.get(f"/members/{MEMBER}", headers=STAFF)
    await enrollment.get("/members/DOE-JANE-19450612", headers=STAFF)
    entity = (await qip.post("/entities", headers=STAFF, json={
        "kind": "DPH", "name": "County Hospital", "identifiers": {"npi": "1992753883"}, "address": "1 Way, Fresno CA",
        "endpoint": "sftp://x"})).json()
    roster = f"member_id,kind,assignee,start,end\n{MEMBER},qip,1992753883,2025-01-01,\n{EXTRA.cin},qip,1992753883,2025-01-01,\n"
    await enrollment.post("/attributions/import", content=roster, headers={**STAFF, "content-type": "text/csv"})

    await post_hl7(stack, combined("A01", MEMBER), "2025-11-01T18:00:00-07:00")
    await post_hl7(stack, combined("A01", ENDED, visit="V0009"), "2025-11-01T18:00:00-07:00")
    await stack.clients["submissions"].post("/hl7", content=b"MSH|^~\\&|broken\rPID|1||" + MEMBER.encode() + b"||DOE^JANE",
                                            params={"received_at": "2025-11-01T18:00:00-07:00"},
                                            headers={**HIE, "content-type": "x-application/hl7-v2+er7"})
    reader, writer = await hl7.mllp.open_hl7_connection("127.0.0.1", stack.mllp_port)
    writer.writemessage(hl7.parse(adt("A01", OTHER, control_id="PHI1")))
    await asyncio.wait_for(reader.readmessage(), 30)
    writer.close()
    await stack.publish("dsi.in.submission-received", {"hie_submission_id": "x", "received_at": "bad", "content_type": "x",
                                                       "payload": combined("A01", MEMBER)})

    await qip.post("/value-sets", headers=STAFF, json={
        "resourceType": "ValueSet", "url": "http://example.org/vs", "version": "1", "name": "Vs", "status": "active",
        "expansion": {"timestamp": "2025-01-01T00:00:00Z", "contains": [{"system": "http://loinc.org", "code": "4548-4"}]}})
    await qip.post("/requirements", headers=STAFF, json={"code": "R1", "title": "r one", "period_start": "2025-01-01",
                                                         "period_end": "2025-12-31", "due_date": "2026-03-31"})
    await qip.post("/feeds/lab_results", headers=STAFF, content=(
        f"result_id,cin,collected_date,loinc,value,unit\nL1,{MEMBER},2025-03-01,4548-4,6.1,%\n"
        f"L2,{EXTRA.cin},2025-13-01,4548-4,6.1,%\nL3,{OTHER},2025-03-01,4548-4,x,%\n"))
    await qip.post("/feeds/eligibility", headers=STAFF, content=(
        f"cin,birth_date,sex,aid_code,start_date\n{MEMBER},1945-06-12,F,1H,2024-01-01\n{EXTRA.cin},19371109,F,1H,bad\n"))
    await quiet(stack)
    delivered = await qip.post("/deliveries?wait=true", headers=STAFF, json={"entity_id": entity["id"], "requirement": "R1"})
    assert delivered.status_code == 201, delivered.text
    await qip.get(f"/members/{MEMBER}/disclosures", headers=STAFF)
    await qip.post(f"/members/{MEMBER}/legal-bases", headers=STAFF,
                   json={"basis": "nonsense", "start": "2025-01-01", "reference": "JANE DOE consent"})
    await quiet(stack)

    exported = span_text(spans)
    # Every log record but the test's own HTTP client's (which prints the URLs this test asks for).
    logged = "\n".join(caplog.handler.format(r) for r in caplog.records if not r.name.startswith("httpx"))
    assert "POST /deliveries" in exported and "mllp message" in exported and "store append" in exported  # it did run
    for value in PHI:
        assert value not in exported, f"{value!r} in a span"
        assert value not in logged, f"{value!r} in a log line"
