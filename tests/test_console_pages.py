"""The console's imports, rules publishing and QIP pages in a real browser (Debian's Chromium, driven by Playwright)
against real services on real NATS JetStream + PostgreSQL, with the fixtures of `tests/test_console.py`: staff import
a members file and read its per-line report; staff publish a version after its what-if; a QIP delivery's page shows
its withheld counts and a file downloads; an auditor sees no publish or import control."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import expect
from qip_share.ledger import QipMember

from tests.harness import STAFF, Stack, eventually
from tests.rulesdoc import amended
from tests.test_console import RunningConsole, browser, console, signed_in  # noqa: F401 - the shared fixtures
from tests.test_qip_deliveries import DPH_NPI, VALUE_SET

pytestmark = pytest.mark.integration
HEADER = ("member_id,last_name,first_name,birth_date,eligibility_start,eligibility_end,aid_code,other_health_coverage,"
          "dual_eligible")
ANN = "30000001A"


async def test_staff_import_a_members_file_and_see_its_per_line_report_with_the_rejected_line(
        stack: Stack, console: RunningConsole, browser: Any, tmp_path: Path,  # noqa: F811
        caplog: pytest.LogCaptureFixture) -> None:
    """Issue 15 §2: "imports (members, attributions, DSA signatory list) with their per-line reports"."""
    caplog.set_level(logging.INFO)
    roster = tmp_path / "members.csv"
    roster.write_text("\n".join([HEADER, f"{ANN},OKAFOR,ADA,1950-02-03,2025-01-01,,1H,N,N",
                                 "999,ZUBIRI,JON,1960-01-01,2025-01-01,,1H,N,N"]) + "\n")
    page = await signed_in(browser, console, "staff")
    await page.get_by_role("link", name="Imports").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Imports")
    await page.get_by_label("Members file (CSV or X12 834)").set_input_files(str(roster))
    await page.get_by_role("button", name="Import members").click()
    await expect(page.get_by_role("status")).to_contain_text("2 lines read: 1 accepted, 0 not applied, 1 rejected")
    rejected = page.get_by_role("row", name=re.compile("^3 rejected"))
    await expect(rejected).to_contain_text("member_id: not a Medi-Cal CIN (8 digits then a letter)")
    await expect(page.get_by_text("ZUBIRI")).to_have_count(0)  # reasons only: nothing of the file is echoed
    await console.shot(page, "imports")
    member = await stack.clients["enrollment"].get(f"/members/{ANN}", headers=STAFF)
    assert member.status_code == 200  # the accepted line reached enrollment

    await page.get_by_label("Members file (CSV or X12 834)").set_input_files(str(roster))
    await page.get_by_role("button", name="Import members").click()
    await expect(page.get_by_role("status")).to_contain_text("This file was imported before")
    roster.write_text("member_id,name\n30000002B,ROE\n")  # a file enrollment cannot read as a whole: said so
    await page.get_by_label("Members file (CSV or X12 834)").set_input_files(str(roster))
    await page.get_by_role("button", name="Import members").click()
    await expect(page.get_by_role("alert")).to_contain_text("nothing was imported")
    await expect(page.get_by_role("alert")).to_contain_text("missing")
    assert ANN not in caplog.text and "ZUBIRI" not in caplog.text  # no PHI in the logs


async def test_staff_run_a_what_if_then_publish_the_version_confirming_what_it_lowers_and_see_it_listed(
        stack: Stack, console: RunningConsole, browser: Any, tmp_path: Path,  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 15 §2: "rules: the versions, their differences, publishing a new one after its what-if report"; DOMAIN.md
    A4: "A version that would lower what a participant earned under terms it already signed needs staff
    confirmation with a reason"."""
    for name in ("submissions", "milestones"):  # the console reads the stores as `dsi rules what-if` does
        monkeypatch.setenv(f"{name.upper()}_STORE", stack.store_url_for(name))
    proposed = tmp_path / "rules-2025.9.json"
    proposed.write_text(json.dumps(amended(
        "2025.9", "2025-01-01", {"provider_types.skilled_nursing.earning_rule.timeliness_hours": 48})))
    page = await signed_in(browser, console, "staff")
    await page.goto("/rules")
    await page.get_by_label("Proposed rules document (a JSON file)").set_input_files(str(proposed))
    await expect(page.get_by_label(re.compile("or paste it"))).to_have_value(re.compile('"2025.9"'))
    await page.get_by_role("button", name="Run the what-if").click()
    await expect(page.get_by_role("heading", name="Publish this version")).to_be_visible(timeout=60_000)
    await page.get_by_label("Reason (recorded with the version)").fill("The HIE asks for 48 hours")
    await page.get_by_role("button", name="Publish 2025.9").click()
    alert = page.get_by_role("alert")  # enrollment's 409: what the version lowers, and the confirmation box
    await expect(alert).to_contain_text("provider_types.skilled_nursing.earning_rule.timeliness_hours shortened")
    await expect(page.get_by_label("Reason (recorded with the version)")).to_have_value("The HIE asks for 48 hours")
    await console.shot(page, "rules-publish-confirm")
    await page.get_by_label(re.compile("I confirm this version lowers")).check()
    await page.get_by_role("button", name="Publish 2025.9").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Program rules")
    await expect(page.get_by_role("row", name=re.compile(r"^2025\.9 "))).to_contain_text("The HIE asks for 48 hours")
    rules = (await stack.clients["enrollment"].get("/program-rules", headers=STAFF)).json()
    assert "2025.9" in rules["versions"]

    clash = amended("2024.1", "2024-01-01", {"program.cap": "50000.00"})  # a known version with other content
    await page.get_by_label(re.compile("or paste it")).fill(json.dumps(clash))
    await page.get_by_role("button", name="Run the what-if").click()
    await page.get_by_label("Reason (recorded with the version)").fill("a clash", timeout=60_000)
    await page.get_by_role("button", name="Publish 2024.1").click()
    await expect(page.get_by_role("alert")).to_contain_text("version: 2024.1 already exists")  # the 422, by field


