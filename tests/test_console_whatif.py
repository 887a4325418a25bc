"""`POST /program-rules/what-if` for staff, on the console (issue 11 §5), against real NATS + PostgreSQL stores:
a job answered 202, polled until done with the same summary `dsi rules what-if --json` prints; a malformed
document is a 422 naming the field; other roles get 403; nothing is recorded."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from console.upstream import Upstream
from console.web import web
from dsi_shared.service import ServiceRuntime, discover

from tests.harness import STAFF, Stack, eventually, quiet
from tests.rulesdoc import amended
from tests.test_program_rules import enrolled_snf, milestone1_noted, post_file

pytestmark = pytest.mark.integration
WHAT_IF = "/program-rules/what-if"


@pytest.fixture
async def console_api(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[httpx.AsyncClient]:
    """The console's app in-process; its what-if opens the stack's stores with the Settings the CLI uses."""
    for name in ("submissions", "milestones", "payments"):
        monkeypatch.setenv(f"{name.upper()}_STORE", stack.store_url_for(name))
    runtime = ServiceRuntime(discover()["console"], stack.settings("console"))
    app = web(runtime, Upstream(stack.clients), read_token="auditor-token")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://console") as client:
        yield client


async def finished(client: httpx.AsyncClient, location: str) -> dict[str, Any]:
    async def done() -> dict[str, Any] | None:
        job = (await client.get(location, headers=STAFF)).json()
        return dict(job) if job["status"] != "running" else None

    return dict(await eventually(done, timeout=90, interval=0.2))


async def test_staff_start_a_what_if_and_poll_it_until_it_shows_the_difference_and_nothing_is_recorded(
        stack: Stack, console_api: httpx.AsyncClient) -> None:
    """"`dsi rules what-if RULES_FILE ...` (and `POST /program-rules/what-if` for staff) replays the recorded history
    into a scratch store under the proposed version and prints per participant: dollars under the current rules,
    under the proposed rules, the difference, and the files, evaluations and milestones that change, with their
    reasons. Nothing is recorded." """
    pid = await enrolled_snf(stack, "API_SNF")
    await milestone1_noted(stack, pid)
    sixty_hours = await post_file(stack, "API_SNF", "20251105080000", "2025-11-07T20:00:00-08:00")
    assert sixty_hours["verdict"] == "credited"
    await quiet(stack)
    positions = {name: stack.runtimes[name].app.recorder.max_notification_id() for name in ("submissions", "milestones")}

    shorter = amended("2025.9", "2025-01-01", {"provider_types.skilled_nursing.earning_rule.timeliness_hours": 48})
    started = await console_api.post(WHAT_IF, headers=STAFF,
                                     json={"rules": shorter, "reason": "48 hours?", "from": "2025Q4", "to": "2025Q4"})
    assert started.status_code == 202, started.text
    assert started.headers["location"] == f"{WHAT_IF}/{started.json()['id']}"
    assert (started.json()["proposed_version"], started.json()["published"]) == ("2025.9", False)

    job = await finished(console_api, started.headers["location"])
    assert job["status"] == "done", job
    row = job["summary"]["participants"][pid]
    assert (row["current"], row["proposed"], row["difference"]) == ("10400.00", "10000.00", "-400.00")
    [changed] = row["files"]
    assert (changed["submission_id"], changed["current"]["verdict"], changed["proposed"]["reasons"]) == (
        sixty_hours["id"], "credited", ["late"])
    assert (job["summary"]["from"], job["summary"]["to"]) == ("2025Q4", "2025Q4")
    for name, position in positions.items():  # nothing was recorded
        assert stack.runtimes[name].app.recorder.max_notification_id() == position


async def test_a_malformed_document_is_a_422_naming_the_field_and_an_unknown_version_a_404(
        stack: Stack, console_api: httpx.AsyncClient) -> None:
    """"a rules document that is malformed ... or a missing parameter gets a 422 naming the field"."""
    await stack.start("submissions", "milestones")
    broken = amended("2025.9", "2025-01-01", {})
    del broken["program"]["cap"]
    answer = await console_api.post(WHAT_IF, headers=STAFF, json={"rules": broken})
    assert answer.status_code == 422 and answer.headers["content-type"].startswith("application/problem+json")
    assert "program.cap" in answer.json()["detail"]

    neither = await console_api.post(WHAT_IF, headers=STAFF, json={"from": "2025Q4"})
    assert neither.status_code == 422 and "published" in neither.json()["errors"][0]["msg"]
    bad_quarter = await console_api.post(WHAT_IF, headers=STAFF, json={"published": "2024.1", "to": "2025Q5"})
    assert bad_quarter.status_code == 422 and bad_quarter.json()["errors"][0]["loc"] == ["body", "to"]
    unknown = await console_api.post(WHAT_IF, headers=STAFF, json={"published": "1999.1"})
    assert unknown.status_code == 404 and "1999.1" in unknown.json()["detail"]
    assert (await console_api.get(f"{WHAT_IF}/no-such-job", headers=STAFF)).status_code == 404


@pytest.mark.parametrize("token", ["auditor-token", "ops-token", "hie-token"])
async def test_only_program_staff_may_run_or_read_a_what_if(stack: Stack, console_api: httpx.AsyncClient,
                                                            token: str) -> None:
    """"`POST /program-rules/what-if` for staff": auditors, operators and senders get 403, no token 401."""
    await stack.start("submissions", "milestones")
    body = {"rules": amended("2025.9", "2025-01-01", {})}
    started = await console_api.post(WHAT_IF, headers=STAFF, json=body)
    assert started.status_code == 202, started.text
    other = {"Authorization": f"Bearer {token}"}
    assert (await console_api.post(WHAT_IF, headers=other, json=body)).status_code == 403
    assert (await console_api.get(started.headers["location"], headers=other)).status_code == 403
    assert (await console_api.post(WHAT_IF, json=body)).status_code == 401
    assert (await finished(console_api, started.headers["location"]))["status"] == "done"
