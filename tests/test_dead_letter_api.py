"""Each service's dead letters over HTTP, for operators (issue 15 §2, "Operations: … dead letters with replay, recent
traces' ids"): listed with their reason and trace id, never the body; replayed by ops only, once the cause is fixed;
every refusal is problem JSON. Under a service's own NATS user: tests/test_deployment.py."""

from __future__ import annotations

from typing import Any

import pytest

from tests.harness import STAFF, Stack, eventually, signature

pytestmark = pytest.mark.integration
OPS = {"Authorization": "Bearer ops-token"}
AUDITOR = {"Authorization": "Bearer auditor-token"}
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


async def failed_signature(stack: Stack) -> tuple[str, dict[str, Any]]:
    """A signature enrollment dead-letters (its store refuses three times), the store then restored."""
    store = stack.runtimes["enrollment"].app
    original = store.save_tracked
    store.save_tracked = lambda *a, **k: (_ for _ in ()).throw(ConnectionError("database away"))  # type: ignore[method-assign]
    pid = await stack.register()
    await stack.publish("dsi.in.agreement-signed", {"participant_id": pid, **signature("LOA")},
                        headers={"traceparent": f"00-{TRACE}-00f067aa0ba902b7-01"})

    async def listed() -> dict[str, Any] | None:
        answer = await stack.clients["enrollment"].get("/dead-letters", headers=OPS)
        return next(iter(answer.json()["dead_letters"]), None)

    letter = await eventually(listed, timeout=30)
    store.save_tracked = original  # type: ignore[method-assign]
    return pid, letter


async def test_ops_list_a_services_dead_letters_with_reason_and_trace_id_and_replay_one_that_then_applies(
        stack: Stack) -> None:
    await stack.start("enrollment", "milestones")
    pid, letter = await failed_signature(stack)
    assert (letter["original_subject"], letter["reason"], letter["trace_id"], letter["replayed"]) == (
        "dsi.in.agreement-signed", "ConnectionError", TRACE, False)
    listing = await stack.clients["enrollment"].get("/dead-letters", headers=AUDITOR)
    assert listing.status_code == 200 and pid not in listing.text  # the body is never shown
    assert (await stack.clients["milestones"].get("/dead-letters", headers=OPS)).json()["dead_letters"] == []

    replayed = await stack.clients["enrollment"].post(f"/dead-letters/{letter['sequence']}/replay", headers=OPS)
    assert replayed.status_code == 200 and replayed.json()["replayed"] is True

    async def signed() -> bool:
        answer = await stack.clients["enrollment"].get(f"/participants/{pid}", headers=STAFF)
        return answer.json()["agreements"]["LOA"] is not None

    await eventually(signed)
    [after] = (await stack.clients["enrollment"].get("/dead-letters", headers=OPS)).json()["dead_letters"]
    assert after["replayed"] is True
    again = await stack.clients["enrollment"].post(f"/dead-letters/{letter['sequence']}/replay", headers=OPS)
    assert again.status_code == 409 and again.headers["content-type"] == "application/problem+json"


async def test_only_ops_replay_and_a_sequence_that_is_not_this_services_dead_letter_is_404(stack: Stack) -> None:
    await stack.start("enrollment", "milestones")
    _, letter = await failed_signature(stack)
    path = f"/dead-letters/{letter['sequence']}/replay"
    for headers in (STAFF, AUDITOR):
        refused = await stack.clients["enrollment"].post(path, headers=headers)
        assert refused.status_code == 403 and refused.headers["content-type"] == "application/problem+json"
    assert (await stack.clients["enrollment"].get("/dead-letters", headers=STAFF)).status_code == 403
    assert (await stack.clients["enrollment"].get("/dead-letters")).status_code == 401
    elsewhere = await stack.clients["milestones"].post(path, headers=OPS)  # enrollment's letter, asked of milestones
    assert elsewhere.status_code == 404 and elsewhere.json()["title"] == "Not Found"
    unknown = await stack.clients["enrollment"].post("/dead-letters/999999/replay", headers=OPS)
    assert unknown.status_code == 404 and unknown.headers["content-type"] == "application/problem+json"
    assert (await stack.clients["enrollment"].post("/dead-letters/0/replay", headers=OPS)).status_code == 422
    [still] = (await stack.clients["enrollment"].get("/dead-letters", headers=OPS)).json()["dead_letters"]
    assert still["replayed"] is False  # nothing refused was replayed



async def test_dead_letters_come_a_page_at_a_time_filtered_and_newest_first_on_request(stack: Stack) -> None:
    """Issue 15 §1: the dead-letter list answers with filters, sorting and cursor pagination, like every list."""
    await stack.start("enrollment")
    for n in range(5):  # five dead letters of enrollment's consumer of dsi.in, as the consumer writes them
        subject = "dsi.in.agreement-signed" if n % 2 == 0 else "dsi.in.agreement-accepted"
        await stack.publish("dsi.dead-letter.enrollment", {"n": n}, headers={
            "Dsi-Original-Subject": subject, "Dsi-Consumer": "enrollment--dsi-in", "Dsi-Deliveries": "5",
            "Dsi-Reason": f"reason {n}", "Nats-Msg-Id": f"dead-letter:test:{n}"})
    client = stack.clients["enrollment"]

    async def listed(**params: Any) -> dict[str, Any]:
        answer = await client.get("/dead-letters", params=params, headers=OPS)
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    pages, cursor = [], None
    while True:
        found = await listed(limit=2, **({"cursor": cursor} if cursor else {}))
        assert found["count"] == 5
        pages.append([d["reason"] for d in found["dead_letters"]])
        if not (cursor := found["next_cursor"]):
            break
    assert pages == [["reason 0", "reason 1"], ["reason 2", "reason 3"], ["reason 4"]]
    newest = await listed(sort="-at", limit=2)
    assert [d["reason"] for d in newest["dead_letters"]] == ["reason 4", "reason 3"]
    signed = await listed(subject="dsi.in.agreement-signed")
    assert signed["count"] == 3 and {d["original_subject"] for d in signed["dead_letters"]} == {"dsi.in.agreement-signed"}
    assert (await listed(replayed="false"))["count"] == 5 and (await listed(replayed="true"))["count"] == 0
    assert (await listed(consumer="milestones--dsi-in"))["count"] == 0
    for params in ({"cursor": "not-a-cursor"}, {"cursor": newest["next_cursor"]}, {"limit": 0}, {"sort": "reason"}):
        refused = await client.get("/dead-letters", params=params, headers=OPS)  # a cursor of another sort, too
        assert refused.status_code == 422 and refused.headers["content-type"] == "application/problem+json", params
