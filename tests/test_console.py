"""The console in a real browser (Debian's Chromium, driven by Playwright) against real services on real NATS
JetStream + PostgreSQL: staff register a provider and see Milestone 1 paid, an SNF file over MLLP appears with its
verdict, a quarter is closed, validated and exported; a provider sees only its own statement; an auditor sees no
write control; a form without its CSRF token is refused. Waits are on page content or on the system, never sleeps."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4
from zoneinfo import ZoneInfo

import pytest
import uvicorn
from console.upstream import Upstream
from console.web import ConsoleApp, web
from dsi_shared.natsserver import free_port
from dsi_shared.service import ServiceRuntime, discover
from playwright.async_api import Page, async_playwright, expect
from starlette.routing import Route

from tests.harness import STAFF, TOKENS_RAW, Stack, eventually, mllp_exchange
from tests.hl7_corpus import combined
from tests.rulesdoc import amended
from tests.test_cap_scope import milestone1_paid
from tests.test_dead_letter_api import TRACE, failed_signature
from tests.test_program_rules import enrolled_snf, milestone1_noted, pcp_quarters_closed, post_file
from tests.test_submissions import CSV, MEMBER, post_hl7

pytestmark = pytest.mark.integration
CHROMIUM = os.environ.get("DSI_CHROMIUM", "/usr/bin/chromium")
# As the machine notes say: no sandbox as root, no GPU, and no background calls home (the network is closed).
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
OWN_NPI, OTHER_NPI = "1234567893", "1093817462"  # two valid NPIs (check digit)
CONSOLE_TOKENS = f"{TOKENS_RAW},provider-a:provider:{OWN_NPI},provider-b:provider:{OTHER_NPI}"
PLAN = ZoneInfo("America/Los_Angeles")


class RunningConsole:
    def __init__(self, url: str, app: ConsoleApp, shots: Path) -> None:
        self.url, self.app, self.shots = url, app, shots

    async def shot(self, page: Page, name: str) -> None:
        await page.screenshot(path=str(self.shots / f"{name}.png"), full_page=True)


@pytest.fixture
async def console(stack: Stack, tmp_path: Path) -> AsyncIterator[RunningConsole]:
    """The console on a free port in this test's loop; it reaches the stack's in-process services."""
    await stack.start("enrollment", "submissions", "milestones", "payments", "qip-share")
    settings = replace(stack.settings("console"), tokens_raw=CONSOLE_TOKENS)
    app = web(ServiceRuntime(discover()["console"], settings), Upstream(stack.clients), read_token="auditor-token")
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False))
    task = asyncio.create_task(server.serve())

    async def started() -> bool:
        return server.started

    await eventually(started)
    # `make screenshots` sets DSI_SCREENSHOT_DIR=var/screenshots; otherwise the test's own folder.
    shots = Path(os.environ.get("DSI_SCREENSHOT_DIR") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    try:
        yield RunningConsole(f"http://127.0.0.1:{port}", app, shots)
    finally:
        server.should_exit = True
        await task


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    """Debian's Chromium (never a downloaded build); missing, the test fails saying how to install it."""
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"Chromium is not installed at {CHROMIUM}: `make test` installs it as root (apt-get install -y "
                    "chromium); elsewhere install Debian's chromium package, or set DSI_CHROMIUM", pytrace=False)
    async with async_playwright() as playwright:
        # Each launch runs on a fresh, empty profile directory of Playwright's own.
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        try:
            yield chromium
        finally:
            await chromium.close()


async def signed_in(browser: Any, console: RunningConsole, token: str) -> Page:
    page = await (await browser.new_context(base_url=console.url, accept_downloads=True)).new_page()
    await page.goto("/")
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await page.get_by_label("Your access token").fill(token)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    return page


def hl7_time(moment: datetime) -> str:
    return moment.astimezone(PLAN).strftime("%Y%m%d%H%M%S")


