"""Quarters and the earning rules after Milestone 1 (DOMAIN.md A3, A4), as pure functions.

A provider type names its earning rule in the versioned program rules (enrollment's `earning_rule`); the rule's
figures live here, under that name. A type whose rule is not defined yet earns nothing, and says so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal

SNF_RULE = "snf_combined_adt_file"
PCP_RULE = "pcp_longitudinal_coverage"
SNF_FILE_AMOUNT = Decimal("400.00")
PCP_QUARTER_AMOUNT = Decimal("10000.00")
# The participant's 1st, 2nd and 3rd data-sharing quarters: Milestones 2, 3, 4 and their coverage thresholds (%).
PCP_MILESTONES = {1: ("M2", 75), 2: ("M3", 90), 3: ("M4", 95)}
ZERO = Decimal("0.00")
_QUARTER = re.compile(r"^(\d{4})Q([1-4])$")


class BadQuarter(ValueError):
    pass


@dataclass(frozen=True, order=True)
class Quarter:
    """A data-capture quarter (Jan–Mar, Apr–Jun, Jul–Sep, Oct–Dec), written `2025Q4`."""

    year: int
    number: int

    @classmethod
    def parse(cls, text: str) -> Quarter:
        match = _QUARTER.match(text)
        if match is None:
            raise BadQuarter("a quarter is written YYYYQn, n from 1 to 4")
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

    def index_from(self, first: Quarter) -> int:
        """1 for the participant's first data-sharing quarter, 2 for the second, …; 0 or less before it."""
        return (self.year - first.year) * 4 + (self.number - first.number) + 1


def covers(start: date, end: date | None, quarter: Quarter) -> bool:
    """A span [start, end] (end inclusive, None = open) overlaps the quarter."""
    return start <= quarter.last_day and (end is None or end >= quarter.first_day)


@dataclass(frozen=True)
class SnfOutcome:
    earned: Decimal
    carry_forward: Decimal  # ≤ 0: withdrawals not yet recovered, set against the next quarter's credits


def snf_quarter(new: int, late: int, withdrawn_after_evaluation: int, carried: Decimal) -> SnfOutcome:
    """$400 per credited file: this quarter's, plus late ones for closed quarters, less credits evaluated
    before and cancelled since (and any such balance carried from before). Never below zero: the rest carries."""
    net = SNF_FILE_AMOUNT * (new + late - withdrawn_after_evaluation) + carried
    return SnfOutcome(max(net, ZERO), min(net, ZERO))


@dataclass(frozen=True)
class PcpOutcome:
    index: int  # which data-sharing quarter of the participant (1 = its first)
    milestone: str | None
    threshold: int | None
    numerator: int
    denominator: int
    met: bool
    earned: Decimal


def pcp_quarter(index: int, attributed: set[str], recorded: set[str]) -> PcpOutcome:
    """Coverage = attributed members with a credited longitudinal record received in the quarter ÷ members
    attributed in the quarter, against the threshold of the milestone this data-sharing quarter is."""
    numerator, denominator = len(attributed & recorded), len(attributed)
    if index not in PCP_MILESTONES:
        return PcpOutcome(index, None, None, numerator, denominator, False, ZERO)
    milestone, threshold = PCP_MILESTONES[index]
    met = denominator > 0 and numerator * 100 >= threshold * denominator  # exact: no float percentages
    return PcpOutcome(index, milestone, threshold, numerator, denominator, met, PCP_QUARTER_AMOUNT if met else ZERO)
