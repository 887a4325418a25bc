"""Program rules as effective-dated data, across services on real NATS + PostgreSQL (issue 11): a correction
reaches an SNF already enrolled, and money does not depend on which stream's message arrives first."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from tests.harness import STAFF, Stack, eventually, quiet, signature
from tests.hl7_corpus import combined
from tests.rulesdoc import amended
from tests.x12_834 import cin

pytestmark = pytest.mark.integration
MEMBER = cin(1)
HIE = {"Authorization": "Bearer hie-token"}
CSV = ("member_id,last_name,first_name,birth_date,eligibility_start,eligibility_end,aid_code,"
       "other_health_coverage,dual_eligible\n"
       f"{MEMBER},DOE,JANE,1945-06-12,2024-01-01,,1H,N,N\n")


async def enrolled_snf(stack: Stack, facility: str, accept: bool = True) -> str:
    await stack.start(*(name for name in ("enrollment", "milestones", "submissions") if name not in stack.runtimes))
    pid = await stack.register(sending_facilities=[facility])
    for agreement in ("LOA", "DSA", "HIE"):
        await stack.clients["enrollment"].post(f"/participants/{pid}/agreements", json=signature(agreement), headers=STAFF)
    await stack.clients["enrollment"].post("/members/import", content=CSV, headers={**STAFF, "content-type": "text/csv"})
    app = stack.runtimes["submissions"].app

    async def known() -> bool:
        return bool(app.participant_facts(UUID(pid)) and app.member_facts(MEMBER))  # type: ignore[attr-defined]

    await eventually(known, timeout=30)
    if accept:
        await stack.accept_agreements(pid)
    return pid


async def milestone1_noted(stack: Stack, pid: str) -> None:
    """Until submissions has learnt the participant's Milestone 1 from milestones' stream."""
    app = stack.runtimes["submissions"].app

    async def known() -> bool:
        facts = app.participant_facts(UUID(pid))  # type: ignore[attr-defined]
        return bool(facts and facts.milestone1_at)

    await eventually(known, timeout=30)


async def post_file(stack: Stack, facility: str, event: str, received_at: str) -> dict[str, Any]:
    text = combined("A01", MEMBER, occurred=event).replace("SUNNY_SNF", facility)
    response = await stack.clients["submissions"].post("/hl7", content=text.encode(), params={"received_at": received_at},
                                                       headers={**HIE, "content-type": "x-application/hl7-v2+er7"})
    assert response.status_code == 200, response.text
    [submission] = response.json()["submissions"]
    return dict(submission)


async def submission(stack: Stack, submission_id: str) -> dict[str, Any]:
    return dict((await stack.clients["submissions"].get(f"/submissions/{submission_id}", headers=STAFF)).json())


async def test_a_correction_of_the_snf_start_makes_an_enrolled_snfs_files_from_2024_10_01_earn(
        stack: Stack, tmp_path: Path) -> None:
    """The program page's table gives SNF/LTC data sharing as starting "Oct. 1, 2025", while every other row starts
    the day after its Milestone 1 deadline. Shipped as written; staff publishing a correction effective 2024-10-01
    makes an already-enrolled SNF's files from 2024-10-01 onward earn, visible in the submission's history."""
    pid = await enrolled_snf(stack, "SUNNY_SNF")
    await milestone1_noted(stack, pid)
    held = await post_file(stack, "SUNNY_SNF", "20241105080000", "2024-11-05T10:00:00-08:00")
    assert (held["verdict"], held["reasons"]) == ("rejected", ["before_data_sharing_start"])
    before = await post_file(stack, "SUNNY_SNF", "20240920080000", "2024-09-20T10:00:00-07:00")  # before the correction's date

    correction = amended("2024.2", "2024-10-01", {"provider_types.skilled_nursing.data_sharing_starts": "2024-10-01",
                                                  "provider_types.long_term_care.data_sharing_starts": "2024-10-01"})
    published = await stack.clients["enrollment"].post(
        "/program-rules", headers=STAFF,
        json={"rules": correction, "reason": "SNF/LTC data sharing starts the day after the Milestone 1 deadline"})
    assert published.status_code == 201, published.text

    async def credited() -> dict[str, Any] | None:
        shown = await submission(stack, held["id"])
        return shown if shown["verdict"] == "credited" else None

    shown = await eventually(credited, timeout=30)
    assert (shown["amount"], shown["credit"]["rule_version"], shown["credit"]["quarter"]) == ("400.00", "2024.2", "2024Q4")
    assert shown["history"][0] == {"verdict": "rejected", "reasons": ["before_data_sharing_start"]}
    assert shown["history"][1]["judged_again"] == "rules 2024.2 published"
    assert (await submission(stack, before["id"]))["reasons"] == ["before_data_sharing_start"]  # not reached
    rules = (await stack.clients["enrollment"].get("/program-rules", params={"on": "2024-10-01"}, headers=STAFF)).json()
    assert rules["in_force"]["version"] == "2024.2" and rules["versions"] == ["2024.1", "2024.2"]
    # "already-paid results that it changes are shown as differences for staff": what the published version changed
    await quiet(stack)
    changed = what_if(stack, tmp_path, None, "--published", "2024.2", "--to", "2025Q4")["participants"][pid]
    assert (changed["difference"], [f["submission_id"] for f in changed["files"]]) == ("400.00", [held["id"]])


@pytest.mark.parametrize("milestone_first", [True, False])
async def test_a_files_verdict_does_not_depend_on_which_stream_arrives_first(stack: Stack, milestone_first: bool) -> None:
    """"Order between streams must not decide money": a file judged before Milestone 1 reaches submissions is
    judged again when it does, and ends where the other order ends."""
    pid = await enrolled_snf(stack, "ORDER_SNF", accept=milestone_first)
    if milestone_first:
        await milestone1_noted(stack, pid)
    file = await post_file(stack, "ORDER_SNF", "20251105080000", "2025-11-05T10:00:00-08:00")
    if not milestone_first:
        assert file["reasons"] == ["milestone1_not_achieved"]
        await stack.accept_agreements(pid)

    async def settled() -> dict[str, Any] | None:
        shown = await submission(stack, file["id"])
        return shown if shown["verdict"] == "credited" else None

    shown = await eventually(settled, timeout=30)
    assert (shown["amount"], shown["credit"]["quarter"], shown["credit"]["rule_version"]) == ("400.00", "2025Q4", "2024.1")


def what_if(stack: Stack, tmp_path: Path, document: dict[str, Any] | None, *args: str) -> dict[str, Any]:
    """`dsi rules what-if` on the stack's stores: for a proposed `document`, or (None) with `--published V` in args."""
    result = run_what_if(stack, tmp_path, document, *args)
    assert result.returncode == 0, result.stdout + result.stderr
    return dict(json.loads(result.stdout))