async def a_delivery_with_a_withheld_record(stack: Stack) -> dict[str, Any]:
    """A DPH, a requirement, Ann assigned to it through enrollment, her HbA1c and an HIV test result (withheld by the
    sensitivity policy), and the delivery recorded."""
    qip = stack.clients["qip-share"]
    dph = (await qip.post("/entities", headers=STAFF, json={
        "kind": "DPH", "name": "Valley Medical Center", "identifiers": {"npi": DPH_NPI},
        "address": "751 S Bascom Ave, San Jose CA", "endpoint": "sftp://vmc.example/qip"})).json()
    value_set = {**VALUE_SET, "expansion": {**VALUE_SET["expansion"], "contains": [  # type: ignore[dict-item]
        *VALUE_SET["expansion"]["contains"], {"system": "http://loinc.org", "code": "7917-8"}]}}  # type: ignore[index]
    assert (await qip.post("/value-sets", headers=STAFF, json=value_set)).status_code == 200
    assert (await qip.post("/requirements", headers=STAFF, json={
        "code": "QIP-PY2025-CDC", "title": "HbA1c control, PY2025", "feed_kinds": ["eligibility", "lab_results"],
        "period_start": "2025-01-01", "period_end": "2025-12-31", "due_date": "2026-03-31"})).status_code == 201
    roster = f"member_id,kind,assignee,start,end\n{ANN},qip,{DPH_NPI},2025-01-01,\n"
    imported = await stack.clients["enrollment"].post("/attributions/import", content=roster,
                                                      headers={**STAFF, "content-type": "text/csv"})
    assert imported.json()["accepted"] == 1, imported.text
    app = stack.runtimes["qip-share"].app

    async def assigned() -> bool:
        return app.find(QipMember.create_id(ANN), QipMember) is not None  # type: ignore[attr-defined]

    await eventually(assigned)
    feeds = {"eligibility": f"cin,birth_date,sex,aid_code,start_date\n{ANN},1970-04-05,F,1H,2024-01-01\n",
             "lab_results": f"result_id,cin,collected_date,loinc,value,unit\nL1,{ANN},2025-05-01,4548-4,5.4,%\n"
                            f"L2,{ANN},2025-06-01,7917-8,negative,\n"}
    for kind, text in feeds.items():
        ingested = await qip.post(f"/feeds/{kind}", content=text, headers={**STAFF, "content-type": "text/csv"})
        assert ingested.status_code == 201, ingested.text
    delivered = await qip.post("/deliveries?wait=true", headers=STAFF,
                               json={"entity_id": dph["id"], "requirement": "QIP-PY2025-CDC"})
    assert delivered.status_code == 201, delivered.text
    return dict(delivered.json())


