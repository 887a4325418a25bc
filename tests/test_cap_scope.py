"""The cap's scope across services on real NATS + PostgreSQL (issue 11 §3, applying again): an organization that joins
a later round for another provider type shares its cap under `organization`, and brings its own under
`participation`; `dsi audit replay` re-derives the same amounts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.harness import STAFF, Stack, eventually, quiet, signature
from tests.rulesdoc import amended
from tests.test_audit_replay import replay
from tests.test_program_rules import what_if

pytestmark = pytest.mark.integration
NPI = "1666666668"


async def publish_cap(stack: Stack, scope: str) -> None:
    """A smaller cap keeps the test short: Milestone 1 $10,000, then a later round's Milestone 1 cut to $5,000."""
    rules = amended("2024.2", "2024-01-01", {"program.cap": "15000.00", "program.cap_scope": scope})
    published = await stack.clients["enrollment"].post("/program-rules", headers=STAFF,
                                                       json={"rules": rules, "reason": f"a $15,000 cap per {scope}",
                                                             "confirm_lowering": True})
    assert published.status_code == 201, published.text
    payments = stack.runtimes["payments"].app

    async def known() -> bool:
        return any(v.version == "2024.2" for v in payments.rulebook().versions)  # type: ignore[attr-defined]

    await eventually(known, timeout=30)


async def milestone1_paid(stack: Stack, pid: str, signed_at: str) -> dict[str, Any]:
    for agreement in ("LOA", "DSA", "HIE"):
        response = await stack.clients["enrollment"].post(f"/participants/{pid}/agreements", headers=STAFF,
                                                          json=signature(agreement, signed_at))
        assert response.status_code in (200, 201), response.text
    await stack.accept_agreements(pid)
    return await stack.wait_paid(pid, timeout=30)


@pytest.mark.parametrize(("scope", "later_paid", "cut_reason"), [
    ("organization", "5000.00", "cut to the $15,000.00 cap"),
    ("participation", "10000.00", None),
])
async def test_a_later_rounds_milestone1_is_cut_by_what_the_organization_was_paid_only_under_organization_scope(
        stack: Stack, tmp_path: Path, scope: str, later_paid: str, cut_reason: str | None) -> None:
    """"Participants will be eligible to continue earning so long as the maximum of $40,000 has not been reached."
    "Whether a later round brings its own Milestone 1 and cap or shares the organization's $40,000 is not stated: a
    rules parameter `cap_scope` (`organization` | `participation`), shipped as `organization` ("up to $40,000"
    offered to a provider), shown on the participant." """
    await stack.start("enrollment", "milestones", "payments")
    await publish_cap(stack, scope)
    first = await stack.register(npi=NPI)  # a skilled nursing facility, the organization's first participation
    assert (await milestone1_paid(stack, first, "2024-05-01T10:00:00-07:00"))["total_paid"] == "10000.00"
    later = await stack.register(npi=NPI, provider_type="primary_care", submitted_on="2024-08-01",
                                 sending_facilities=["SUNRISE_PCP"])
    shown = (await stack.clients["enrollment"].get(f"/participants/{later}", headers=STAFF)).json()
    assert (shown["organization_id"], shown["cap_scope"]) == (first, scope)

    statement = await milestone1_paid(stack, later, "2024-11-01T10:00:00-08:00")
    [payment] = statement["payments"]
    assert (payment["earned"], payment["amount"], payment["cut_reason"]) == ("10000.00", later_paid, cut_reason)
    assert (payment["cap"], payment["cap_scope"], payment["organization_id"], payment["organization_paid_elsewhere"]) \
        == ("15000.00", scope, first, "10000.00")
    assert (statement["cap_scope"], statement["organization_id"], statement["total_paid"]) == (scope, first, later_paid)
    if scope == "organization":
        assert (statement["organization_total_paid"], statement["organization_remaining"], statement["remaining"]) \
            == ("15000.00", "0.00", "0.00")
    else:
        assert "organization_total_paid" not in statement and statement["remaining"] == "5000.00"
    first_statement = await stack.payments_of(first)
    assert first_statement is not None and first_statement["total_paid"] == "10000.00"

    await quiet(stack)
    result = replay(stack, tmp_path, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["problems"] == []
    assert (report["participants"][first]["total_paid"], report["participants"][later]["total_paid"]) \
        == ("10000.00", later_paid)

    # the what-if cuts to the cap the way payments did: what 2024.2 changed, against the book without it
    await stack.start("submissions")  # the what-if reads its copy of the rules (and its files: none here)
    submissions = stack.runtimes["submissions"].app

    async def rules_known() -> bool:
        return any(v.version == "2024.2" for v in submissions.rulebook().versions)  # type: ignore[attr-defined]

    await eventually(rules_known, timeout=30)
    changed = what_if(stack, tmp_path, None, "--published", "2024.2", "--to", "2025Q4")["participants"]
    assert [(changed[p]["current"], changed[p]["proposed"]) for p in (first, later)] == [
        ("10000.00", "10000.00"), ("10000.00", later_paid)]
