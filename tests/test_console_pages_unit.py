"""The console's imports, publishing and QIP pages without a browser: an import's per-line report, the form's
query fields, what a 409 says was lowered, and each QIP requirement's on-time status per entity."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from console.imports import KINDS, Line, query, report_lines, totals
from console.publish import lowered_of
from console.qip import download, on_time_status
from console.upstream import Upstream
from console.web import Refused


def test_a_roster_report_lists_rejected_and_not_applied_lines_in_file_order_with_their_reasons() -> None:
    report = {"rows": 5, "accepted": 3, "not_applied": 1, "rejected": 1,
              "errors": [{"line": 4, "reason": "member_id: not a Medi-Cal CIN (8 digits then a letter)"}],
              "notes": [{"line": 6, "outcome": "not_applied", "note": "INS03 024: no span"},
                        {"line": 2, "outcome": "added", "note": "aid_code: unknown, kept"}]}
    assert report_lines("members", report) == [
        Line(2, "accepted", "aid_code: unknown, kept"),
        Line(4, "rejected", "member_id: not a Medi-Cal CIN (8 digits then a letter)"),
        Line(6, "not applied", "INS03 024: no span")]
    assert totals("members", report) == {"rows": 5, "accepted": 3, "not applied": 1, "rejected": 1}


def test_a_signatory_report_says_how_each_line_was_matched_and_which_were_not() -> None:
    pid = "3f1c2d9e-0000-4000-8000-000000000001"
    report = {"rows": 4, "matched": 1, "weak_matches": 1, "unmatched": 1, "rejected": 1,
              "errors": [{"line": 5, "reason": "npi: not a valid NPI"}],
              "results": [{"line": 2, "matched_by": "npi", "participant_id": pid, "outcome": "recorded"},
                          {"line": 3, "matched_by": "name", "participant_id": pid, "outcome": "recorded_for_review"},
                          {"line": 4, "matched_by": None, "participant_id": None, "outcome": "unmatched"}]}
    assert [(line.line, line.outcome) for line in report_lines("dsa-signatories", report)] == [
        (2, "accepted"), (3, "accepted"), (4, "not applied"), (5, "rejected")]
    assert report_lines("dsa-signatories", report)[1].reason == "matched by name only: DSA signed, left for staff review"
    assert totals("dsa-signatories", report) == {"rows": 4, "accepted": 2, "not applied": 1, "rejected": 1}


def test_the_import_forms_choices_become_enrollments_query_and_an_unknown_one_is_refused() -> None:
    assert query(KINDS["attributions"], {"kind": "qip", "format": "", "csrf": "x"}) == {"kind": "qip"}
    assert query(KINDS["dsa-signatories"], {"list_date": "2025-11-01"}) == {"list_date": "2025-11-01"}
    with pytest.raises(Refused) as refused:
        query(KINDS["members"], {"format": "xml"})
    assert refused.value.status == 422 and "format" in refused.value.message


def test_what_a_refused_version_lowers_is_read_from_enrollments_409_and_other_refusals_are_not_a_lowering() -> None:
    """DOMAIN.md A4: "A version that would lower what a participant earned under terms it already signed needs
    staff confirmation with a reason"."""
    detail = ("LowersSignedTerms: this version lowers terms participants signed under (the Letter of Agreement "
              "governs): program.cap lowered; provider_types.skilled_nursing.earning_rule.timeliness_hours shortened. "
              "Preview it with what-if, then publish with confirm_lowering and a reason")
    assert lowered_of(409, detail) == ["program.cap lowered",
                                       "provider_types.skilled_nursing.earning_rule.timeliness_hours shortened"]
    assert lowered_of(409, "LowersSignedTerms: reworded") == ["LowersSignedTerms: reworded"]  # shown whole, not lost
    assert lowered_of(409, "ConcurrentChange: try again") is None
    assert lowered_of(422, "InvalidRules: version: 2024.1 already exists with other content") is None


def test_a_requirements_status_per_entity_is_on_time_late_not_delivered_yet_or_overdue() -> None:
    """Issue 15 §2: "requirements with on-time status per entity"; DOMAIN.md B: "a requirement may have a due date,
    and the plan must show what it delivered and when"."""
    entities = [{"id": "e1", "name": "Valley Medical Center", "participating": True},
                {"id": "e2", "name": "Hill District Hospital", "participating": True},
                {"id": "e3", "name": "Bay Clinic", "participating": False},
                {"id": "e4", "name": "Coast Hospital", "participating": True}]
    requirement = {"due_date": "2026-03-31", "entities": {
        "e1": {"entity": "Valley Medical Center", "first_delivery": "d1", "delivered_at": "2026-03-30T10:00:00+00:00",
               "on_time": True, "deliveries": 2},
        "e4": {"entity": "Coast Hospital", "first_delivery": "d4", "delivered_at": "2026-04-02T10:00:00+00:00",
               "on_time": False, "deliveries": 1}}}
    before = on_time_status(requirement, entities, date(2026, 3, 31))
    assert [(r["entity"], r["status"], r["deliveries"]) for r in before] == [
        ("Coast Hospital", "late", 1), ("Hill District Hospital", "not delivered yet", 0),
        ("Valley Medical Center", "on time", 2)]  # an entity not participating and not delivered to is not listed
    after = on_time_status(requirement, entities, date(2026, 4, 1))
    assert [r["status"] for r in after] == ["late", "overdue", "on time"]


async def test_a_delivery_file_is_passed_on_chunk_by_chunk_and_never_held_whole() -> None:
    """Issue 15 §2, QIP "file downloads": proxied through the console under the user's token, streamed."""
    produced: list[int] = []
    seen: list[httpx.Request] = []

    class Chunks(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            for i in range(3):
                produced.append(i)
                yield b'{"resourceType":"Patient"}\n'

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, stream=Chunks(), headers={
            "content-type": "application/fhir+ndjson", "content-length": "81", "etag": '"abc"'})

    up = Upstream({"qip-share": httpx.AsyncClient(transport=httpx.MockTransport(answer), base_url="http://qip")})
    delivery_id = "3f1c2d9e-0000-4000-8000-000000000001"
    console: Any = SimpleNamespace(up=up)
    response = await download(console, "staff-token", delivery_id, "files/Patient.ndjson", "Patient.ndjson")
    chunks = aiter(response.body_iterator)
    assert await anext(chunks) == b'{"resourceType":"Patient"}\n' and produced == [0]  # one chunk read, one passed on
    assert [c async for c in chunks] == [b'{"resourceType":"Patient"}\n'] * 2 and produced == [0, 1, 2]
    assert seen[0].url.path == f"/deliveries/{delivery_id}/files/Patient.ndjson"
    assert seen[0].headers["authorization"] == "Bearer staff-token"
    assert (response.headers["content-length"], response.headers["etag"]) == ("81", '"abc"')
    assert response.headers["content-disposition"] == 'attachment; filename="qip-delivery-3f1c2d9e-Patient.ndjson"'
