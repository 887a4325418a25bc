"""The thin flow across enrollment → milestones → payments on real NATS JetStream, PostgreSQL and SQLite."""

from __future__ import annotations

import pytest

from tests.harness import STAFF, Stack, quiet, signature

pytestmark = pytest.mark.integration


async def test_three_signatures_by_http_and_nats_pay_milestone_1_once(stack: Stack, store_kind: str) -> None:
    await stack.start("enrollment", "milestones", "payments")
    pid = await stack.register()
    enrollment = stack.clients["enrollment"]

    for agreement in ("LOA", "DSA"):
        response = await enrollment.post(f"/participants/{pid}/agreements", json=signature(agreement), headers=STAFF)
        assert response.status_code == 201
    # The same DSA signature again, by HTTP and by NATS: one signature.
    again = await enrollment.post(f"/participants/{pid}/agreements", json=signature("DSA"), headers=STAFF)
    assert (again.status_code, again.json()["recorded"]) == (200, False)
    await stack.publish("dsi.in.agreement-signed", {"participant_id": pid, **signature("DSA")})
    await stack.publish("dsi.in.agreement-signed", {"participant_id": pid, **signature("HIE", "2024-06-20T09:00:00-07:00")})
    # "Once all these documents have been signed and accepted": staff accept the three in one action
    await stack.accept_agreements(pid)

    await stack.wait_paid(pid)
    await quiet(stack)
    statement = await stack.payments_of(pid)
    assert statement is not None
    assert [(p["milestone"], p["amount"], p["quarter"]) for p in statement["payments"]] == [("M1", "10000.00", "2024Q2")]
    assert (statement["total_paid"], statement["remaining"]) == ("10000.00", "30000.00")
    assert statement["payee"]["legal_name"] == "Sunrise Skilled Nursing"

    participant = (await enrollment.get(f"/participants/{pid}", headers=STAFF)).json()
    assert participant["milestone1"]["achieved"] is True
    assert participant["milestone1"]["achieved_at"] == "2024-06-20T09:00:00-07:00"  # the last of the three signatures
    assert {k: v["channel"] for k, v in participant["agreements"].items()} == {"LOA": "http", "DSA": "http", "HIE": "nats"}
    assert [h["event"] for h in participant["history"]] == [
        "ParticipantRegistered", "EligibilityDetermined",
        "AgreementSigned", "AgreementSigned", "AgreementSigned",
        "AgreementReviewed", "AgreementReviewed", "AgreementReviewed", "MilestoneNoted"]


async def test_agreement_signed_published_three_times_pays_once(stack: Stack) -> None:
    await stack.start("enrollment", "milestones", "payments")
    pid = await stack.register()
    for agreement in ("LOA", "DSA", "HIE"):
        for _ in range(3):
            await stack.publish("dsi.in.agreement-signed", {"participant_id": pid, **signature(agreement)})
    await stack.accept_agreements(pid)
    await stack.wait_paid(pid)
    await quiet(stack)
    statement = await stack.payments_of(pid)
    assert statement is not None and [p["amount"] for p in statement["payments"]] == ["10000.00"]
    progress = (await stack.clients["milestones"].get(f"/participants/{pid}/milestones", headers=STAFF)).json()
    assert sorted(progress["agreements"]) == ["DSA", "HIE", "LOA"]
    assert [m["milestone"] for m in progress["milestones"]] == ["M1"]

