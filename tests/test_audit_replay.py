"""`dsi audit replay`: rebuild every aggregate from the stores, re-derive payouts, exit non-zero on a difference."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from uuid import UUID

import pytest
from dsi_shared.service import events_as_of
from milestones.application import Milestones
from milestones.ledger import Evaluation
from payments.application import Payments

from tests.harness import STAFF, Stack, quiet, signature

pytestmark = pytest.mark.integration
SERVICES = ("enrollment", "submissions", "milestones", "payments", "qip-share")


def replay(stack: Stack, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DSI_VAR_DIR": str(tmp_path / "var"),
           **{f"{name.upper().replace('-', '_')}_STORE": stack.store_url_for(name) for name in SERVICES}}
    return subprocess.run([sys.executable, "-m", "dsi_shared.cli", "audit", "replay", *args],
                          env=env, capture_output=True, text=True, timeout=120)


async def paid_participant(stack: Stack) -> str:
    await stack.start("enrollment", "milestones", "payments")
    pid = await stack.register()
    for agreement in ("LOA", "DSA", "HIE"):
        await stack.clients["enrollment"].post(f"/participants/{pid}/agreements", json=signature(agreement), headers=STAFF)
    await stack.accept_agreements(pid)
    await stack.wait_paid(pid)
    await quiet(stack)
    return pid


async def test_replay_rebuilds_every_store_and_agrees(stack: Stack, store_kind: str, tmp_path: Path) -> None:
    pid = await paid_participant(stack)
    second = await stack.register()  # registered, nothing signed: rebuilt with no milestone and nothing paid
    await quiet(stack)
    result = replay(stack, tmp_path, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["problems"] == []
    assert report["participants"][pid]["total_paid"] == "10000.00"
    assert report["participants"][pid]["milestone1"] == "achieved 2024-05-01 (2024Q2)"
    assert report["participants"][pid]["agreements"] == "LOA+DSA+HIE"
    assert report["participants"][second]["total_paid"] == "0.00"
    assert report["participants"][second]["milestone1"] == "not yet"
    assert report["services"]["enrollment"]["aggregates"] == 5  # 2 participants, their 2 NPIs, the program rules
    assert report["services"]["payments"]["events"] >= 5
    table = replay(stack, tmp_path)
    assert table.returncode == 0 and "every rebuilt ledger agrees" in table.stdout


async def test_replay_exits_non_zero_when_a_ledger_pays_what_no_milestone_earned(stack: Stack, tmp_path: Path) -> None:
    pid = await paid_participant(stack)
    for name in list(stack.runtimes):
        await stack.stop(name)
    # A payment written straight into the payments store, with no achieved milestone behind it.
    payments = Payments(stack.store_url_for("payments"))
    account = payments.account(UUID(pid))
    account.pay("M2", Decimal("10000.00"), "2024Q3", "dsi-2024.1", source_event="forged", cap=Decimal("40000.00"))
    payments.save(account)
    payments.close()
    result = replay(stack, tmp_path, "--json")
    assert result.returncode == 1
    assert json.loads(result.stdout)["problems"] == [f"payments: {pid} paid 20000.00, milestones achieved re-derive 10000.00"]


async def test_replay_as_of_rebuilds_the_ledgers_as_they_stood_then(stack: Stack, tmp_path: Path) -> None:
    pid = await paid_participant(stack)
    signed = [e.timestamp for e in events_as_of(stack.runtimes["enrollment"].app)
              if type(e).__name__ == "AgreementSigned"]
    before_last_signature = (max(signed) - timedelta(microseconds=1)).isoformat()
    then = json.loads(replay(stack, tmp_path, "--json", "--as-of", before_last_signature).stdout)
    assert then["problems"] == [] and then["as_of"] == before_last_signature
    assert (then["participants"][pid]["agreements"], then["participants"][pid]["milestone1"]) == ("LOA+DSA", "not yet")
    assert then["participants"][pid].get("total_paid", "0.00") == "0.00"
    now = json.loads(replay(stack, tmp_path, "--json", "--as-of", datetime.now(UTC).isoformat()).stdout)
    assert now["participants"][pid]["total_paid"] == "10000.00" and now["problems"] == []
    only = json.loads(replay(stack, tmp_path, "--json", "--service", "payments").stdout)
    assert list(only["services"]) == ["payments"] and only["participants"][pid]["total_paid"] == "10000.00"
    assert replay(stack, tmp_path, "--as-of", "last tuesday").returncode == 2


async def test_replay_re_derives_milestones_from_upstream_facts_and_names_what_they_do_not_support(
        stack: Stack, tmp_path: Path) -> None:
    await stack.start("enrollment", "submissions", "milestones", "payments")
    pid = await stack.register()
    await stack.clients["enrollment"].post(f"/participants/{pid}/agreements", json=signature("LOA"), headers=STAFF)
    await quiet(stack)
    for name in list(stack.runtimes):
        await stack.stop(name)
    # Written straight into the milestones store: a Milestone 1 with only one agreement signed upstream, and a
    # validated quarter paying for a submission that submissions never credited.
    milestones = Milestones(stack.store_url_for("milestones"))
    progress = milestones.progress(UUID(pid))
    progress.achieve(participant_id=UUID(pid), milestone="M1", amount=Decimal("10000.00"),
                     achieved_at=datetime(2024, 5, 1, 17, tzinfo=UTC), quarter="2024Q2", rule_version="2024.1",
                     deadline=date(2024, 12, 31), basis=["forged"])
    evaluation = Evaluation(UUID(pid), "2025Q4", "quarter", "SNF:2025Q4", "snf_per_file", "2024.1", Decimal("400.00"),
                            "earned", {"credits": ["forged-submission"]})
    evaluation.validate(participant_id=UUID(pid), quarter="2025Q4", milestone="SNF:2025Q4", earned=Decimal("400.00"),
                        rule_version="2024.1", credits=["forged-submission"], validated_by="x", validated_at=datetime.now(UTC))
    milestones.save(progress, evaluation)
    milestones.close()
    result = replay(stack, tmp_path, "--json")
    assert result.returncode == 1
    problems = json.loads(result.stdout)["problems"]
    assert problems == [
        f"milestones: {pid} Milestone 1 recorded achieved 2024-05-01T17:00:00+00:00 $10000.00 (2024.1); re-derived "
        "from enrollment's events: not yet",
        f"milestones: {pid} 2025Q4 paid for 1 submission(s) submissions never credited: forged-submission"]


async def test_each_service_answers_its_own_replay_over_http_to_auditors(stack: Stack) -> None:
    pid = await paid_participant(stack)
    auditor = {"Authorization": "Bearer auditor-token"}
    payments = stack.clients["payments"]
    assert (await payments.get("/audit/replay", headers=STAFF)).status_code == 403
    now = (await payments.get("/audit/replay", headers=auditor)).json()
    assert now["participants"][pid]["total_paid"] == "10000.00" and now["problems"] == []
    before = (await payments.get("/audit/replay", params={"as_of": "2020-01-01T00:00:00+00:00"}, headers=auditor)).json()
    assert before["participants"] == {} and before["events"] == 0
    assert (await payments.get("/audit/replay", params={"as_of": "2020-01-01T00:00:00"}, headers=auditor)).status_code == 422
