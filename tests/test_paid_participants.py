"""What each participant was paid in all, from payments' read model (`GET /payments/participants`): the console's
"amount paid" filter (issue 15 §2, "participants with search and filters (type, county, status, Milestone 1,
amount paid)"), filtered and cursor-paginated in SQL; readers only, refusals as problem JSON."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from tests.harness import STAFF, Stack, eventually
from tests.test_cap_scope import milestone1_paid

pytestmark = pytest.mark.integration
PROBLEM = "application/problem+json"


async def listed(stack: Stack, **params: Any) -> dict[str, Any]:
    answer = await stack.clients["payments"].get("/payments/participants", params=params, headers=STAFF)
    assert answer.status_code == 200, answer.text
    return answer.json()  # type: ignore[no-any-return]


async def test_paid_participants_are_filtered_by_amount_and_every_page_of_the_cursor_holds_each_once(
        stack: Stack) -> None:
    await stack.start("enrollment", "milestones", "payments")
    paid = [await stack.register() for _ in range(3)]
    for pid in paid:
        await milestone1_paid(stack, pid, "2024-05-01T10:00:00-07:00")
    unpaid = await stack.register()  # registered, never paid

    async def projected() -> dict[str, Any] | None:
        found = await listed(stack, paid_min="0.01")
        return found if found["count"] == len(paid) else None

    found = await eventually(projected)
    statement = await stack.payments_of(paid[0])
    assert statement is not None
    assert {(p["participant_id"], p["total_paid"], p["payments"]) for p in found["participants"]} == {
        (pid, statement["total_paid"], 1) for pid in paid}  # each paid its Milestone 1, as its statement says
    total, cent = Decimal(statement["total_paid"]), Decimal("0.01")
    assert (await listed(stack, paid_min=str(total), paid_max=str(total)))["count"] == len(paid)
    assert (await listed(stack, paid_min=str(total + cent)))["participants"] == []

    async def unpaid_listed() -> list[dict[str, Any]] | None:  # its account, once payments has seen it registered
        return (await listed(stack, paid_max=str(total - cent)))["participants"] or None

    assert [(p["participant_id"], p["total_paid"]) for p in await eventually(unpaid_listed)] == [(unpaid, "0.00")]

    for sort in ("opened", "-paid"):
        seen, cursor = [], None
        while True:
            page = await listed(stack, limit=1, sort=sort, **({"cursor": cursor} if cursor else {}))
            seen += [p["participant_id"] for p in page["participants"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert sorted(seen) == sorted([*paid, unpaid]) and len(seen) == len(set(seen)), sort


async def test_only_readers_list_amounts_paid_and_bad_bounds_or_cursors_are_problem_json(stack: Stack) -> None:
    await stack.start("payments")
    client = stack.clients["payments"]
    assert (await client.get("/payments/participants", headers={"Authorization": "Bearer auditor-token"})
            ).status_code == 200
    for token, status in (("ops-token", 403), ("hie-token", 403), ("unknown", 401)):
        refused = await client.get("/payments/participants", headers={"Authorization": f"Bearer {token}"})
        assert (refused.status_code, refused.headers["content-type"]) == (status, PROBLEM)
    for params in ({"paid_min": "-1"}, {"paid_max": "ten"}, {"paid_min": "1e13"}, {"cursor": "not-ours"},
                   {"sort": "legal_name"}, {"limit": "0"}):
        invalid = await client.get("/payments/participants", params=params, headers=STAFF)
        assert (invalid.status_code, invalid.headers["content-type"]) == (422, PROBLEM), params
