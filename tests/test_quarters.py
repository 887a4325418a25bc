"""Quarter close to payment on real NATS + PostgreSQL: a credited HL7 file becomes a pending evaluation, staff
validation becomes a $400 payment naming the submission, the AP export reproduces byte for byte; the `dsi quarter
close` command; two payments processes racing on one participant never pass the cap."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from uuid import UUID, uuid4

import pytest
from enrollment.contract import ParticipantRegistered, RulesPublished
from milestones.contract import EvaluationValidated, MilestoneAchieved

from tests.harness import STAFF, Stack, eventually, quiet
from tests.hl7_corpus import combined
from tests.rulesdoc import packaged
from tests.test_audit_replay import replay
from tests.test_submissions import MEMBER, post_hl7, ready_snf

pytestmark = pytest.mark.integration
AUDITOR = {"Authorization": "Bearer auditor-token"}


async def test_a_validated_quarter_pays_its_credits_once_and_the_export_reproduces(stack: Stack, tmp_path: Path) -> None:
    pid = await ready_snf(stack)
    await stack.start("payments")
    timely = await post_hl7(stack, combined("A01", MEMBER), "2025-11-01T18:00:00-07:00")
    [credited] = timely["submissions"]
    late = await post_hl7(stack, combined("A01", MEMBER, visit="V0002"), "2025-11-09T18:00:00-08:00")
    assert late["submissions"][0]["reasons"] == ["late"]
    milestones = stack.runtimes["milestones"].app

    async def credit_known() -> bool:
        return credited["id"] in milestones.ledger_or_new(UUID(pid)).credits  # type: ignore[attr-defined]

    await eventually(credit_known)
    client = stack.clients["milestones"]
    assert (await client.post("/quarters/2025Q4/close", headers=AUDITOR)).status_code == 403
    assert (await client.post("/quarters/2025Q5/close", headers=STAFF)).status_code == 422
    closed = (await client.post("/quarters/2025Q4/close", headers=STAFF)).json()
    assert (closed["evaluations"], closed["earned"], closed["already_closed"]) == (1, "400.00", False)
    assert (await client.post("/quarters/2025Q4/close", headers=STAFF)).json()["already_closed"] is True
    assert (await client.post("/quarters/2025Q3/close", headers=STAFF)).status_code == 409  # quarters close in order

    [evaluation] = (await client.get("/evaluations", params={"state": "pending_validation"}, headers=STAFF)).json()["evaluations"]
    assert (evaluation["milestone"], evaluation["earned"], evaluation["figures"]["credits"]) == (
        "SNF:2025Q4", "400.00", [credited["id"]])
    await quiet(stack)
    assert [p["milestone"] for p in (await stack.payments_of(pid))["payments"]] == ["M1"]  # type: ignore[index]

    validated = (await client.post(f"/evaluations/{evaluation['id']}/validate", headers=STAFF)).json()
    assert validated["state"] == "validated" and validated["decision"]["by"].startswith("program-staff#")
    assert "staff" not in validated["decision"]["by"].split("#")[1]  # a fingerprint, never the token

    async def paid_quarter() -> list[dict[str, str]]:
        statement = await stack.payments_of(pid)
        return [p for p in statement["payments"] if p["milestone"] == "SNF:2025Q4"]  # type: ignore[index]

    [payment] = await eventually(paid_quarter)
    assert (payment["amount"], payment["covers"], payment["running_total"]) == (
        "400.00", [f"submission:{credited['id']}"], "10400.00")
    await client.post(f"/evaluations/{evaluation['id']}/validate", headers=STAFF)  # again: no second payment
    await quiet(stack)
    statement = await stack.payments_of(pid)
    assert statement is not None and statement["total_paid"] == "10400.00"

    exports = [await stack.clients["payments"].get("/payments/export", params={"quarter": "2025Q4"}, headers=AUDITOR)
               for _ in range(2)]
    assert exports[0].content == exports[1].content and exports[0].headers["etag"] == exports[1].headers["etag"]
    header, row = exports[0].text.splitlines()
    assert header == "participant_id,legal_name,npi,tin,amount,payment_id,quarter,milestone,rule_version,cut_reason"
    assert row.startswith(f"{pid},Sunrise Skilled Nursing,") and ",400.00," in row and row.endswith(",2025Q4,SNF:2025Q4,2024.1,")
    assert MEMBER not in exports[0].text

    audit = replay(stack, tmp_path, "--json")  # the validated quarter re-derives the ledger it paid
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert json.loads(audit.stdout)["participants"][pid]["total_paid"] == "10400.00"


async def test_dsi_quarter_close_command_closes_once(stack: Stack, tmp_path: Path) -> None:
    url = stack.spawn("milestones")
    command = [str(Path(sys.executable).parent / "dsi"), "quarter", "close", "2025Q4", "--url", url, "--token", "staff"]
    env = {"PATH": str(Path(sys.executable).parent), "DSI_VAR_DIR": str(tmp_path)}
    early = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True, timeout=60, env=env)
    assert early.returncode == 1 and "503" in early.stdout and "no program rules" in early.stdout  # no calendar yet
    await stack.start("enrollment")  # publishes the shipped rules, and with them the quarter calendar

    async def closed() -> subprocess.CompletedProcess[str] | None:
        run = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True, timeout=60, env=env)
        assert run.returncode == 0 or "503" in run.stdout, run.stdout + run.stderr
        return run if run.returncode == 0 else None  # 503 until the rules have reached milestones

    first = await eventually(closed, timeout=30)
    assert "2025Q4 closed" in first.stdout and "0 evaluation(s)" in first.stdout
    again = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True, timeout=60, env=env)
    assert "2025Q4 was already closed" in again.stdout
    future = await asyncio.to_thread(subprocess.run, [*command[:3], "2099Q1", *command[4:]], capture_output=True,
                                     text=True, timeout=60, env=env)
    assert future.returncode == 1 and "has not ended" in future.stdout


async def test_two_payments_processes_racing_on_one_participant_never_pay_past_the_cap(stack: Stack) -> None:
    participant = str(uuid4())
    urls = [stack.spawn("payments", replica="a"), stack.spawn("payments", replica="b")]  # one store, one durable
    now = datetime.now(UTC)
    await stack.publish_as_producer(RulesPublished, 1, aggregate_id=uuid4(), document=packaged(), reason="shipped")
    # the registration names the organization whose cap it is (cap_scope organization): payments waits for it
    await stack.publish_as_producer(ParticipantRegistered, 2, aggregate_id=participant, legal_name="Racing SNF",
                                    npi=None, tin="941234567", provider_type="skilled_nursing", sending_facilities=[])
    # Milestone 1 and 40 validated quarters of $1,300 each: $62,000 earned, $40,000 may be paid.
    await stack.publish_as_producer(MilestoneAchieved, 1, aggregate_id=uuid4(), participant_id=participant,
                                    milestone="M1", amount="10000.00", achieved_at=now, quarter="2024Q2",
                                    rule_version="2024.1", deadline="2024-06-30", basis=["a", "b", "c"])
    for n in range(2, 42):
        await stack.publish_as_producer(EvaluationValidated, n, aggregate_id=uuid4(), participant_id=participant,
                                        quarter="2026Q1", milestone=f"SNF:test-{n}", earned="1300.00",
                                        rule_version="2024.1", credits=[f"{n}-a", f"{n}-b"], validated_at=now)
    await quiet(stack, timeout=60)
    statements = [await stack.payments_of(participant, url) for url in urls]
    assert statements[0] == statements[1]  # one store, two processes
    statement = statements[0]
    assert statement is not None and statement["total_paid"] == "40000.00" and statement["remaining"] == "0.00"
    amounts = [Decimal(p["amount"]) for p in statement["payments"]]
    assert len(statement["payments"]) == 41 and len({p["milestone"] for p in statement["payments"]}) == 41
    assert sum(amounts) == Decimal("40000.00") and all(a >= 0 for a in amounts)
    reasons = [p["cut_reason"] for p in statement["payments"] if p["cut_reason"]]
    assert reasons.count("cut to the $40,000.00 cap") == 1
    assert set(reasons) == {"cut to the $40,000.00 cap", "cap reached"}
