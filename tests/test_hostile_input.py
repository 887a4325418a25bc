"""Issue 12 §4, "No 500 for any input": hostile or careless input over HTTP, MLLP and NATS gets a 4xx problem JSON
(or an HL7 NAK) and records nothing it should not; concurrent writers to one aggregate are retried, not 500."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import hl7.mllp
import httpx
import pytest
from dsi_shared.natsserver import NatsServer

from tests.harness import STAFF, Stack, eventually, quiet, signature
from tests.hl7_corpus import adt
from tests.x12_834 import cin

pytestmark = pytest.mark.integration
HIE = {"Authorization": "Bearer hie-token"}
PROBLEM = "application/problem+json"
ELIGIBILITY_HEADER = ("member_id,last_name,first_name,birth_date,eligibility_start,eligibility_end,aid_code,"
                      "other_health_coverage,dual_eligible,frozen_member_ids")


def npi(base: int) -> str:
    """A valid NPI (Luhn check digit over 80840 + the first nine digits) from a nine-digit base."""
    digits = f"80840{base:09d}"
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return f"{base:09d}{(10 - total % 10) % 10}"


def assert_problem(response: httpx.Response, *statuses: int) -> dict[str, Any]:
    assert response.status_code in statuses, (response.status_code, response.text[:500])
    assert response.headers["content-type"].startswith(PROBLEM), response.headers["content-type"]
    body: dict[str, Any] = response.json()
    assert body["status"] == response.status_code
    return body


# -- concurrent writes to one aggregate ------------------------------------------------------------------------------
async def test_concurrent_commands_on_one_aggregate_are_retried_not_500(stack: Stack, store_kind: str) -> None:
    """10 signatures on one participant at once, staff acceptance racing rejections, ten withdrawals of one
    participant, four rosters touching the same members: no 5xx, and the final state is exactly right."""
    await stack.start("enrollment")
    client = stack.clients["enrollment"]
    signer, reviewed, leaver = [await stack.register(npi=npi(123456780 + n)) for n in range(3)]
    signed = await client.post(f"/participants/{reviewed}/agreements", json=signature("LOA"), headers=STAFF)
    assert signed.status_code == 201
    members = [cin(i) for i in range(1, 21)]
    rosters = ["\n".join([ELIGIBILITY_HEADER, *(f"{m},DOE,JANE,1980-01-01,{year}-01-01,{year}-12-31,1H,N,N,"
                                               for m in members)]) + "\n" for year in (2021, 2022, 2023, 2024)]

    def sign(n: int) -> Any:
        body = {**signature(("LOA", "DSA", "HIE")[n % 3]), "document_id": f"doc-{n}"}
        return client.post(f"/participants/{signer}/agreements", json=body, headers=STAFF)

    reject = {"document_id": "doc-LOA", "decision": "rejected", "reason": "unsigned page 3"}
    requests = [
        *(sign(n) for n in range(10)),
        client.post(f"/participants/{reviewed}/agreements/acceptance", json={}, headers=STAFF),
        *(client.post(f"/participants/{reviewed}/agreements/LOA/reviews", json=reject, headers=STAFF) for _ in range(5)),
        *(client.post(f"/participants/{leaver}/withdrawal", json={"effective_on": "2025-01-01", "reason": "closing"},
                      headers=STAFF) for _ in range(10)),
        *(client.post("/members/import", content=r, headers={**STAFF, "content-type": "text/csv"}) for r in rosters),
    ]
    responses = await asyncio.wait_for(asyncio.gather(*requests), 120)
    assert [r.status_code for r in responses if r.status_code >= 500] == []
    signatures, acceptance, rejections = responses[:10], responses[10], responses[11:16]
    withdrawals, imports = responses[16:26], responses[26:]
    assert {r.status_code for r in signatures} == {201}
    assert acceptance.status_code == 200 and {r.status_code for r in rejections} == {200}
    assert sorted(r.status_code for r in withdrawals) == [200] + [409] * 9
    assert all("already withdrawn" in r.json()["detail"] for r in withdrawals if r.status_code == 409)
    assert {r.status_code for r in imports} == {200} and all(r.json()["accepted"] == 20 for r in imports)

    shown = (await client.get(f"/participants/{signer}", headers=STAFF)).json()
    assert sorted(s["document_id"] for s in shown["signatures"]) == sorted(f"doc-{n}" for n in range(10))
    loa = (await client.get(f"/participants/{reviewed}", headers=STAFF)).json()["agreements"]["LOA"]
    assert loa["status"] == "rejected"  # a rejection stands whichever came first; the acceptance never overrides it
    history = (await client.get(f"/participants/{reviewed}", headers=STAFF)).json()["history"]
    assert sum(h["event"].endswith("AgreementReviewed") for h in history) in {1, 2}
    left = (await client.get(f"/participants/{leaver}", headers=STAFF)).json()
    assert left["status"] == "withdrawn"
    assert sum(h["event"].endswith("ParticipantDeparted") for h in left["history"]) == 1
    for member in members[:3] + members[-2:]:
        spans = (await client.get(f"/members/{member}", headers=STAFF)).json()["spans"]
        assert [s["start"] for s in spans] == ["2021-01-01", "2022-01-01", "2023-01-01", "2024-01-01"]


# -- HL7 timestamps outside any sane range ----------------------------------------------------------------------------
FAR_OFF = "99991231235959-1400"  # overflowed on conversion to UTC (OverflowError → 500 / closed MLLP connection)


async def facility_known(stack: Stack) -> str:
    await stack.start("enrollment", "submissions")
    pid = await stack.register(npi=npi(987654321), sending_facilities=["SUNNY_SNF"])
    app = stack.runtimes["submissions"].app

    async def known() -> bool:
        return app.participant_for_facility(("SUNNY_SNF",)) is not None  # type: ignore[attr-defined]

    await eventually(known, timeout=30)
    return pid


def assert_data_type_error(ack: str, control_id: str) -> None:
    segments = ack.replace("\r", "\n").split("\n")
    assert f"MSA|AE|{control_id}" in segments, ack
    assert any(s.startswith("ERR||EVN^1^6|102^Data type error^HL70357|") and "EVN-6" in s for s in segments), ack


async def test_a_far_off_event_time_is_AE_102_over_http_mllp_and_nats(stack: Stack) -> None:
    pid = await facility_known(stack)
    client = stack.clients["submissions"]
    # HTTP: an answer per message, AE naming EVN-6 as a data type error; the file is recorded as not earning
    response = await client.post("/hl7", content=adt("A01", cin(1), occurred=FAR_OFF, control_id="FAR1").encode(),
                                 headers={**HIE, "content-type": "x-application/hl7-v2+er7"})
    assert response.status_code == 200, response.text
    [message] = response.json()["messages"]
    assert (message["ack_code"], message["problems"]) == ("AE", ["EVN-6 malformed"])
    assert_data_type_error(message["ack"], "FAR1")
    [submission] = response.json()["submissions"]
    assert submission["verdict"] != "credited" and submission["facts"]["event_time"] is None

    # MLLP: the frame is answered (not a closed connection) and the next frame on the connection still is
    reader, writer = await hl7.mllp.open_hl7_connection("127.0.0.1", stack.mllp_port)
    try:
        writer.writeblock(adt("A01", cin(1), occurred=FAR_OFF, control_id="FAR2").encode())
        await writer.drain()
        assert_data_type_error((await asyncio.wait_for(reader.readblock(), 10)).decode(), "FAR2")
        writer.writeblock(adt("A01", cin(1), control_id="NEXT3").encode())
        await writer.drain()
        assert "MSA|A" in (await asyncio.wait_for(reader.readblock(), 10)).decode()
    finally:
        writer.close()

    # NATS: recorded once with the problem, not retried five times into a dead letter
    await stack.publish("dsi.in.submission-received", {
        "hie_submission_id": "hie-far-4", "sending_facility": "SUNNY_SNF", "received_at": "2025-11-01T10:00:00-07:00",
        "content_type": "x-application/hl7-v2+er7", "payload": adt("A01", cin(1), occurred=FAR_OFF, control_id="FAR4")})

    async def recorded() -> list[dict[str, Any]]:
        found = (await client.get(f"/participants/{pid}/submissions", headers=STAFF)).json()["submissions"]
        return [s for s in found if s["hie_submission_id"] == "hie-far-4"]

    [by_nats] = await eventually(recorded, timeout=20)
    assert by_nats["facts"]["messages"][0]["problems"] == ["EVN-6 malformed"]
    await quiet(stack)
    assert len(await recorded()) == 1


# -- receipt times outside any sane range -----------------------------------------------------------------------------
@pytest.mark.parametrize("received_at", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"])
async def test_a_far_off_received_at_is_422_and_records_nothing(stack: Stack, received_at: str) -> None:
    pid = await facility_known(stack)
    client = stack.clients["submissions"]
    hl7_response = await client.post("/hl7", content=adt("A01", cin(1)).encode(), params={"received_at": received_at},
                                     headers={**HIE, "content-type": "x-application/hl7-v2+er7"})
    assert "received_at" in assert_problem(hl7_response, 422)["detail"]
    record = {"resourceType": "Bundle", "type": "collection", "entry": []}
    record_response = await client.post("/longitudinal-records", content=json.dumps(record),
                                         params={"received_at": received_at, "participant_id": pid},
                                         headers={**HIE, "content-type": "application/fhir+json"})
    assert "received_at" in assert_problem(record_response, 422)["detail"]
    listed = (await client.get(f"/participants/{pid}/submissions", headers=STAFF)).json()
    assert listed["count"] == 0
    signed = await stack.clients["enrollment"].post(
        f"/participants/{pid}/agreements", json={**signature("LOA"), "signed_at": received_at}, headers=STAFF)
    assert "signed_at" in assert_problem(signed, 422)["detail"]


# -- JSON nested 2,000 levels -----------------------------------------------------------------------------------------
def nested(levels: int, resource_type: str) -> str:
    return '{"resourceType": "' + resource_type + '", "extension": ' + "[" * levels + "]" * levels + "}"


async def test_json_nested_2000_levels_is_422_not_a_recursion_error(stack: Stack) -> None:
    await stack.start("enrollment", "submissions", "qip-share")
    pid = await stack.register(npi=npi(555555555))
    fhir = {**STAFF, "content-type": "application/fhir+json"}
    atr = await stack.clients["enrollment"].post("/attributions/import", content=nested(2000, "Group"), headers=fhir)
    assert "nests deeper" in assert_problem(atr, 422)["detail"]
    value_set = await stack.clients["qip-share"].post("/value-sets", content=nested(2000, "ValueSet"), headers=fhir)
    assert_problem(value_set, 422)
    record = await stack.clients["submissions"].post("/longitudinal-records", content=nested(2000, "Bundle"),
                                                     params={"participant_id": pid}, headers=fhir)
    assert "nests deeper" in assert_problem(record, 422)["detail"]
    assert (await stack.clients["submissions"].get(f"/participants/{pid}/submissions", headers=STAFF)).json()["count"] == 0
    assert (await stack.clients["qip-share"].get("/value-sets", headers=STAFF)).status_code == 200


# -- Unicode digits and far-off quarters ------------------------------------------------------------------------------
async def test_fullwidth_digits_and_far_off_quarters_are_422(stack: Stack) -> None:
    await stack.start("milestones", "payments")
    milestones, payments = stack.clients["milestones"], stack.clients["payments"]
    assert_problem(await payments.get("/payments/export", params={"quarter": "２０２５Q4"}, headers=STAFF), 422)
    assert_problem(await milestones.get("/quarters/２０２５Q4", headers=STAFF), 422)
    assert_problem(await milestones.get("/evaluations", params={"quarter": "٢٠٢٥Q4"}, headers=STAFF), 422)
    for far in ("9999Q4", "0001Q1"):
        assert "year" in assert_problem(await milestones.post(f"/quarters/{far}/close", headers=STAFF), 422)["detail"]
        assert_problem(await milestones.get(f"/quarters/{far}", headers=STAFF), 422)
        assert_problem(await payments.get("/payments/export", params={"quarter": far}, headers=STAFF), 422)
    assert (await milestones.get("/evaluations", headers=STAFF)).json()["count"] == 0


# -- the audit with NATS down -----------------------------------------------------------------------------------------
async def test_audit_verify_with_nats_down_is_a_prompt_503_naming_nats(tmp_path: Path, bus_prefix: str,
                                                                       store_url_for) -> None:  # type: ignore[no-untyped-def]
    server = NatsServer(tmp_path / "nats").start()
    stack = Stack(server.url, bus_prefix, store_url_for)
    try:
        await stack.start("enrollment")
        auditor = {"Authorization": "Bearer auditor-token"}
        assert (await stack.clients["enrollment"].get("/audit/verify", headers=auditor)).status_code == 200
        server.kill()
        started = time.monotonic()
        response = await stack.clients["enrollment"].get("/audit/verify", headers=auditor)
        body = assert_problem(response, 503)
        assert time.monotonic() - started < 4.0
        assert body["dependency"] == "nats" and "NATS" in body["detail"] and response.headers["retry-after"]
    finally:
        await stack.close()
        server.stop()


# -- an end before its start ------------------------------------------------------------------------------------------
async def test_an_end_before_its_start_is_422_not_409(stack: Stack) -> None:
    await stack.start("qip-share")
    client = stack.clients["qip-share"]
    requirement = {"code": "Q-BACKWARDS", "title": "backwards period", "period_start": "2025-12-31",
                   "period_end": "2025-01-01", "due_date": "2026-03-31"}
    assert "before" in assert_problem(await client.post("/requirements", json=requirement, headers=STAFF), 422)["detail"]
    window = {**requirement, "period_start": "2025-01-01", "period_end": "2025-12-31",
              "data_window_start": "2025-06-01", "data_window_end": "2025-01-01"}
    assert "before" in assert_problem(await client.post("/requirements", json=window, headers=STAFF), 422)["detail"]
    assert (await client.get("/requirements", headers=STAFF)).json()["requirements"] == []
    basis = {"basis": "part2_consent", "start": "2025-06-01", "end": "2025-01-01", "reference": "consent 1"}
    legal = await client.post(f"/members/{cin(1)}/legal-bases", json=basis, headers=STAFF)
    assert_problem(legal, 422)