def run_what_if(stack: Stack, tmp_path: Path, document: dict[str, Any] | None, *args: str) -> subprocess.CompletedProcess[str]:
    if document is not None:
        path = tmp_path / f"{document['version']}.json"
        path.write_text(json.dumps(document))
        args = (str(path), *args)
    env = {**os.environ, "DSI_VAR_DIR": str(tmp_path / "var"),
           **{f"{name.upper()}_STORE": stack.store_url_for(name) for name in ("submissions", "milestones", "payments")}}
    return subprocess.run([sys.executable, "-m", "dsi_shared.cli", "rules", "what-if", *args, "--json"],
                          env=env, capture_output=True, text=True, timeout=120)


async def test_what_if_refuses_a_version_with_another_quarter_calendar_as_publishing_would(
        stack: Stack, tmp_path: Path) -> None:
    """Quarters already named and paid must never change meaning: a calendar change is no what-if either."""
    await stack.start("enrollment", "milestones", "submissions")

    async def rules_arrived() -> bool:
        return all(stack.runtimes[name].app.rulebook().versions for name in ("submissions", "milestones"))  # type: ignore[attr-defined]

    await eventually(rules_arrived, timeout=30)
    fiscal = amended("2025.1", "2025-01-01", {"program.quarter_calendar.quarter_starts": ["02-01", "05-01", "08-01",
                                                                                        "11-01"]})
    refused = run_what_if(stack, tmp_path, fiscal, "--to", "2025Q4")
    assert refused.returncode == 2 and "program.quarter_calendar" in refused.stdout + refused.stderr


async def test_what_if_shows_a_correction_and_a_shorter_window_before_publishing_and_records_nothing(
        stack: Stack, tmp_path: Path) -> None:
    """"dsi rules what-if RULES_FILE ... replays the recorded history ... under the proposed version and prints per
    participant: dollars under the current rules, under the proposed rules, the difference, and the files,
    evaluations and milestones that change, with their reasons. Nothing is recorded." """
    pid = await enrolled_snf(stack, "WHATIF_SNF")
    await milestone1_noted(stack, pid)
    early = await post_file(stack, "WHATIF_SNF", "20241105080000", "2024-11-05T10:00:00-08:00")
    sixty_hours = await post_file(stack, "WHATIF_SNF", "20251105080000", "2025-11-07T20:00:00-08:00")
    assert (early["verdict"], sixty_hours["verdict"]) == ("rejected", "credited")
    await quiet(stack)
    positions = {name: stack.runtimes[name].app.recorder.max_notification_id() for name in ("submissions", "milestones")}

    correction = amended("2024.2", "2024-10-01", {"provider_types.skilled_nursing.data_sharing_starts": "2024-10-01"})
    report = what_if(stack, tmp_path, correction, "--to", "2025Q4")
    row = report["participants"][pid]
    assert (row["current"], row["proposed"], row["difference"]) == ("10400.00", "10800.00", "400.00")
    [changed] = row["files"]
    assert changed["submission_id"] == early["id"]
    assert (changed["current"]["reasons"], changed["proposed"]["verdict"]) == (["before_data_sharing_start"], "credited")
    assert row["quarters"]["2024Q4"] == {"current": "", "proposed": "$400.00 (1 files)"}

    shorter = amended("2025.9", "2025-01-01", {"provider_types.skilled_nursing.earning_rule.timeliness_hours": 48})
    report = what_if(stack, tmp_path, shorter, "--from", "2025Q4", "--to", "2025Q4")
    row = report["participants"][pid]
    assert (row["difference"], [f["proposed"]["reasons"] for f in row["files"]]) == ("-400.00", [["late"]])
    for name, position in positions.items():  # nothing was recorded
        assert stack.runtimes[name].app.recorder.max_notification_id() == position


