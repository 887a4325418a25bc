"""Each file's verdict on the bus (`dsi.submissions.file-judged`): stated once per change, from whichever save path,
with the reasons' codes only, and again when it changes (judged again, a credit reversed)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

from dsi_shared.relay import outgoing
from dsi_shared.store import ServiceApplication
from submissions.contract import CONTRACT
from submissions.domain import Submission


def stated(app: ServiceApplication) -> list[dict[str, Any]]:
    """Every `file-judged` payload the relay would publish from the store, in order."""
    payloads = []
    for notification in app.recorder.select_notifications(start=1, limit=1000):
        found = outgoing(CONTRACT, notification.id, app.mapper.to_domain_event(notification))
        if found is not None and found[0] == "dsi.submissions.file-judged":
            payloads.append(json.loads(found[1])["data"])
    return payloads


def test_a_file_states_its_verdict_once_per_change_with_reason_codes_only(tmp_path: Path) -> None:
    app = ServiceApplication(f"sqlite:///{tmp_path / 'submissions.db'}")  # a real store: loaded back as stored
    participant, received = uuid4(), datetime(2025, 11, 8, 16, 1, tzinfo=UTC)
    file = Submission("http", received, "x-application/hl7-v2+er7", "sha", None, participant, {"member_id": "91000001A"})
    file.reject(["late", "incomplete:PID-3 has no Medi-Cal CIN (identifier type MA)"])
    app.save(file)
    [first] = stated(app)
    assert first == {"aggregate_id": str(file.id), "aggregate_version": 3, "participant_id": str(participant),
                     "received_at": "2025-11-08T16:01:00+00:00", "verdict": "rejected", "reasons": ["late", "incomplete"]}

    again = app.repository.get(file.id)  # loaded from the store: judged again to the same codes, nothing to state
    again.rejudge(verdict="rejected", reasons=["late", "incomplete:PID-3"], rule_version="2025.1", cause="rules")
    app.save(again)
    assert len(stated(app)) == 1

    credited = app.repository.get(file.id)  # Milestone 1 noted: judged again to credited, then credited — one saving
    credited.rejudge(verdict="credited", reasons=[], rule_version="2025.1", cause="milestone 1 noted")
    credited.credit_event(participant_id=participant, member_id="91000001A", amount=400, rule_version="2025.1",
                          earning_rule="per_qualifying_file", event_key="A01|x", quarter="2025Q4", captured_on=None,
                          attributed=None)
    app.save(credited)
    cancelled = app.repository.get(file.id)
    cancelled.reverse(participant_id=participant, cancelled_by=uuid4(), amount=400, quarter="2025Q4")
    app.save(cancelled)
    assert [(s["verdict"], s["reasons"], s["aggregate_version"]) for s in stated(app)] == [
        ("rejected", ["late", "incomplete"], 3), ("credited", [], 7), ("credited", ["cancelled_by"], 9)]
    assert "91000001A" not in json.dumps(stated(app))  # the member's CIN never in a verdict
