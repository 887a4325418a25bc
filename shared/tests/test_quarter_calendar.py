"""The quarter calendar as rules data (issue 11 §1: "the program cap ($40,000) and the quarter calendar" are data in
the published rules). DOMAIN.md A4: "Data-capture quarters: Jan–Mar, Apr–Jun, Jul–Sep, Oct–Dec
(America/Los_Angeles)" — the shipped calendar; any other four starts date quarters the same way."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from dsi_shared.plantime import InvalidCalendar, Quarter, QuarterCalendar
from dsi_shared.rulebook import (
    InvalidRulesDocument,
    NoRulesYet,
    RuleBook,
    RulesCopy,
    RulesDocument,
    parse_document,
)
from hypothesis import given
from hypothesis import strategies as st

from tests.rulesdoc import amended, packaged

SHIPPED = RuleBook.of([packaged()]).calendar
FEBRUARY = QuarterCalendar.parse(["02-01", "05-01", "08-01", "11-01"])
STARTS = "program.quarter_calendar.quarter_starts"


def test_the_shipped_calendar_is_jan_apr_jul_oct() -> None:
    """"Data-capture quarters: Jan–Mar, Apr–Jun, Jul–Sep, Oct–Dec (America/Los_Angeles)" """
    assert SHIPPED.month_days() == ["01-01", "04-01", "07-01", "10-01"]
    assert [(SHIPPED.first_day(Quarter(2025, n)), SHIPPED.last_day(Quarter(2025, n))) for n in (1, 2, 3, 4)] == [
        (date(2025, 1, 1), date(2025, 3, 31)), (date(2025, 4, 1), date(2025, 6, 30)),
        (date(2025, 7, 1), date(2025, 9, 30)), (date(2025, 10, 1), date(2025, 12, 31))]


def test_with_quarters_starting_february_1_january_belongs_to_the_previous_years_q4() -> None:
    """The 4th quarter runs into the next year, up to the day before the 1st start."""
    assert FEBRUARY.quarter_of(date(2025, 1, 31)) == Quarter(2024, 4)
    assert FEBRUARY.quarter_of(date(2025, 2, 1)) == Quarter(2025, 1)
    assert FEBRUARY.quarter_of(date(2025, 1, 1)) == Quarter(2024, 4)
    assert (FEBRUARY.first_day(Quarter(2024, 4)), FEBRUARY.last_day(Quarter(2024, 4))) == (date(2024, 11, 1),
                                                                                           date(2025, 1, 31))
    assert FEBRUARY.last_day(Quarter(2025, 3)) == date(2025, 10, 31)


def test_a_quarter_holding_the_end_of_february_ends_on_the_leap_day_in_a_leap_year() -> None:
    march = QuarterCalendar.parse(["03-01", "06-01", "09-01", "12-01"])
    assert march.last_day(Quarter(2023, 4)) == date(2024, 2, 29)
    assert march.last_day(Quarter(2022, 4)) == date(2023, 2, 28)
    assert march.quarter_of(date(2024, 2, 29)) == Quarter(2023, 4)
    assert SHIPPED.quarter_of(date(2024, 2, 29)) == Quarter(2024, 1)


def test_an_instant_is_quartered_on_its_los_angeles_day_across_dst_changes() -> None:
    """A start on a DST-change day: the quarter begins at local midnight, whatever the offset."""
    dst = QuarterCalendar.parse(["03-10", "06-01", "09-01", "11-03"])  # 2024: spring forward 03-10, fall back 11-03
    assert dst.quarter_at(datetime(2024, 3, 10, 7, 59, tzinfo=UTC)) == Quarter(2023, 4)  # 23:59 PST on March 9
    assert dst.quarter_at(datetime(2024, 3, 10, 8, 0, tzinfo=UTC)) == Quarter(2024, 1)  # 00:00 PST on March 10
    assert dst.quarter_at(datetime(2024, 11, 3, 6, 59, tzinfo=UTC)) == Quarter(2024, 3)  # 23:59 PDT on November 2
    assert dst.quarter_at(datetime(2024, 11, 3, 7, 0, tzinfo=UTC)) == Quarter(2024, 4)  # 00:00 PDT on November 3
    assert dst.quarter_at(datetime(2024, 11, 3, 9, 30, tzinfo=UTC)) == Quarter(2024, 4)  # the second 01:30 (PST)
    assert SHIPPED.quarter_at(datetime(2025, 1, 1, 7, 59, tzinfo=UTC)) == Quarter(2024, 4)  # 23:59 PST, Dec 31


@given(st.dates(date(2000, 2, 1), date(2100, 12, 31)),
       st.sampled_from([SHIPPED, FEBRUARY, QuarterCalendar.parse(["01-15", "03-01", "07-04", "12-31"])]))
def test_every_day_is_in_exactly_one_quarter_and_quarters_follow_each_other(day: date, calendar: QuarterCalendar) -> None:
    quarter = calendar.quarter_of(day)
    assert calendar.first_day(quarter) <= day <= calendar.last_day(quarter)
    assert calendar.last_day(quarter) + timedelta(days=1) == calendar.first_day(quarter.next())
    assert calendar.quarter_of(calendar.first_day(quarter.next())) == quarter.next()


@pytest.mark.parametrize("starts", [
    ["01-01", "04-01", "07-01"],  # not four
    ["01-01", "04-01", "07-01", "10-01", "12-01"],
    ["01-01", "02-29", "07-01", "10-01"],  # not in every year
    ["01-01", "04-31", "07-01", "10-01"],
    ["00-01", "04-01", "07-01", "13-01"],
    ["01-01", "07-01", "04-01", "10-01"],  # not ascending
    ["01-01", "04-01", "04-01", "10-01"],  # not distinct
    ["1-01", "04-01", "07-01", "10-01"],  # not MM-DD
])
def test_a_calendar_that_is_not_four_ascending_month_days_is_refused_naming_the_field(starts: list[str]) -> None:
    with pytest.raises(InvalidCalendar):
        QuarterCalendar.parse(starts)
    with pytest.raises(InvalidRulesDocument, match=r"program\.quarter_calendar\.quarter_starts"):
        parse_document(amended("x1", "2024-01-01", {STARTS: starts}))


def test_a_new_version_must_name_its_calendar_but_a_stored_one_without_it_reads_as_jan_apr_jul_oct() -> None:
    """Schema history: documents published before the calendar was rules data replay unchanged."""
    older = packaged()
    del older["program"]["quarter_calendar"]
    with pytest.raises(InvalidRulesDocument, match=r"program\.quarter_calendar: missing"):
        parse_document(older)
    assert RuleBook.of([older]).calendar == SHIPPED
    assert RuleBook.of_current_schema([older]).calendar == SHIPPED
    copy = RulesCopy()
    assert copy.note(older) is True
    assert copy.book.calendar == SHIPPED and copy.documents[0]["program"]["quarter_calendar"] is not None


def test_the_calendar_is_the_same_in_every_version_once_one_is_published() -> None:
    first = RulesDocument.model_validate(amended("2024.1", "2024-01-01", {STARTS: FEBRUARY.month_days()}))
    assert RuleBook(()).refuse_calendar_change(first) is None  # nothing published: any calendar may come first
    book = RuleBook((first,))
    assert book.calendar == FEBRUARY
    book.refuse_calendar_change(RulesDocument.model_validate(amended("2025.1", "2025-01-01",
                                                                     {STARTS: FEBRUARY.month_days()})))
    with pytest.raises(InvalidRulesDocument, match=r"program\.quarter_calendar"):
        book.refuse_calendar_change(RulesDocument.model_validate(amended("2025.1", "2025-01-01", {})))


def test_before_any_rules_arrive_there_is_no_calendar_to_date_by() -> None:
    """Never a default calendar: a service without rules waits for them (a consumer retries, an API says 503)."""
    with pytest.raises(NoRulesYet):
        RuleBook(()).calendar  # noqa: B018
