"""The console's charts without a browser (issue 15 §2, "files credited vs rejected by reason per week, coverage per
PCP against its threshold"): their figures from the console's read model, and their SVG (title, description, no
script or inline style the CSP would refuse); and the trace viewer's link for a dead letter."""

from __future__ import annotations

from decimal import Decimal
from uuid import UUID, uuid4

import sqlalchemy as sa
from console import figures
from console.activity import FileVerdict, judged
from console.chart import Coverage, coverage_chart, files_chart
from console.overview import ParticipantOverview
from console.readmodel import FILES, FILES_METADATA, METADATA, PARTICIPANTS, file_rows, files_by_week, rows
from console.reads import trace_link
from sqlalchemy.pool import StaticPool


def test_files_are_counted_per_iso_week_of_receipt_credited_or_rejected_by_their_first_reason() -> None:
    """As the console's read model counts them: each file's latest verdict (a re-published older one changes
    nothing) → its row, then one SQL query; files of participants not registered (yet) are not counted."""
    pid, stranger = uuid4(), uuid4()
    engine = sa.create_engine("sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False})
    METADATA.create_all(engine)
    FILES_METADATA.create_all(engine)

    def file(received_at: str, verdict: str, *reasons: str, owner: UUID = pid, version: int = 3) -> FileVerdict:
        made = FileVerdict(submission_id=uuid4())
        return judged(made, version, str(owner), received_at, verdict, list(reasons))

    files = [file("2025-02-01T10:00:00-08:00", "credited"),  # a Saturday: week 5
             file("2025-02-02T23:30:00-08:00", "rejected", "late", "not_a_member"),  # Sunday: still week 5
             file("2025-02-03T00:10:00-08:00", "rejected", "incomplete"),  # Monday: week 6
             file("2025-02-04T09:00:00-08:00", "rejected", "late"),
             file("2025-02-04T09:00:00-08:00", "recorded", "no_qualifying_event"),  # neither: not counted
             file("2025-02-04T09:00:00-08:00", "credited", owner=stranger)]  # not registered: not counted
    judged(files[0], 2, str(pid), "2025-02-01T10:00:00-08:00", "rejected", ["not_enrolled"])  # older: ignored
    judged(files[3], 4, str(pid), "2025-02-04T09:00:00-08:00", "rejected", ["late", "cancelled_by"])  # later: kept
    registered = ParticipantOverview(participant_id=pid)
    registered.note_registration(legal_name="Sunrise Care", npi=None, provider_type="snf", counties=[])
    with engine.begin() as conn:
        conn.execute(sa.insert(PARTICIPANTS).values(id=str(pid), seq=1, **rows(None, registered)[PARTICIPANTS.name][0]))  # type: ignore[arg-type]
        for each in files:
            [row] = file_rows(None, each)[FILES.name]  # type: ignore[arg-type]
            conn.execute(sa.insert(FILES).values(id=str(each.id), **row))
    with engine.connect() as conn:
        assert files_by_week(conn) == {"2025-W05": {"credited": 1, "rejected: late": 1},
                                       "2025-W06": {"rejected: incomplete": 1, "rejected: late": 1}}
    assert figures.week_of("2024-12-30T08:00:00-08:00") == "2025-W01"  # ISO weeks cross the calendar year
    assert figures.file_kind({"verdict": "rejected", "reasons": ["incomplete:PID-3 missing"]}) == "rejected: incomplete"


def test_each_pcps_coverage_is_its_latest_evaluation_of_the_quarter_against_its_threshold() -> None:
    pcp, other, snf = "11111111-0000-4000-8000-000000000001", "22222222-0000-4000-8000-000000000002", "3" * 36
    evaluations = [
        {"participant_id": pcp, "figures": {"coverage_percent": "60.00", "threshold_percent": 75,
                                            "attributed_members": 10, "members_with_record": 6}},
        {"participant_id": snf, "figures": {"credited_files": 3}},  # per-file earning: no coverage
        {"participant_id": other, "figures": {"coverage_percent": "95.50", "threshold_percent": 90,
                                              "attributed_members": 200, "members_with_record": 191}},
        {"participant_id": pcp, "figures": {"coverage_percent": "80.00", "threshold_percent": 75,  # an adjustment
                                            "attributed_members": 10, "members_with_record": 8}}]
    rows = figures.coverage_rows(evaluations, {pcp: "Valley Primary Care", other: "Alder Clinic"})
    assert rows == [Coverage(other, "Alder Clinic", Decimal("95.50"), 90, 200, 191),
                    Coverage(pcp, "Valley Primary Care", Decimal("80.00"), 75, 10, 8)]
    assert [r.met for r in rows] == [True, True]
    assert not Coverage(pcp, "x", Decimal("74.99"), 75, 0, 0).met and not Coverage(pcp, "x", Decimal(100), None, 0, 0).met


def test_the_files_chart_stacks_credited_first_with_a_title_and_description_and_nothing_the_csp_refuses() -> None:
    svg = str(files_chart({"2025-W05": {"rejected: late": 2, "credited": 3}, "2025-W06": {"credited": 1}}))
    assert svg.startswith("<svg") and "Files credited and rejected (by reason) per week; the largest is 5" in svg
    assert 'aria-labelledby="files-title files-desc"' in svg and "<desc" in svg
    assert svg.count("<rect") == 3 + 2  # three bar segments, two legend swatches
    assert svg.index(">credited<") < svg.index(">rejected: late<")  # the legend lists credited first
    assert "<script" not in svg and "style=" not in svg
    assert str(files_chart({})) == "<p>No files judged yet.</p>"


def test_the_coverage_chart_draws_a_bar_and_a_threshold_tick_per_pcp_and_says_how_many_met() -> None:
    rows = [Coverage("a", "Alder Clinic", Decimal("95.5"), 90, 200, 191),
            Coverage("b", "Birch <Group>", Decimal("60"), 75, 10, 6)]
    svg = str(coverage_chart(rows, "2025Q1"))
    assert "Coverage per PCP against its threshold, 2025Q1: 1 of 2 met" in svg
    assert svg.count("<rect") == 2 and svg.count("threshold 90%") == 1 and svg.count("threshold 75%") == 1
    assert "Birch &lt;Group&gt;" in svg and "<Group>" not in svg  # names are escaped
    assert "No PCP evaluation for 2025Q2." in str(coverage_chart([], "2025Q2"))


def test_a_trace_id_links_to_the_trace_viewer_only_when_dsi_trace_url_names_where() -> None:
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    assert trace_link("http://jaeger:16686/trace/{trace_id}", trace) == f"http://jaeger:16686/trace/{trace}"
    assert trace_link(None, trace) is None and trace_link("", trace) is None
    assert trace_link("http://jaeger:16686/search", trace) is None  # no place for the id: plain id shown
    assert trace_link("http://jaeger:16686/trace/{trace_id}", None) is None
