"""The console's imports, rules publishing and QIP pages in a real browser (Debian's Chromium, driven by Playwright)
against real services on real NATS JetStream + PostgreSQL, with the fixtures of `tests/test_console.py`: staff import
a members file and read its per-line report; staff publish a version after its what-if; a QIP delivery's page shows
its withheld counts and a file downloads; an auditor sees no publish or import control."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import expect

from tests.harness import STAFF, Stack
from tests.rulesdoc import amended
from tests.test_console import RunningConsole, browser, console, signed_in  # noqa: F401 - the shared fixtures

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
