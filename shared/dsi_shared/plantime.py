"""The plan's calendar (DOMAIN.md A4): America/Los_Angeles days and data-capture quarters (Jan–Mar, Apr–Jun,
Jul–Sep, Oct–Dec). One place for every service that dates or quarters something."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from dsi_shared.errors import Unprocessable

PLAN_ZONE = ZoneInfo("America/Los_Angeles")
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
    """A data-capture quarter, written `2025Q4`."""

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

    @classmethod
    def of(cls, day: date) -> Quarter:
        return cls(day.year, (day.month - 1) // 3 + 1)

    def __str__(self) -> str:
        return f"{self.year}Q{self.number}"

    @property
    def first_day(self) -> date:
        return date(self.year, 3 * self.number - 2, 1)

    @property
    def last_day(self) -> date:
        return self.next().first_day - timedelta(days=1)

    def next(self) -> Quarter:
        return Quarter(self.year + self.number // 4, self.number % 4 + 1)

    def previous(self) -> Quarter:
        return Quarter(self.year - (self.number == 1), (self.number - 2) % 4 + 1)

    def index_from(self, first: Quarter) -> int:
        """1 for the participant's first data-sharing quarter, 2 for the second, …; 0 or less before it."""
        return (self.year - first.year) * 4 + (self.number - first.number) + 1


def quarter_of(moment: datetime) -> str:
    """The data-capture quarter of an instant, in America/Los_Angeles: e.g. `2024Q3`."""
    return str(Quarter.of(plan_day(moment)))
