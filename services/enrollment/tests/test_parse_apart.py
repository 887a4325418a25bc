"""A large roster is parsed in a process of its own while the import saves (issue 14 §4): the rows, their order and
a file-level error are exactly what parsing in the importing process gives."""

from __future__ import annotations

from pathlib import Path

import pytest
from enrollment.application import Enrollment
from enrollment.rosters import UnreadableFile, eligibility_834, parse_apart_when_large, parsed_apart

from tests.x12_834 import Enrollee, build_834, cin


def test_rows_parsed_apart_are_the_rows_parsed_here_in_the_same_order() -> None:
    text = build_834([Enrollee(cin(n), family=f"FAMILY{n}") for n in range(2500)]
                     + [Enrollee("not-a-cin"), Enrollee(cin(1), maintenance="999")])
    here = list(eligibility_834(text))
    apart = list(parsed_apart(eligibility_834, text))
    assert apart == here
    assert len(apart) == 2502


def test_an_unreadable_file_parsed_apart_raises_before_any_row() -> None:
    with pytest.raises(UnreadableFile, match="not a readable X12 file"):
        next(parsed_apart(eligibility_834, "hello"))


def test_stopping_early_ends_the_parsing_process() -> None:
    rows = parsed_apart(eligibility_834, build_834([Enrollee(cin(n)) for n in range(3000)]))
    assert next(rows).cin == cin(0)  # type: ignore[union-attr]
    rows.close()  # the child is killed and reaped: nothing left running
    assert list(rows) == []


def test_a_large_file_imports_to_the_same_report_apart_as_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = build_834([Enrollee(cin(n)) for n in range(300)] + [Enrollee(cin(7), maintenance="024", end=None)])
    reports = []
    for name, threshold in (("here.db", 10**9), ("apart.db", 1)):
        monkeypatch.setattr("enrollment.rosters.PARSE_APART_FROM_CHARS", threshold)
        app = Enrollment(f"sqlite:///{tmp_path / name}")
        report, again = app.import_roster("eligibility", "834", text.encode(), parse_apart_when_large(eligibility_834, text))
        reports.append(report)
        assert not again
        app.close()
    assert reports[0] == reports[1]
    assert (reports[1]["rows"], reports[1]["accepted"], reports[1]["rejected"]) == (301, 300, 1)
