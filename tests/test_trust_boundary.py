"""The trust boundary (issue 12): nothing outside can plant state. On real NATS + PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

import pytest
from dsi_shared.events import encode
from eventsourcing.persistence import Tracking

from tests.harness import STAFF, Stack, eventually, quiet, signature
from tests.test_audit_replay import replay

pytestmark = pytest.mark.integration


async def test_a_message_claiming_to_be_a_milestones_event_cannot_make_the_real_one_look_processed(
        stack: Stack, tmp_path: Path) -> None:
    """"a message on dsi.in.submission-received can claim to be a milestones event (source:/dsi/milestones,
    id:milestones:N); submissions then records that position as processed and silently skips the real Milestone 1
    event ... Tracking by upstream position must only be derived from the stream the message actually came from".
    """
    await stack.start("enrollment", "milestones", "submissions")
    pid = await stack.register(sending_facilities=["PLANTED_SNF"])
    for agreement in ("LOA", "DSA", "HIE"):
        await stack.clients["enrollment"].post(f"/participants/{pid}/agreements", json=signature(agreement), headers=STAFF)
    await quiet(stack)
    js = (await stack.nc()).jetstream()
    milestones_next = (stack.runtimes["milestones"].app.recorder.max_notification_id() or 0) + 1
    for position in range(1, milestones_next + 40):  # every position the real Milestone 1 event could take
        body = encode("milestones", position, "dsi.milestones.milestone-achieved",
                      {"hie_submission_id": f"planted-{position}", "received_at": "2025-11-01T10:00:00-07:00",
                       "content_type": "x-application/hl7-v2+er7", "payload": "not hl7", "sending_facility": "PLANTED_SNF"},
                      time=datetime.now(UTC), subject=pid)
        await js.publish(stack.naming.subject("dsi.in.submission-received"), body)
    await quiet(stack)
    submissions = stack.runtimes["submissions"].app
    assert not any(submissions.has_processed(Tracking("milestones", n)) for n in range(1, milestones_next + 40))

    await stack.accept_agreements(pid)

    async def milestone1_noted() -> bool:
        facts = submissions.participant_facts(UUID(pid))  # type: ignore[attr-defined]
        return bool(facts and facts.milestone1_at)

    await eventually(milestone1_noted, timeout=30)


async def test_audit_replay_flags_a_tracking_record_with_no_upstream_event(stack: Stack, tmp_path: Path) -> None:
    """"dsi audit replay must flag any tracking record that has no matching upstream event." """
    await stack.start("enrollment", "milestones", "submissions", "payments", "qip-share")
    await stack.register()
    await quiet(stack)
    for name in list(stack.runtimes):
        await stack.stop(name)
    from submissions.application import Submissions

    store = Submissions(stack.store_url_for("submissions"))
    store.save_tracked([], Tracking("milestones", 987654))  # as a planted message once could have
    store.close()
    result = replay(stack, tmp_path, "--json")
    assert result.returncode == 1, result.stdout + result.stderr
    problems = json.loads(result.stdout)["problems"]
    assert problems == ["submissions: tracking record (milestones, 987654) has no matching event published by "
                        "milestones: planted, or lost upstream"]
