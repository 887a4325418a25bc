"""The plan's calendar (DOMAIN.md A4): America/Los_Angeles days, quarter names, and the quarter calendar that turns
days into quarters. One place for every service that dates or quarters something.

"Data-capture quarters: Jan–Mar, Apr–Jun, Jul–Sep, Oct–Dec (America/Los_Angeles)": when each quarter starts is
program data (`program.quarter_calendar` in the rules document, see `dsi_shared.rulebook`), so this module holds no
month of its own: a `Quarter` is only a name, and a `QuarterCalendar` read from the rules says which days it holds.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from dsi_shared.errors import Unprocessable

PLAN_ZONE = ZoneInfo("America/Los_Angeles")
_MONTH_DAY = re.compile(r"^([0-9]{2})-([0-9]{2})$")
_QUARTER = re.compile(r"^([0-9]{4})Q([1-4])$")  # [0-9], not \d: fullwidth and other Unicode digits are not years
QUARTER_PATTERN = r"^[0-9]{4}Q[1-4]$"  # for API parameters; `Quarter.parse` also bounds the year
EARLIEST_YEAR, LATEST_YEAR = 2000, 2100  # the plan's dates and instants; anything outside is an input error


class BadQuarter(Unprocessable, ValueError):
    """Not a quarter the plan has (HTTP 422; a consumed message naming one is dead-lettered)."""


def in_plan_years(moment: date) -> bool:
    """A date or instant (its own local date) the program can mean: years 2000–2100. Far-off values (year 1 or
    9999 with a -14:00 offset) would overflow on conversion to UTC or the plan's zone."""
    return EARLIEST_YEAR <= moment.year <= LATEST_YEAR


def plan_day(moment: datetime) -> date:
    """The calendar day in America/Los_Angeles: deadlines and capture dates are plan-local dates."""
    return moment.astimezone(PLAN_ZONE).date()


@dataclass(frozen=True, order=True)
class Quarter:
    """A data-capture quarter's name, written `2025Q4`: the `number`-th quarter starting in `year`. Which days it
    holds is the program's `QuarterCalendar`'s to say."""

    year: int
    number: int

    @classmethod
    def parse(cls, text: str) -> Quarter:
        match = _QUARTER.match(text)
        if match is None:
            raise BadQuarter("a quarter is written YYYYQn, n from 1 to 4")
        if not EARLIEST_YEAR <= int(match[1]) <= LATEST_YEAR:
            raise BadQuarter(f"a quarter's year is from {EARLIEST_YEAR} to {LATEST_YEAR}")
        return cls(int(match[1]), int(match[2]))

    def __str__(self) -> str:
        return f"{self.year}Q{self.number}"

    def next(self) -> Quarter:
        return Quarter(self.year + self.number // 4, self.number % 4 + 1)

    def previous(self) -> Quarter:
        return Quarter(self.year - (self.number == 1), (self.number - 2) % 4 + 1)

    def index_from(self, first: Quarter) -> int:
        """1 for the participant's first data-sharing quarter, 2 for the second, …; 0 or less before it."""
        return (self.year - first.year) * 4 + (self.number - first.number) + 1


class InvalidCalendar(ValueError):
    """Quarter starts that are not four distinct, ascending month-days of every year."""


@dataclass(frozen=True)
class QuarterCalendar:
    """When the data-capture quarters start (DOMAIN.md A4: "Data-capture quarters: Jan–Mar, Apr–Jun, Jul–Sep,
    Oct–Dec (America/Los_Angeles)"), as the rules document publishes it: quarter `YYYYQn` runs from the n-th start
    in year YYYY to the day before the next start; the 4th runs into the next year, up to the day before the 1st.
    So with starts 02-01, 05-01, 08-01, 11-01, January 2025 belongs to 2024Q4. Days are plan-local (`plan_day`)."""

    starts: tuple[tuple[int, int], ...]  # (month, day) of each quarter's first day, ascending

    def __post_init__(self) -> None:
        if len(self.starts) != 4:
            raise InvalidCalendar("a calendar has exactly four quarter starts")
        for month, day in self.starts:
            try:
                date(2001, month, day)  # a year without 29 February: a start must exist in every year
            except ValueError:
                raise InvalidCalendar("each quarter start is a month-day of every year (MM-DD, not 02-29)") from None
        if any(a >= b for a, b in zip(self.starts, self.starts[1:], strict=False)):
            raise InvalidCalendar("quarter starts are distinct and ascending within the year")

    @classmethod
    def parse(cls, month_days: Sequence[str]) -> QuarterCalendar:
        """From the document's form, e.g. ["01-01", "04-01", "07-01", "10-01"]."""
        starts = []
        for text in month_days:
            match = _MONTH_DAY.match(text)
            if match is None:
                raise InvalidCalendar("a quarter start is written MM-DD")
            starts.append((int(match[1]), int(match[2])))
        return cls(tuple(starts))

    def month_days(self) -> list[str]:
        return [f"{month:02d}-{day:02d}" for month, day in self.starts]

    def quarter_of(self, day: date) -> Quarter:
        """The quarter holding a plan-local day."""
        for number in range(4, 0, -1):
            if day >= date(day.year, *self.starts[number - 1]):
                return Quarter(day.year, number)
        return Quarter(day.year - 1, 4)  # before this year's first start: last year's 4th quarter

    def quarter_at(self, moment: datetime) -> Quarter:
        """The quarter of an instant, on its America/Los_Angeles day."""
        return self.quarter_of(plan_day(moment))

    def first_day(self, quarter: Quarter) -> date:
        return date(quarter.year, *self.starts[quarter.number - 1])

    def last_day(self, quarter: Quarter) -> date:
        return self.first_day(quarter.next()) - timedelta(days=1)
