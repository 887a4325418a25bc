"""A file judged before its member's eligibility reaches submissions is judged again when it does (DOMAIN.md A4:
"Money never depends on the order in which two streams' messages arrive"): a roster imported after the file,
retroactive eligibility, a frozen CIN linked to its current CIN later. Every order of the three facts — the file
under the frozen CIN, the alias, the current CIN's eligibility span — ends with the file credited once."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
from submissions.application import Submissions
from submissions.domain import Submission
from submissions.handlers import SUBSCRIPTIONS

from tests.harness import deliver_event
from tests.hl7_corpus import combined
from tests.stores import snf_store

FROZEN, CURRENT, STRANGER = "90000041B", "90000042C", "90000043D"
RECEIVED = datetime(2025, 11, 1, 19, tzinfo=UTC)  # four hours after the corpus files' events


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Submissions]:
    yield from snf_store(tmp_path, monkeypatch)  # and no member: its eligibility arrives in the tests


def deliver(app: Submissions, subject: str, data: dict[str, Any], n: int) -> None:
    app.save(*deliver_event(app, SUBSCRIPTIONS, subject, {"aggregate_id": str(uuid4()), "aggregate_version": 1, **data},
                            event_id=f"enrollment:{n}", source="enrollment"))


def steps(app: Submissions, sent: list[UUID]) -> dict[str, Any]:
    def file() -> None:
        [submission] = app.receive_hl7(combined("A01", FROZEN).encode(), RECEIVED, "http").submissions
        sent.append(submission.id)

    return {"file": file,
            "alias": lambda: deliver(app, "dsi.enrollment.alias-added", {"cin": CURRENT, "frozen_cin": FROZEN}, 1),
            "span": lambda: deliver(app, "dsi.enrollment.eligibility-opened",
                                    {"cin": CURRENT, "start": "2025-01-01", "end": None}, 2)}


@pytest.mark.parametrize("order", list(itertools.permutations(("file", "alias", "span"))), ids="-then-".join)
def test_a_file_under_a_frozen_cin_is_credited_whichever_of_file_alias_and_eligibility_arrives_first(
        app: Submissions, order: tuple[str, str, str]) -> None:
    sent: list[UUID] = []
    for step in order:
        steps(app, sent)[step]()
    [submission_id] = sent
    submission = app.repository.get(submission_id)
    assert isinstance(submission, Submission)
    assert (submission.verdict, str(submission.amount), submission.credit and submission.credit["member_id"]) == (
        "credited", "400.00", CURRENT)
    assert not app.held_files(submission.participant_id).held  # nothing left waiting
    assert all(not app.member_record(cin).waiting for cin in (FROZEN, CURRENT))


def test_a_file_for_someone_who_never_becomes_a_member_keeps_waiting_and_is_never_credited(app: Submissions) -> None:
    [submission] = app.receive_hl7(combined("A01", STRANGER).encode(), RECEIVED, "http").submissions
    deliver(app, "dsi.enrollment.eligibility-opened", {"cin": CURRENT, "start": "2025-01-01", "end": None}, 1)
    assert (submission.verdict, submission.reasons) == ("rejected", ["not_a_member"])
    assert app.member_record(STRANGER).waiting == [submission.id]
    assert app.member_facts(STRANGER) is None  # a CIN only files wait on is not a member


def test_retroactive_eligibility_that_does_not_cover_the_event_leaves_the_file_not_a_member(app: Submissions) -> None:
    [submission] = app.receive_hl7(combined("A01", CURRENT).encode(), RECEIVED, "http").submissions
    deliver(app, "dsi.enrollment.eligibility-opened", {"cin": CURRENT, "start": "2025-12-01", "end": None}, 1)
    again = app.repository.get(submission.id)
    assert (again.verdict, again.reasons) == ("rejected", ["not_a_member"])
    assert app.member_record(CURRENT).waiting == [submission.id]  # a later span may still cover it
    deliver(app, "dsi.enrollment.eligibility-opened", {"cin": CURRENT, "start": "2025-10-01", "end": None}, 2)
    assert app.repository.get(submission.id).verdict == "credited"