async def test_staff_register_a_provider_accept_its_agreements_see_milestone_1_paid_an_mllp_file_and_a_closed_quarter(
        stack: Stack, console: RunningConsole, browser: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    page = await signed_in(browser, console, "staff")
    await console.shot(page, "participants")
    await page.get_by_role("link", name="Register a provider").click()
    await page.get_by_label("Legal name").fill("Sunny Skilled Nursing")
    await page.get_by_label("NPI (10 digits)").fill(OWN_NPI)
    await page.get_by_label("Provider type").select_option("skilled_nursing")
    await page.get_by_label("Counties (comma-separated)").fill("Monterey")
    await page.get_by_label("EHR product").fill("PointClickCare")
    await page.get_by_label("Sending facilities (MSH-4, comma-separated)").fill("SUNNY_SNF")
    await page.get_by_label("Contact e-mail").fill("dsi@sunny.example")
    await page.get_by_label("Form submitted on").fill("2024-03-01")
    await console.shot(page, "interest-form")
    await page.get_by_role("button", name="Register").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Sunny Skilled Nursing")
    await expect(page.get_by_text("Eligible under rules version 2024.1")).to_be_visible()
    pid = page.url.rsplit("/", 1)[1]

    for agreement in ("LOA", "DSA", "HIE"):
        await page.get_by_label("Agreement", exact=True).first.select_option(agreement)
        await page.get_by_label("Signed at (with its UTC offset)").fill("2024-05-01T10:00:00-07:00")
        await page.get_by_label("Document id").first.fill(f"doc-{agreement}")
        await page.get_by_role("button", name="Record signature").click()
        await expect(page.get_by_role("row", name=re.compile(f"^{agreement} awaiting review"))).to_be_visible()
    await page.get_by_role("button", name="Accept signed agreements").click()
    for agreement in ("LOA", "DSA", "HIE"):
        await expect(page.get_by_role("row", name=re.compile(f"^{agreement} accepted"))).to_be_visible()

    await stack.wait_paid(pid)  # milestones and payments act on the events; then the page shows the payment
    await page.reload()
    await expect(page.get_by_text("M1 achieved")).to_be_visible()
    await expect(page.get_by_role("row", name=re.compile(r"^M1 2024Q2 \$10,000\.00"))).to_be_visible()
    await expect(page.get_by_text("Paid $10,000.00 of a cap of $40,000.00; headroom $30,000.00.")).to_be_visible()

    # An SNF file over MLLP, 74½ hours after the admission: it appears with its verdict, in plain words too.
    await stack.clients["enrollment"].post("/members/import", content=CSV, headers={**STAFF, "content-type": "text/csv"})
    submissions = stack.runtimes["submissions"].app

    async def member_and_milestone_known() -> bool:
        facts = submissions.participant_facts(UUID(pid))  # type: ignore[attr-defined]
        return bool(facts and facts.milestone1_at and submissions.member_facts(MEMBER))  # type: ignore[attr-defined]

    await eventually(member_and_milestone_known)
    admitted = datetime.now(PLAN) - timedelta(hours=74, minutes=30)
    frame = combined("A01", MEMBER, occurred=hl7_time(admitted), visit="V0074").replace("\r", "\r").encode()
    assert b"MSA|" in await mllp_exchange(stack.mllp_port, frame)
    await page.reload()
    row = page.get_by_role("row", name=re.compile("mllp"))
    await expect(row).to_contain_text("rejected")
    await expect(row).to_contain_text("received 74 hours after the admission; the limit is 72")
    await expect(row).to_contain_text(MEMBER)  # staff see the member's CIN
    await console.shot(page, "participant")

    # A timely file in 2025Q4 (the HIE's receipt time stated), credited; staff close the quarter, validate, export.
    timely = await post_hl7(stack, combined("A01", MEMBER), "2025-11-01T18:00:00-07:00")
    [credited] = timely["submissions"]
    milestones = stack.runtimes["milestones"].app

    async def credit_known() -> bool:
        return credited["id"] in milestones.ledger_or_new(UUID(pid)).credits  # type: ignore[attr-defined]

    await eventually(credit_known)
    await page.get_by_role("link", name="Quarters").click()
    await page.get_by_label("Quarter (e.g. 2025Q4)").fill("2025Q4")
    await page.get_by_role("button", name="Open quarter").click()
    await expect(page.get_by_text("Not closed yet.")).to_be_visible()
    await page.get_by_role("button", name="Close quarter 2025Q4").click()
    evaluation = page.get_by_role("row", name=re.compile(pid[:8]))
    await expect(evaluation).to_contain_text("pending validation")
    await expect(evaluation).to_contain_text("$400.00")
    await evaluation.get_by_role("button", name="Validate").click()
    await expect(page.get_by_role("row", name=re.compile(pid[:8]))).to_contain_text("validated")
    await console.shot(page, "quarter")
    async with page.expect_download() as download_info:
        await page.get_by_role("link", name="Download the accounts-payable export (CSV)").click()
    download = await download_info.value
    await eventually(lambda: _paid_quarter(stack, pid))  # the export lists payments once payments has recorded them
    async with page.expect_download() as again_info:
        await page.get_by_role("link", name="Download the accounts-payable export (CSV)").click()
    exported = Path(await (await again_info.value).path()).read_text()
    assert download.suggested_filename == "dsi-ap-export-2025Q4.csv"
    assert f"{pid},Sunny Skilled Nursing," in exported and ",400.00," in exported and MEMBER not in exported

    await page.goto("/charts")
    await expect(page.get_by_role("img", name=re.compile("Dollars paid per quarter by provider type"))).to_be_visible()
    await console.shot(page, "charts")
    # No PHI in any log of this flow: the member's CIN appeared on the staff's pages only.
    assert MEMBER not in caplog.text


async def _paid_quarter(stack: Stack, pid: str) -> bool:
    statement = await stack.payments_of(pid)
    return any(p["milestone"] == "SNF:2025Q4" for p in (statement or {}).get("payments", []))


async def test_a_provider_sees_only_its_own_statement_and_every_route_with_another_id_is_404(
        stack: Stack, console: RunningConsole, browser: Any) -> None:
    own = await stack.register(npi=OWN_NPI, sending_facilities=["SUNNY_SNF"])
    await stack.clients["enrollment"].post(f"/participants/{own}/agreements", headers=STAFF, json={
        "agreement": "LOA", "signed_at": "2024-05-01T10:00:00-07:00", "document_id": "doc-LOA"})
    submissions = stack.runtimes["submissions"].app

    async def registered() -> bool:
        return submissions.participant_facts(UUID(own)) is not None  # type: ignore[attr-defined, no-any-return]

    await eventually(registered)  # submissions knows the sender's facility
    # a file received 74½ hours after its admission (2025-11-01 08:00 plan time)
    await post_hl7(stack, combined("A01", MEMBER), "2025-11-04T09:30:00-08:00")
    other = await stack.register(legal_name="Other Care Home", npi=OTHER_NPI, tin="941234568")
    page = await signed_in(browser, console, "provider-a")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Sunrise Skilled Nursing")
    assert page.url.endswith(f"/statement/{own}")
    missing = page.locator("ul.missing")
    await expect(missing).to_contain_text("the Letter of Agreement is signed and waits for the plan's review")
    await expect(missing).to_contain_text("sign the Data Sharing Agreement")
    await expect(page.get_by_text("Other Care Home")).to_have_count(0)
    file = page.get_by_role("row", name=re.compile("^2025-11"))
    await expect(file).to_contain_text("rejected")
    await expect(file).to_contain_text("received 74 hours after the admission; the limit is 72")
    await expect(file).to_contain_text("the patient was not a plan member on the day of the event")
    await expect(file).not_to_contain_text(MEMBER)  # a provider's page shows no member CIN
    await console.shot(page, "provider-statement")
    await page.goto(f"/statement/{own}/2025Q4")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Sunrise Skilled Nursing: statement for 2025Q4")
    async with page.expect_download() as downloading:  # the same statement as a PDF
        await page.get_by_role("link", name="download it as a PDF").click()
    download = await downloading.value
    assert download.suggested_filename == f"statement-{OWN_NPI}-2025Q4.pdf"
    assert Path(await download.path()).read_bytes().startswith(b"%PDF-")
    await page.emulate_media(media="print")
    await expect(page.get_by_role("navigation", name="Main")).to_be_hidden()  # the print stylesheet
    await console.shot(page, "provider-statement-print")
    await page.emulate_media(media="screen")

    refused = await page.goto(f"/statement/{other}")
    assert refused is not None and refused.status == 404
    await expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    await expect(page.get_by_text("Other Care Home")).to_have_count(0)
    # Every console route that takes an id, asked with another participant's (or any) id: 404, never its data.
    ids = {"pid": other, "quarter": "2025Q4", "evaluation_id": str(uuid4()), "job_id": uuid4().hex, "kind": "members",
           "delivery_id": str(uuid4()), "resource_type": "Patient"}
    routes = [r for r in console.app.pages.routes if isinstance(r, Route) and "{" in r.path]
    assert {r.path for r in routes} >= {"/participants/{pid}", "/statement/{pid}", "/statement/{pid}/{quarter}"}
    for route in routes:
        url = route.path.format(**ids)
        for method in sorted(route.methods or ()):
            if method == "HEAD":
                continue
            answer = await page.request.fetch(url, method=method, form={"csrf": "x"} if method == "POST" else None)
            assert answer.status == 404, (method, route.path, answer.status)
            assert "Other Care Home" not in await answer.text()


async def test_an_auditor_sees_no_write_control_and_the_server_refuses_its_writes(
        stack: Stack, console: RunningConsole, browser: Any) -> None:
    pid = await stack.register()
    await stack.register(legal_name="Harbor Care Home")
    await stack.publish("dsi.in.agreement-signed", {})  # names no participant: enrollment dead-letters it
    page = await signed_in(browser, console, "auditor-token")
    refused_by_csp: list[str] = []
    page.on("console", lambda message: refused_by_csp.append(message.text) if "Content Security Policy" in message.text
            else None)
    await page.goto("/participants")
    await expect(page.get_by_role("table")).to_contain_text("2 participants")
    await page.get_by_label("Name, NPI or id").fill("harbor")  # htmx (served by the console) filters as one types
    await expect(page.get_by_role("table")).to_contain_text("1 participant")
    await expect(page.get_by_role("row", name=re.compile("^Harbor Care Home"))).to_be_visible()
    for url in ("/participants", f"/participants/{pid}", "/quarters", "/quarters/2025Q4", "/qip", "/operations"):
        await page.goto(url)
        await expect(page.get_by_role("heading", level=1)).to_be_visible()
        buttons = await page.get_by_role("button").all_inner_texts()
        assert [b for b in buttons if b not in {"Sign out", "Filter", "Open quarter", "Find disclosures"}] == [], (url, buttons)
        await console.shot(page, "auditor" + url.replace("/", "-").replace(pid, "participant"))
    await page.goto("/operations")
    await expect(page.get_by_role("row", name=re.compile("dsi.in.agreement-signed"))).to_contain_text("enrollment")
    await console.shot(page, "operations")
    await page.goto("/audit")
    await page.get_by_role("button", name="Run replay and verify now").click()
    await expect(page.get_by_role("row", name=re.compile("^enrollment intact"))).to_be_visible()
    await console.shot(page, "audit")
    csrf = await page.locator("form.signout input[name=csrf]").get_attribute("value")
    refused = await page.request.post(f"/participants/{pid}/acceptance", form={"csrf": csrf or ""})
    assert refused.status == 403 and "may not do this" in await refused.text()
    assert refused_by_csp == []  # every script, style and image is the console's own


async def test_a_form_posted_without_its_csrf_token_is_refused(stack: Stack, console: RunningConsole, browser: Any) -> None:
    page = await signed_in(browser, console, "staff")
    response = await page.goto("/participants")
    assert response is not None
    headers = response.headers
    assert "frame-ancestors 'none'" in headers["content-security-policy"] and headers["x-frame-options"] == "DENY"
    assert "default-src 'self'" in headers["content-security-policy"]
    refused = await page.request.post("/quarters/2025Q4/close", form={"reason": "no token"})
    assert refused.status == 403 and "CSRF token is missing" in await refused.text()
    wrong = await page.request.post("/quarters/2025Q4/close", form={"csrf": "not-the-session-token"})
    assert wrong.status == 403
    closed = await stack.clients["milestones"].get("/quarters/2025Q4", headers=STAFF)
    assert closed.status_code == 404  # nothing was closed
    anonymous = await (await browser.new_context(base_url=console.url)).request.post("/login", form={"token": "staff"})
    assert anonymous.status == 403  # the sign-in form has its own (double-submit) token


async def test_staff_upload_a_48_hour_window_see_the_file_it_would_change_and_what_a_published_correction_changed(
        stack: Stack, console: RunningConsole, browser: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 11 §5, "what if the timeliness window were 48 hours instead of 72": the what-if "prints per participant:
    dollars under the current rules, under the proposed rules, the difference, and the files, evaluations and
    milestones that change, with their reasons. Nothing is recorded." And §2: a published correction's
    "already-paid results that it changes are shown as differences for staff (never silently rewritten)"."""
    for name in ("submissions", "milestones", "payments"):  # the console reads the stores as `dsi rules what-if` does
        monkeypatch.setenv(f"{name.upper()}_STORE", stack.store_url_for(name))
    pid = await enrolled_snf(stack, "WINDOW_SNF")
    await milestone1_noted(stack, pid)
    sixty_hours = await post_file(stack, "WINDOW_SNF", "20251105080000", "2025-11-07T20:00:00-08:00")
    early = await post_file(stack, "WINDOW_SNF", "20241105080000", "2024-11-05T10:00:00-08:00")
    assert (sixty_hours["verdict"], early["reasons"]) == ("credited", ["before_data_sharing_start"])
    proposed = tmp_path / "rules-2025.9.json"
    proposed.write_text(json.dumps(amended(
        "2025.9", "2025-01-01", {"provider_types.skilled_nursing.earning_rule.timeliness_hours": 48})))

    page = await signed_in(browser, console, "staff")
    await page.get_by_role("link", name="Rules", exact=True).click()
    await expect(page.get_by_role("row", name=re.compile(r"^2024\.1 "))).to_contain_text("packaged default")
    await page.get_by_label("Proposed rules document (a JSON file)").set_input_files(str(proposed))
    await expect(page.get_by_label(re.compile("or paste it"))).to_have_value(re.compile('"2025.9"'))
    await page.get_by_label(re.compile("^From quarter")).fill("2025Q4")
    await page.get_by_label(re.compile("^To quarter")).fill("2025Q4")
    await page.get_by_role("button", name="Run the what-if").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("What if 2025.9 were published")
    row = page.get_by_role("row", name=re.compile("^Sunrise"))
    await expect(row).to_contain_text(f"File {sixty_hours['id']} (2025Q4): credited", timeout=60_000)
    await expect(row).to_contain_text("→ rejected (late)")
    await expect(row.get_by_role("cell").nth(2)).to_have_text("-$400.00")
    await console.shot(page, "rules-what-if")
    assert (await stack.clients["submissions"].get(f"/submissions/{sixty_hours['id']}", headers=STAFF)).json()[
        "verdict"] == "credited"  # nothing was recorded

    correction = amended("2024.2", "2024-10-01", {"provider_types.skilled_nursing.data_sharing_starts": "2024-10-01"})
    published = await stack.clients["enrollment"].post("/program-rules", headers=STAFF, json={
        "rules": correction, "reason": "SNF/LTC data sharing starts the day after the Milestone 1 deadline"})
    assert published.status_code == 201, published.text
    await page.get_by_role("link", name="Rules", exact=True).click()
    await expect(page.get_by_role("row", name=re.compile(r"^2024\.2 "))).to_contain_text("correction")
    await console.shot(page, "rules")
    await page.get_by_role("button", name="What 2024.2 changed").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("What if 2024.2 changed")
    row = page.get_by_role("row", name=re.compile("^Sunrise"))
    await expect(row).to_contain_text(f"File {early['id']} (2024Q4): rejected (before_data_sharing_start) → credited",
                                      timeout=60_000)
    await expect(row.get_by_role("cell").nth(2)).to_have_text("$400.00")
    await console.shot(page, "rules-correction")
    await page.goto(f"/participants/{pid}")  # the correction reached it: its page links the same report
    corrections = page.get_by_role("region", name="Rules corrections that reached it")
    await expect(corrections).to_contain_text("2024.2 (effective 2024-10-01")
    await corrections.get_by_role("button", name="What 2024.2 changed").click()
    await expect(page.get_by_role("row", name=re.compile("^Sunrise"))).to_contain_text(early["id"], timeout=60_000)
    assert page.url.endswith(f"#p-{pid}")

    broken = amended("2025.10", "2025-01-01", {})
    del broken["program"]["cap"]
    await page.goto("/rules")
    await page.get_by_label(re.compile("or paste it")).fill(json.dumps(broken))
    await page.get_by_role("button", name="Run the what-if").click()
    await expect(page.get_by_role("alert")).to_contain_text("program.cap")  # a 422 naming the field


async def test_ops_see_a_dead_letter_with_its_reason_and_trace_link_and_replay_it_so_it_applies(
        stack: Stack, console: RunningConsole, browser: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 15 §2: "Operations: each service's health, readiness, consumer lag, dead letters with replay, recent
    traces' ids with a link to the trace viewer when `DSI_TRACE_URL` is set"."""
    monkeypatch.setenv("DSI_TRACE_URL", "http://jaeger.example:16686/trace/{trace_id}")
    pid, letter = await failed_signature(stack)
    page = await signed_in(browser, console, "ops-token")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Operations")
    row = page.get_by_role("row", name=re.compile(f"^{letter['sequence']} .*dsi.in.agreement-signed"))
    await expect(row).to_contain_text("ConnectionError")
    await expect(row.get_by_role("link", name=TRACE)).to_have_attribute(
        "href", f"http://jaeger.example:16686/trace/{TRACE}")
    await expect(page.get_by_role("region", name="Recent traces").get_by_role("link", name=TRACE)).to_be_visible()
    await console.shot(page, "operations-ops")
    await row.get_by_role("button", name=f"Replay dead letter {letter['sequence']}").click()
    await expect(page.get_by_role("status")).to_contain_text(f"Dead letter {letter['sequence']} was replayed")
    await expect(page.get_by_role("row", name=re.compile(f"^{letter['sequence']} "))).to_contain_text("yes")

    async def applied() -> bool:
        answer = await stack.clients["enrollment"].get(f"/participants/{pid}", headers=STAFF)
        return answer.json()["agreements"]["LOA"] is not None

    await eventually(applied)  # the signature the store once refused is recorded now


async def test_staff_see_files_credited_and_rejected_per_week_and_pcp_coverage_against_threshold_with_data_tables(
        stack: Stack, console: RunningConsole, browser: Any) -> None:
    """Issue 15 §2: "Charts where people would rather look than read: … files credited vs rejected by reason per week,
    coverage per PCP against its threshold (server-rendered SVG …)"."""
    await pcp_quarters_closed(stack)  # a record received 2025-02-01 (ISO week 5), credited; 2025Q1 evaluated
    [evaluation] = (await stack.clients["milestones"].get("/evaluations", params={"quarter": "2025Q1"},
                                                          headers=STAFF)).json()["evaluations"]
    snf = await stack.register(legal_name="Harbor Care Home", npi=OWN_NPI, sending_facilities=["SUNNY_SNF"])
    submissions = stack.runtimes["submissions"].app

    async def registered() -> bool:
        return submissions.participant_facts(UUID(snf)) is not None  # type: ignore[attr-defined, no-any-return]

    await eventually(registered)
    [rejected] = (await post_hl7(stack, combined("A01", MEMBER), "2025-11-04T09:30:00-08:00"))["submissions"]
    reason = rejected["reasons"][0].partition(":")[0]  # received in ISO week 45
    page = await signed_in(browser, console, "staff")
    await page.get_by_role("link", name="Charts").click()
    await expect(page.get_by_role("img", name=re.compile("^Files credited and rejected"))).to_be_visible()
    files = page.get_by_role("table", name=re.compile("^Files per week"))
    await expect(files.get_by_role("row", name=re.compile("^2025-W05 credited 1$"))).to_be_visible()
    await expect(files.get_by_role("row", name=re.compile(f"^2025-W45 rejected: {reason} 1$"))).to_be_visible()
    # the latest quarter evaluated is shown by default
    figures = evaluation["figures"]
    await expect(page.get_by_role("img", name=re.compile("Coverage per PCP against its threshold, 2025Q1: 1 of 1 met"))
                 ).to_be_visible()
    row = page.get_by_role("table", name="Coverage per PCP in 2025Q1").get_by_role("row", name=re.compile("^Sunrise"))
    await expect(row).to_have_text(re.compile(
        f"{figures['attributed_members']}\\s*{figures['members_with_record']}\\s*{figures['coverage_percent']}%"
        f"\\s*{figures['threshold_percent']}%\\s*met"))
    await console.shot(page, "charts-files-coverage")
    await page.get_by_label("Quarter (e.g. 2025Q1)").fill("2024Q4")
    await page.get_by_role("button", name="Show quarter").click()
    await expect(page.get_by_role("heading", name="Coverage per PCP against its threshold, 2024Q4")).to_be_visible()
    await expect(page.get_by_role("table", name="Coverage per PCP in 2025Q1")).to_have_count(0)


async def test_the_amount_paid_filter_lists_the_paid_participant_only(
        stack: Stack, console: RunningConsole, browser: Any) -> None:
    """Issue 15 §2: "participants with search and filters (type, county, status, Milestone 1, amount paid)"."""
    paid = await stack.register(legal_name="Paid Care Home")
    await stack.register(legal_name="Unpaid Care Home")
    statement = await milestone1_paid(stack, paid, "2024-05-01T10:00:00-07:00")

    async def projected() -> bool:  # payments' read model has the payment
        found = await stack.clients["payments"].get("/payments/participants", params={"paid_min": "0.01"},
                                                    headers=STAFF)
        return found.json()["count"] == 1

    await eventually(projected)
    page = await signed_in(browser, console, "staff")
    await expect(page.get_by_role("table")).to_contain_text("2 participants")
    await page.get_by_label("Paid at least ($)").fill(statement["total_paid"])
    await page.get_by_role("button", name="Filter").click()
    await expect(page.get_by_role("table")).to_contain_text("1 participant")
    await expect(page.get_by_role("row", name=re.compile("^Paid Care Home"))).to_be_visible()
    await expect(page.get_by_role("row", name=re.compile("^Unpaid Care Home"))).to_have_count(0)
    assert f"paid_min={statement['total_paid']}" in page.url
    await console.shot(page, "participants-paid-filter")
    await page.get_by_label("Paid at least ($)").fill("")
    await page.get_by_label("Paid at most ($)").fill("0")  # never paid: the other one only
    await page.get_by_role("button", name="Filter").click()
    await expect(page.get_by_role("row", name=re.compile("^Unpaid Care Home"))).to_be_visible()
    await expect(page.get_by_role("row", name=re.compile("^Paid Care Home"))).to_have_count(0)
    refused = await page.goto("/participants?paid_max=ten+dollars")
    assert refused is not None and refused.status == 422
    await expect(page.get_by_text("Paid at most: enter an amount in dollars")).to_be_visible()
