"""What operators watch: readiness with consumer lag, and metrics (messages in/out, verdicts by reason, dead
letters, payments) readable at `GET /metrics` by the ops role, with subjects and reason codes, never ids."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from tests.harness import STAFF, Stack, quiet
from tests.hl7_corpus import combined
from tests.test_submissions import MEMBER, post_hl7, ready_snf

pytestmark = pytest.mark.integration
READY = {"nats": True, "store": True, "consumer_lag": True, "workers": True, "read_model_lag": True}
OPS = {"Authorization": "Bearer ops-token"}


def points(body: dict[str, Any], name: str, **attributes: str) -> float:
    return sum(p["value"] for p in body["metrics"]
               if p["name"] == name and all(p["attributes"].get(k) == v for k, v in attributes.items()))


async def test_readiness_reports_consumer_lag_and_metrics_count_what_flowed(stack: Stack) -> None:
    pid = await ready_snf(stack)
    await stack.start("payments")
    ready = await stack.clients["milestones"].get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == READY
    await post_hl7(stack, combined("A01", MEMBER), "2025-11-01T18:00:00-07:00")
    await post_hl7(stack, "MSH|^~\\&|nonsense\r", "2025-11-01T18:00:00-07:00")
    await quiet(stack)
    assert (await stack.clients["payments"].get("/metrics", headers=STAFF)).status_code == 403
    submissions = (await stack.clients["submissions"].get("/metrics", headers=OPS)).json()
    assert points(submissions, "dsi.submissions.verdicts", verdict="credited") >= 1
    assert points(submissions, "dsi.messages.out", service="submissions", subject="dsi.submissions.submission-credited") >= 1
    assert any(p["name"] == "dsi.submissions.verdicts" and p["attributes"]["verdict"] == "rejected"
               for p in submissions["metrics"])
    payments = (await stack.clients["payments"].get("/metrics", headers=OPS)).json()
    assert points(payments, "dsi.payments.paid", milestone="M1") >= 10000
    assert points(payments, "dsi.messages.in", service="payments", outcome="applied") >= 1
    assert any(p["name"] == "dsi.consumer.lag" and p["attributes"]["service"] == "payments" for p in payments["metrics"])
    everything = str(submissions) + str(payments)
    assert MEMBER not in everything and pid not in everything  # attributes are subjects and codes, never ids


async def test_a_service_whose_consumers_lag_beyond_the_bound_is_not_ready(
        stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSI_READY_MAX_LAG", "-1")  # any lag at all is too much
    await stack.start("enrollment")
    answer = await stack.clients["enrollment"].get("/readyz")
    assert answer.status_code == 503 and answer.json()["checks"]["consumer_lag"] is False


async def test_a_worker_that_dies_in_process_is_reported_not_exited(stack: Stack) -> None:
    """In a test or benchmark process a background worker's death must not end the whole process (a pytest timeout
    used to kill the CI run with exit code 70); `/readyz` says so. `dsi serve` still exits for its supervisor."""
    await stack.start("payments")
    runtime = stack.runtimes["payments"]

    async def dies() -> None:
        raise RuntimeError("boom")

    task = asyncio.create_task(dies(), name="payments-test-worker")
    with contextlib.suppress(RuntimeError):
        await task
    runtime._crashed(task)
    ready = await stack.clients["payments"].get("/readyz")
    assert ready.status_code == 503 and ready.json()["checks"]["workers"] is False
    assert runtime.exit_on_crash is False and runtime.crashed == ["payments-test-worker"]
