"""An 834 import applies its chunks in file order, the next chunk parsed while the previous one is saved, each
chunk's members loaded in one query (issue 14 §4): what is recorded is exactly what one chunk at a time recorded —
the same events for the same file, a member's later lines applied after its earlier ones in another chunk."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import enrollment.application
import pytest
from enrollment.application import Enrollment
from enrollment.rosters import eligibility_834

from tests.x12_834 import Enrollee, build_834, cin

# One member's lines in several chunks: opened, changed, closed, a stranger between; a termination for a member
# opened two chunks earlier; a termination with nothing to terminate.
LINES = [Enrollee(cin(0)), Enrollee(cin(1)), Enrollee(cin(0), aid_code="3D"), Enrollee(cin(2)),
         Enrollee(cin(0), aid_code="3D", end=date(2024, 6, 30)), Enrollee(cin(3), family="ROE"),
         Enrollee(cin(1), maintenance="024", end=date(2024, 8, 31)), Enrollee(cin(4), maintenance="024",
                                                                               end=date(2024, 8, 31))]


def recorded(app: Enrollment) -> list[tuple[Any, ...]]:
    """Every stored event but its timestamp, by aggregate and version (chunks interleave aggregates in the log):
    aggregate, version, kind, attributes."""
    events = []
    for notification in app.all_notifications():
        state = app.mapper.transcoder.decode(notification.state)
        state.pop("timestamp", None)
        state.pop("_trace_context", None)  # each save's own span, when telemetry is on
        state.pop("members_changed", None)  # a member changed in two chunks counts in each: not an event's fact
        events.append((notification.originator_id, notification.originator_version, notification.topic, state))
    return sorted(events, key=lambda e: (str(e[0]), e[1]))


def imported(tmp_path: Path, name: str) -> tuple[dict[str, Any], list[tuple[Any, ...]]]:
    app = Enrollment(f"sqlite:///{tmp_path / name}")
    text = build_834(LINES)
    report, _ = app.import_roster("eligibility", "834", text.encode(), eligibility_834(text))
    events = recorded(app)
    app.close()
    return {k: v for k, v in report.items() if k != "members_changed"}, events


def test_a_file_in_many_chunks_records_the_same_events_as_in_one(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    whole = imported(tmp_path, "one-chunk.db")
    monkeypatch.setattr(enrollment.application, "CHUNK", 2)
    chunked = imported(tmp_path, "four-chunks.db")
    assert chunked == whole
    report = whole[0]
    assert (report["added"], report["changed"], report["terminated"], report["not_applied"]) == (4, 2, 1, 1)