async def test_a_pcp_quarter_counts_plan_members_attributed_to_any_npi_it_declared(stack: Stack) -> None:
    """PCP denominator across services: "the plan members attributed (assigned) to the participant — by its id or any
    NPI it declared, an umbrella group's individual PCPs included — in that quarter"."""
    await stack.start("enrollment", "milestones", "submissions")
    await pcp_quarters_closed(stack)
    [evaluation] = (await stack.clients["milestones"].get("/evaluations", params={"quarter": "2025Q1"},
                                                          headers=STAFF)).json()["evaluations"]
    assert (evaluation["figures"]["attributed_members"], evaluation["figures"]["members_with_record"]) == (1, 1)
    assert (evaluation["milestone"], evaluation["outcome"], evaluation["earned"]) == ("M2", "met", "10000.00")


async def pcp_quarters_closed(stack: Stack) -> str:
    """A PCP group (two NPIs) with three members attributed in 2025Q1 — one to an individual PCP of the group, one a
    plan member only from 2025Q2, one another PCP's — and a credited record for the first; 2024Q4 and 2025Q1 closed.
    Returns the participant id."""
    enrollment = stack.clients["enrollment"]
    pid = await stack.register(provider_type="primary_care", submitted_on="2024-08-01", npi="1666666668",
                               individual_npis=["1777777776"], sending_facilities=["VALLEY_PCP"])
    for agreement in ("LOA", "DSA", "HIE"):
        await enrollment.post(f"/participants/{pid}/agreements", json=signature(agreement, "2024-11-01T10:00:00-07:00"),
                              headers=STAFF)
    await stack.accept_agreements(pid)
    member, not_yet, elsewhere = cin(11), cin(12), cin(13)
    roster_csv = ("member_id,last_name,first_name,birth_date,eligibility_start,eligibility_end,aid_code,"
                  "other_health_coverage,dual_eligible\n"
                  f"{member},DOE,JANE,1980-01-01,2024-01-01,,1H,N,N\n"
                  f"{not_yet},ROE,RITA,1981-01-01,2025-04-01,,1H,N,N\n"
                  f"{elsewhere},POE,EDGAR,1982-01-01,2024-01-01,,1H,N,N\n")
    await enrollment.post("/members/import", content=roster_csv, headers={**STAFF, "content-type": "text/csv"})
    attributions = ("member_id,kind,assignee,start,end\n"
                    f"{member},pcp,1777777776,2025-01-01,\n"  # an individual PCP of the group
                    f"{not_yet},pcp,1666666668,2025-01-01,\n"  # attributed, but a plan member only from 2025Q2
                    f"{elsewhere},pcp,1999999999,2025-01-01,\n")  # another PCP's
    await enrollment.post("/attributions/import", content=attributions, headers={**STAFF, "content-type": "text/csv"})
    submissions = stack.runtimes["submissions"].app

    async def member_known() -> bool:
        facts = submissions.participant_facts(UUID(pid))  # type: ignore[attr-defined]
        return bool(facts and facts.milestone1_at and submissions.member_facts(member))  # type: ignore[attr-defined]

    await eventually(member_known, timeout=30)
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": {"resourceType": "Patient", "id": "p", "identifier": [{"value": member}]}},
        {"resource": {"resourceType": "Observation", "id": "o", "status": "final", "code": {"text": "A1c"},
                      "subject": {"reference": "Patient/p"}}}]}
    record = await stack.clients["submissions"].post(
        "/longitudinal-records", content=json.dumps(bundle),
        params={"participant_id": pid, "received_at": "2025-02-01T10:00:00-08:00"},
        headers={**HIE, "content-type": "application/fhir+json"})
    assert record.json()["verdict"] == "credited"
    await quiet(stack)
    milestones = stack.clients["milestones"]
    for quarter in ("2024Q4", "2025Q1"):
        assert (await milestones.post(f"/quarters/{quarter}/close", headers=STAFF)).status_code == 200
    return pid