async def test_a_delivery_page_shows_its_manifest_and_withheld_counts_a_file_downloads_and_a_members_disclosures(
        stack: Stack, console: RunningConsole, browser: Any, caplog: pytest.LogCaptureFixture) -> None:  # noqa: F811
    """Issue 15 §2, QIP: "requirements with on-time status per entity, deliveries with their manifest, totals and
    withheld-by-reason counts, file downloads, a member's accounting of disclosures"."""
    caplog.set_level(logging.INFO)
    delivery = await a_delivery_with_a_withheld_record(stack)
    assert delivery["totals"]["withheld"] == {"hiv_test_results": 1}
    page = await signed_in(browser, console, "staff")
    await page.get_by_role("link", name="QIP").click()
    status = page.get_by_role("row", name=re.compile("^Valley Medical Center (late|on time)"))
    await expect(status).to_contain_text("late")  # delivered after the due date, 2026-03-31
    await console.shot(page, "qip")
    await status.get_by_role("link").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Delivery to Valley Medical Center")
    await expect(page.get_by_role("row", name="hiv_test_results 1")).to_be_visible()
    observations = page.get_by_role("row", name=re.compile(r"^Observation\.ndjson 1 "))
    await expect(observations).to_be_visible()
    await console.shot(page, "qip-delivery")
    async with page.expect_download() as download_info:
        await observations.get_by_role("link").click()
    download = await download_info.value
    body = Path(await download.path()).read_bytes()
    [observation] = [f for f in delivery["files"] if f["type"] == "Observation"]
    assert hashlib.sha256(body).hexdigest() == observation["sha256"] and len(body.splitlines()) == 1
    assert download.suggested_filename == f"qip-delivery-{delivery['id'][:8]}-Observation.ndjson"

    await page.get_by_role("link", name="Back to QIP").click()
    await page.get_by_label("Member CIN (accounting of disclosures)").fill(ANN)
    await page.get_by_role("button", name="Find disclosures").click()
    await expect(page.get_by_role("table")).to_contain_text("1 disclosures about member")
    await expect(page.get_by_role("row", name=re.compile("Valley Medical Center"))).to_contain_text(
        "hiv_test_results: 1")
    await console.shot(page, "qip-disclosures")
    assert ANN not in caplog.text  # the CIN was on the staff's pages only, in no log


async def test_an_auditor_sees_no_publish_or_import_control_and_the_server_refuses_them(
        stack: Stack, console: RunningConsole, browser: Any) -> None:  # noqa: F811
    """Issue 15 §2, the auditor: "read-only everywhere (no write control is rendered, and the server refuses writes
    anyway)"; the QIP pages are theirs to read."""
    page = await signed_in(browser, console, "auditor-token")
    nav = page.get_by_role("navigation", name="Main")
    await expect(nav.get_by_role("link", name="QIP")).to_be_visible()
    for absent in ("Rules", "Imports"):
        await expect(nav.get_by_role("link", name=absent)).to_have_count(0)
    for url in ("/qip", "/qip/disclosures?member=30000001A"):
        await page.goto(url)
        await expect(page.get_by_role("heading", level=1)).to_be_visible()
        buttons = await page.get_by_role("button").all_inner_texts()
        assert [b for b in buttons if b not in {"Sign out", "Find disclosures"}] == [], (url, buttons)
    for url in ("/rules", "/imports"):
        refused = await page.goto(url)
        assert refused is not None and refused.status == 403, url
    csrf = await page.locator("form.signout input[name=csrf]").get_attribute("value") or ""
    imported = await page.request.post("/imports/members", multipart={
        "csrf": csrf, "file": {"name": "m.csv", "mimeType": "text/csv", "buffer": HEADER.encode()}})
    published = await page.request.post("/rules/what-if/0123/publish", form={"csrf": csrf, "reason": "no"})
    assert (imported.status, published.status) == (403, 403)
