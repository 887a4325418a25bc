"""Submissions end to end on real NATS + PostgreSQL: HTTP, NATS and MLLP (with python-hl7's `mllp_send`) into
verdicts; credits once per event, cancels, timeliness, membership, participant facts; bad input never crashes."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any
from uuid import UUID

import hl7
import hl7.mllp
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.harness import STAFF, Stack, eventually, signature
from tests.hl7_corpus import adt, batch, combined
from tests.x12_834 import cin

pytestmark = pytest.mark.integration
MEMBER, ENDED, OTHER = cin(1), cin(2), cin(3)
HIE = {"Authorization": "Bearer hie-token"}
CSV = ("member_id,last_name,first_name,birth_date,eligibility_start,eligibility_end,aid_code,"
       "other_health_coverage,dual_eligible\n"
       f"{MEMBER},DOE,JANE,1945-06-12,2025-01-01,,1H,N,N\n"
       f"{ENDED},ROE,RITA,1950-01-01,2025-01-01,2025-10-31,1H,N,N\n")


async def ready_snf(stack: Stack) -> str:
    """An SNF that sends as SUNNY_SNF, achieved Milestone 1, and two plan members, known to submissions."""
    await stack.start("enrollment", "milestones", "submissions")
    pid = await stack.register(sending_facilities=["SUNNY_SNF"])
    for agreement in ("LOA", "DSA", "HIE"):
        await stack.clients["enrollment"].post(f"/participants/{pid}/agreements", json=signature(agreement), headers=STAFF)
    await stack.accept_agreements(pid)
    await stack.clients["enrollment"].post("/members/import", content=CSV, headers={**STAFF, "content-type": "text/csv"})
    app = stack.runtimes["submissions"].app

    async def known() -> bool:
        facts = app.participant_facts(__import__("uuid").UUID(pid))  # type: ignore[attr-defined]
        ended = app.member_facts(ENDED)  # type: ignore[attr-defined]
        return bool(facts and facts.milestone1_at and app.member_facts(MEMBER)  # type: ignore[attr-defined]
                    and ended and any(s["end"] for s in ended.spans.values()))

    await eventually(known, timeout=30)
    return pid


async def ready_pcp(stack: Stack, roster: str, attributed: tuple[str, ...]) -> str:
    """A primary care participant past Milestone 1, the `roster` imported and the `attributed` members attributed to
    it from 2025-01-01, all known to submissions."""
    await stack.start("enrollment", "milestones", "submissions")
    client = stack.clients["enrollment"]
    pid = await stack.register(provider_type="primary_care", submitted_on="2024-08-01", npi="1666666668")
    for agreement in ("LOA", "DSA", "HIE"):
        await client.post(f"/participants/{pid}/agreements", json=signature(agreement, "2024-11-01T10:00:00-07:00"),
                          headers=STAFF)
    await stack.accept_agreements(pid)
    await client.post("/members/import", content=roster, headers={**STAFF, "content-type": "text/csv"})
    attributions = "".join(f"{m},pcp,{pid},2025-01-01,\n" for m in attributed)
    await client.post("/attributions/import", content="member_id,kind,assignee,start,end\n" + attributions,
                      headers={**STAFF, "content-type": "text/csv"})
    app: Any = stack.runtimes["submissions"].app

    async def known() -> bool:
        facts = app.participant_facts(UUID(pid))
        return bool(facts and facts.milestone1_at and all(
            (m := app.member_facts(member)) and m.attributions for member in attributed))

    await eventually(known, timeout=30)
    return pid


async def post_hl7(stack: Stack, text: str, received_at: str, headers: dict[str, str] = HIE) -> dict[str, Any]:
    response = await stack.clients["submissions"].post("/hl7", content=text.encode(), params={"received_at": received_at},
                                                       headers={**headers, "content-type": "x-application/hl7-v2+er7"})
    assert response.status_code == 200, response.text
    return dict(response.json())


@pytest.fixture
async def snf(stack: Stack) -> tuple[Stack, str]:
    return stack, await ready_snf(stack)


async def test_a_timely_complete_file_earns_400_once_and_a_cancel_withdraws_it(snf: tuple[Stack, str]) -> None:
    stack, pid = snf
    first = await post_hl7(stack, combined("A01", MEMBER), "2025-11-01T18:00:00-07:00")
    assert [m["ack_code"] for m in first["messages"]] == ["AA", "AA", "AA"]
    [credited] = first["submissions"]
    assert (credited["verdict"], credited["amount"], credited["credit"]["quarter"]) == ("credited", "400.00", "2025Q4")
    assert credited["facts"]["event_time_source"] == "EVN-6"
    resent = await post_hl7(stack, combined("A01", MEMBER), "2025-11-01T19:00:00-07:00")  # new MSH-10s, same event
    assert resent["submissions"][0]["reasons"] == [f"duplicate_of:{credited['id']}"]
    cancel = await post_hl7(stack, adt("A11", MEMBER), "2025-11-02T09:00:00-08:00")
    assert cancel["submissions"][0]["verdict"] == "recorded"
    assert cancel["submissions"][0]["reasons"] == [f"cancels:{credited['id']}"]
    shown = (await stack.clients["submissions"].get(f"/submissions/{credited['id']}", headers=STAFF)).json()
    assert (shown["amount"], shown["reversed_by"]) == ("0.00", cancel["submissions"][0]["id"])
    listed = (await stack.clients["submissions"].get(f"/participants/{pid}/submissions", headers=STAFF)).json()
    assert listed["count"] == 3


async def test_each_reason_a_file_fails(snf: tuple[Stack, str]) -> None:
    stack, _ = snf
    on_time = await post_hl7(stack, combined("A03", MEMBER, occurred="20251105080000"), "2025-11-08T07:59:00-08:00")
    assert on_time["submissions"][0]["verdict"] == "credited"
    late = await post_hl7(stack, combined("A02", MEMBER, occurred="20251105080000"), "2025-11-08T08:01:00-08:00")
    assert late["submissions"][0]["reasons"] == ["late"]
    not_member = await post_hl7(stack, combined("A01", ENDED, occurred="20251101080000"), "2025-11-01T12:00:00-07:00")
    assert not_member["submissions"][0]["reasons"] == ["not_a_member"]  # eligibility ended the day before
    early = await post_hl7(stack, combined("A01", MEMBER, visit="V9", occurred="20250930230000"), "2025-10-01T01:00:00-07:00")
    assert early["submissions"][0]["reasons"] == ["before_data_sharing_start"]
    # (a file without a visit id is no longer incomplete since issue 13: tests/test_real_senders_hl7.py)
    no_cin = combined("A01", MEMBER).replace(f"{MEMBER}^^^CAMEDICAL^MA~", "")
    incomplete = await post_hl7(stack, no_cin, "2025-11-01T12:00:00-07:00")
    assert incomplete["messages"][0]["ack_code"] == "AE" and "PID^1^3|101^" in incomplete["messages"][0]["ack"]
    assert "incomplete:PID-3 has no Medi-Cal CIN (identifier type MA)" in incomplete["submissions"][0]["reasons"]
    update = await post_hl7(stack, adt("A08", MEMBER), "2025-11-01T12:00:00-07:00")
    assert (update["submissions"][0]["verdict"], update["submissions"][0]["reasons"]) == (
        "recorded", ["not_a_qualifying_event:A08"])
    stranger = await post_hl7(stack, combined("A01", MEMBER, facility="OTHER_SNF"), "2025-11-01T12:00:00-07:00")
    assert stranger["messages"][0]["ack_code"] == "AR" and stranger["submissions"][0]["reasons"] == ["unknown_sending_facility"]
    wrong_version = await post_hl7(stack, adt("A01", MEMBER, version="3.0"), "2025-11-01T12:00:00-07:00")
    assert wrong_version["messages"][0]["ack_code"] == "AR"
    garbage = await post_hl7(stack, "\x00\x01binary\xff", "2025-11-01T12:00:00-07:00")
    assert garbage["messages"][0]["ack_code"] == "AR" and garbage["submissions"][0]["reasons"] == ["not_hl7"]
    unauthenticated = await stack.clients["submissions"].post("/hl7", content=b"MSH", headers={})
    assert unauthenticated.status_code == 401


async def test_a_file_that_arrives_before_its_members_eligibility_is_judged_again_when_it_arrives(
        snf: tuple[Stack, str]) -> None:
    """"Money never depends on the order in which two streams' messages arrive" (DOMAIN.md A4): a file for a member
    whose eligibility has not reached submissions yet (a roster imported after the file; retroactive eligibility; a
    frozen CIN linked later) is `not_a_member` until it does, then credited; a file for someone who never becomes a
    member stays `not_a_member`."""
    stack, _ = snf
    late_roster, frozen, current, stranger = cin(40), cin(41), cin(42), cin(43)
    waits = await post_hl7(stack, combined("A01", late_roster, visit="V40"), "2025-11-01T12:00:00-07:00")
    old_cin = await post_hl7(stack, combined("A01", frozen, visit="V41"), "2025-11-01T12:00:00-07:00")
    never = await post_hl7(stack, combined("A01", stranger, visit="V43"), "2025-11-01T12:00:00-07:00")
    files = [waits["submissions"][0], old_cin["submissions"][0], never["submissions"][0]]
    assert [f["reasons"] for f in files] == [["not_a_member"]] * 3
    roster = (CSV.splitlines()[0] + ",frozen_member_ids\n" + f"{late_roster},LATE,LEE,1940-01-01,2025-01-01,,1H,N,N,\n"
              f"{current},NEW,NED,1941-01-01,2025-01-01,,1H,N,N,{frozen}\n")
    imported = await stack.clients["enrollment"].post("/members/import", content=roster,
                                                      headers={**STAFF, "content-type": "text/csv"})
    assert imported.status_code == 200, imported.text

    async def shown(submission: dict[str, Any]) -> dict[str, Any]:
        return dict((await stack.clients["submissions"].get(f"/submissions/{submission['id']}", headers=STAFF)).json())

    async def both_credited() -> list[dict[str, Any]] | None:
        now = [await shown(f) for f in files[:2]]
        return now if all(f["verdict"] == "credited" for f in now) else None

    credited = await eventually(both_credited, timeout=30)
    assert [(f["amount"], f["credit"]["quarter"]) for f in credited] == [("400.00", "2025Q4")] * 2
    assert [[h.get("judged_again") for h in f["history"] if "judged_again" in h] for f in credited] == [
        ["member eligibility noted"], ["frozen CIN linked"]]
    assert (await shown(files[2]))["reasons"] == ["not_a_member"]


async def test_the_hie_notification_on_nats_credits_the_same_way(snf: tuple[Stack, str]) -> None:
    stack, pid = snf
    await stack.publish("dsi.in.submission-received", {
        "hie_submission_id": "HIE-1", "sending_facility": "SUNNY_SNF", "received_at": "2025-11-01T18:00:00-07:00",
        "content_type": "x-application/hl7-v2+er7", "payload": batch(combined("A01", MEMBER))})
    app = stack.runtimes["submissions"].app

    async def credited() -> list:  # type: ignore[type-arg]
        return [s for s in app.submissions_of(__import__("uuid").UUID(pid)) if s.verdict == "credited"]  # type: ignore[attr-defined]

    [submission] = await eventually(credited)
    assert (submission.channel, submission.hie_submission_id) == ("nats", "HIE-1")
    assert app.payload(submission.payload_sha256).startswith(b"FHS|")  # type: ignore[attr-defined]


async def test_mllp_with_a_real_client_concurrent_connections_and_hostile_frames(snf: tuple[Stack, str],
                                                                                 tmp_path: Path) -> None:
    stack, _ = snf
    port = stack.mllp_port
    file = tmp_path / "adt.hl7"
    file.write_text(adt("A01", MEMBER, control_id="MLLP0001").replace("\r", "\r\n") + "\r\n")
    # the listener runs in this test's event loop: the client process must not block it
    sent = await asyncio.to_thread(subprocess.run, [str(Path(sys.executable).parent / "mllp_send"), "--port", str(port),
                                                    "--file", str(file), "--loose", "127.0.0.1"],
                                   capture_output=True, text=True, timeout=60)
    assert sent.returncode == 0, sent.stderr
    assert "MSA|AA|MLLP0001" in sent.stdout.replace("\r", "\n")

    async def one(i: int) -> str:
        reader, writer = await hl7.mllp.open_hl7_connection("127.0.0.1", port)
        writer.writemessage(hl7.parse(adt("A02", MEMBER, control_id=f"CONC{i}", occurred=f"202511011{i}0000")))
        ack = await asyncio.wait_for(reader.readmessage(), 30)
        writer.close()
        return str(ack.segment("MSA"))

    assert sorted(await asyncio.gather(*(one(i) for i in range(5)))) == [f"MSA|AA|CONC{i}" for i in range(5)]

    async def raw(frame: bytes) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(frame)
        await writer.drain()
        answer = await asyncio.wait_for(reader.readuntil(b"\x1c\r"), 60)
        writer.close()
        return answer

    assert b"MSA|AR" in await raw(b"\x0b\x00\xff garbage \x1c\r")
    assert b"MSA|AR" in await raw(b"\x0b" + "MSH|^~\\&|PCC|SUNNY_SNF|É".encode("latin-1") + b"\x1c\r")
    big = adt("A01", MEMBER, control_id="BIG1") + "\r" + "\r".join(f"NTE|{i}|{'x' * 990}" for i in range(10_100))
    assert len(big) > 10_000_000
    assert b"MSA|A" in await raw(b"\x0b" + big.encode() + b"\x1c\r")
    assert b"MSA|AA|AFTER" in await raw(b"\x0b" + adt("A08", MEMBER, control_id="AFTER").encode() + b"\x1c\r")


async def test_longitudinal_records_record_the_attributed_member(stack: Stack) -> None:
    pid = await ready_pcp(stack, CSV, (MEMBER,))
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": {"resourceType": "Patient", "id": "p", "identifier": [{"value": MEMBER}]}},
        {"resource": {"resourceType": "Observation", "id": "o", "status": "final", "code": {"text": "A1c"},
                      "subject": {"reference": "Patient/p"}}}]}
    response = await stack.clients["submissions"].post(
        "/longitudinal-records", content=json.dumps(bundle),
        params={"participant_id": pid, "received_at": "2025-02-01T10:00:00-08:00"},
        headers={**HIE, "content-type": "application/fhir+json"})
    shown = response.json()
    assert (shown["verdict"], shown["credit"]["member_id"], shown["credit"]["attributed"], shown["credit"]["quarter"]) == (
        "credited", MEMBER, True, "2025Q1")
    invalid = await stack.clients["submissions"].post(
        "/longitudinal-records", content=json.dumps({**bundle, "entry": bundle["entry"][:1]}),
        params={"participant_id": pid}, headers={**HIE, "content-type": "application/fhir+json"})
    assert invalid.json()["verdict"] == "rejected"


async def test_no_member_id_reaches_logs_or_spans(snf: tuple[Stack, str], spans: InMemorySpanExporter,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    stack, _ = snf
    caplog.set_level(logging.DEBUG)
    await post_hl7(stack, combined("A01", MEMBER, visit=None), "2025-11-01T12:00:00-07:00")  # type: ignore[arg-type]
    await post_hl7(stack, combined("A01", MEMBER), "2025-11-01T12:00:00-07:00")
    await stack.publish("dsi.in.submission-received", {"hie_submission_id": "x", "received_at": "bad",
                                                       "content_type": "x", "payload": combined("A01", MEMBER)})
    await asyncio.sleep(2)
    exported = " ".join(s.name + repr(dict(s.attributes or {})) for s in spans.get_finished_spans())
    for text in (caplog.text, exported):
        assert MEMBER not in text and "DOE^JANE" not in text and "19450612" not in text
