"""Who may earn (issue 12 §1): an HIE token is bound to the senders it may submit for, and `received_at` is the
server's clock unless a `+backdate` token (or the HIE's notification on NATS) states an earlier receipt, never more
than `DSI_HIE_MAX_DELAY_HOURS` (default 72) before our clock. Real NATS + PostgreSQL."""

from __future__ import annotations

import asyncio
import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import hl7
import hl7.mllp
import httpx
import pytest

from tests.harness import STAFF, Stack, eventually, quiet
from tests.hl7_corpus import adt, combined
from tests.test_submissions import MEMBER, ready_snf

pytestmark = pytest.mark.integration
SUNNY = {"Authorization": "Bearer sunny-hie"}  # hie@SUNNY_SNF, no +backdate
UNBOUND = {"Authorization": "Bearer unbound-hie"}  # hie, no scope
BACKDATING = {"Authorization": "Bearer hie-token"}  # hie@*+backdate
HL7 = {"content-type": "x-application/hl7-v2+er7"}
FHIR = {"content-type": "application/fhir+json"}
RECORD = json.dumps({"resourceType": "Bundle", "type": "collection", "entry": []})


def fingerprint(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:8]


def hl7_time(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y%m%d%H%M%S+0000")


def recent_file(hours_ago: float = 1, **kwargs: str) -> str:
    """A complete A01 file for an event `hours_ago` before now: timely when received now."""
    return combined("A01", MEMBER, occurred=hl7_time(datetime.now(UTC) - timedelta(hours=hours_ago)), **kwargs)


@pytest.fixture
def default_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    """The documented default (72 hours), not the suite's long one (conftest.py)."""
    monkeypatch.delenv("DSI_HIE_MAX_DELAY_HOURS", raising=False)


async def post_hl7(stack: Stack, text: str, headers: dict[str, str], **params: str) -> httpx.Response:
    return await stack.clients["submissions"].post("/hl7", content=text.encode(), params=params,
                                                   headers={**headers, **HL7})


async def listed(stack: Stack, pid: str) -> list[dict[str, Any]]:
    response = await stack.clients["submissions"].get(f"/participants/{pid}/submissions", headers=STAFF)
    return list(response.json()["submissions"])


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    return dict(response.json())


async def test_a_bound_token_earns_for_its_facility_on_the_servers_clock(stack: Stack) -> None:
    pid = await ready_snf(stack)
    before = datetime.now(UTC)
    response = await post_hl7(stack, recent_file(), SUNNY)
    after = datetime.now(UTC)
    assert response.status_code == 200, response.text
    body = response.json()
    assert {m["ack_code"] for m in body["messages"]} == {"AA"}
    [submission] = body["submissions"]
    assert submission["verdict"] == "credited"
    assert submission["participant_id"] == pid
    assert before <= datetime.fromisoformat(submission["received_at"]) <= after
    assert submission["facts"]["submitted_by"] == f"hie#{fingerprint('sunny-hie')}"
    assert "backdated" not in submission["facts"]
    assert "sunny-hie" not in response.text


async def test_a_file_for_a_sender_the_token_is_not_bound_to_is_AR_204_recorded_and_never_credited(
        stack: Stack) -> None:
    await ready_snf(stack)
    other = await stack.register(sending_facilities=["OTHER_SNF"])
    app = stack.runtimes["submissions"].app
    await eventually(lambda: asyncio.to_thread(app.participant_for_facility, ("OTHER_SNF",)))  # type: ignore[attr-defined]

    response = await post_hl7(stack, recent_file(facility="OTHER_SNF", control_id="FOREIGN1"), SUNNY)
    assert response.status_code == 200, response.text
    body = response.json()
    assert [m["ack_code"] for m in body["messages"]] == ["AR", "AR", "AR"]
    first = body["messages"][0]
    assert first["ack"].split("\r")[1] == "MSA|AR|FOREIGN1"
    assert "ERR||MSH^1^4|204^Unknown key identifier^HL70357|E" in first["ack"]
    [submission] = body["submissions"]
    assert (submission["verdict"], submission["reasons"]) == ("rejected", ["sender_not_bound_to_token"])
    assert submission["credit"] is None and submission["amount"] == "0.00"

    stored = await stack.clients["submissions"].get(f"/submissions/{submission['id']}", headers=STAFF)
    assert stored.json()["reasons"] == ["sender_not_bound_to_token"]
    assert stored.json()["facts"]["submitted_by"] == f"hie#{fingerprint('sunny-hie')}"

    record = await stack.clients["submissions"].post("/longitudinal-records", content=RECORD,
                                                     params={"participant_id": other}, headers={**SUNNY, **FHIR})
    assert record.status_code == 200, record.text
    assert (record.json()["verdict"], record.json()["reasons"]) == ("rejected", ["sender_not_bound_to_token"])
    by_facility = await stack.clients["submissions"].post("/longitudinal-records", content=RECORD,
                                                          params={"sending_facility": "OTHER_SNF"},
                                                          headers={**SUNNY, **FHIR})
    assert by_facility.json()["reasons"] == ["sender_not_bound_to_token"]
    own = await stack.clients["submissions"].post("/longitudinal-records", content=RECORD,
                                                  params={"sending_facility": "SUNNY_SNF"}, headers={**SUNNY, **FHIR})
    assert "sender_not_bound_to_token" not in own.json()["reasons"]
    await quiet(stack)
    assert [s["verdict"] for s in await listed(stack, other)] == ["rejected", "rejected", "rejected"]


async def test_an_hie_token_without_a_scope_may_submit_nothing(stack: Stack) -> None:
    pid = await ready_snf(stack)
    assert "bound to no sender" in assert_problem(await post_hl7(stack, recent_file(), UNBOUND), 403)["detail"]
    record = await stack.clients["submissions"].post("/longitudinal-records", content=RECORD,
                                                     params={"participant_id": pid}, headers={**UNBOUND, **FHIR})
    assert_problem(record, 403)
    assert await listed(stack, pid) == []


async def test_received_at_from_a_token_without_backdate_is_403_and_records_nothing(stack: Stack) -> None:
    pid = await ready_snf(stack)
    stated = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    for headers in (SUNNY, STAFF):  # program staff too: stating a receipt needs +backdate
        problem = assert_problem(await post_hl7(stack, recent_file(), headers, received_at=stated), 403)
        assert "received_at" in problem["detail"] and "+backdate" in problem["detail"]
    record = await stack.clients["submissions"].post("/longitudinal-records", content=RECORD,
                                                     params={"participant_id": pid, "received_at": stated},
                                                     headers={**SUNNY, **FHIR})
    assert_problem(record, 403)
    assert await listed(stack, pid) == []


async def test_a_backdated_receipt_is_audited_and_bounded_by_the_hie_delay(stack: Stack, default_delay: None) -> None:
    pid = await ready_snf(stack)
    now = datetime.now(UTC)
    too_early = assert_problem(await post_hl7(stack, recent_file(80), BACKDATING,
                                              received_at=(now - timedelta(hours=73)).isoformat()), 422)
    assert "DSI_HIE_MAX_DELAY_HOURS" in too_early["detail"] and "72" in too_early["detail"]
    future = assert_problem(await post_hl7(stack, recent_file(), BACKDATING,
                                           received_at=(now + timedelta(hours=1)).isoformat()), 422)
    assert "future" in future["detail"]
    assert await listed(stack, pid) == []

    stated = now - timedelta(hours=70)
    response = await post_hl7(stack, recent_file(71), BACKDATING, received_at=stated.isoformat())
    assert response.status_code == 200, response.text
    [submission] = response.json()["submissions"]
    assert submission["verdict"] == "credited"  # timely as of the stated receipt
    assert datetime.fromisoformat(submission["received_at"]) == stated
    backdated = submission["facts"]["backdated"]
    assert backdated["by"] == f"hie#{fingerprint('hie-token')}"
    assert datetime.fromisoformat(backdated["server_received_at"]) >= now
    assert "hie-token" not in json.dumps(submission["facts"])


async def test_the_hie_notification_may_state_a_receipt_within_the_delay_and_else_is_dead_lettered(
        stack: Stack, default_delay: None) -> None:
    pid = await ready_snf(stack)
    js = (await stack.nc()).jetstream()
    dead = await js.subscribe(stack.naming.subject("dsi.dead-letter.submissions"), durable="test-dlq-binding",
                              stream=stack.naming.stream("DSI_DEAD_LETTERS"))
    now = datetime.now(UTC)

    def notification(name: str, received_at: datetime) -> dict[str, Any]:
        return {"hie_submission_id": name, "received_at": received_at.isoformat(),
                "content_type": "x-application/hl7-v2+er7", "payload": recent_file(80, control_id=name)}

    await stack.publish("dsi.in.submission-received", notification("old", now - timedelta(hours=100)))
    await stack.publish("dsi.in.submission-received", notification("future", now + timedelta(hours=2)))
    await stack.publish("dsi.in.submission-received", notification("in-time", now - timedelta(hours=70)))
    reasons = []
    for _ in range(2):
        message = await dead.next_msg(timeout=20)
        reasons.append(message.headers["Dsi-Reason"])
        assert message.headers["Dsi-Original-Subject"] == "dsi.in.submission-received"
        await message.ack()
    assert "DSI_HIE_MAX_DELAY_HOURS" in reasons[0]
    assert "future" in reasons[1]

    async def in_time() -> list[dict[str, Any]]:
        return [s for s in await listed(stack, pid) if s["hie_submission_id"] == "in-time"]

    [recorded] = await eventually(in_time, timeout=20)
    assert datetime.fromisoformat(recorded["received_at"]) == now - timedelta(hours=70)
    assert recorded["channel"] == "nats"
    await quiet(stack)
    assert {s["hie_submission_id"] for s in await listed(stack, pid)} == {"in-time"}


async def test_mllp_takes_the_receipt_time_from_the_servers_clock(stack: Stack) -> None:
    pid = await ready_snf(stack)
    before = datetime.now(UTC)
    reader, writer = await hl7.mllp.open_hl7_connection("127.0.0.1", stack.mllp_port)
    try:
        # MSH-7 and EVN-2 claim a year ago: neither is the receipt time
        message = adt("A01", MEMBER, control_id="CLOCK1", occurred=hl7_time(before - timedelta(hours=1)),
                      recorded="20251101081000")
        writer.writemessage(hl7.parse(message))
        ack = await asyncio.wait_for(reader.readmessage(), 30)
    finally:
        writer.close()
    after = datetime.now(UTC)
    assert str(ack.segment("MSA")) == "MSA|AA|CLOCK1"
    app = stack.runtimes["submissions"].app
    [submission] = await asyncio.to_thread(app.submissions_of, UUID(pid))  # type: ignore[attr-defined]
    assert submission.channel == "mllp"
    assert before <= submission.received_at <= after
