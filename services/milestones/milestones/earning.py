"""Quarters and the earning rules after Milestone 1 (DOMAIN.md A3, A4), as pure functions.

A provider type names its earning rule in the versioned program rules (enrollment's `earning_rule`); the rule's
figures live here, under that name. A type whose rule is not defined yet earns nothing, and says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from dsi_shared.plantime import Quarter

SNF_RULE = "snf_combined_adt_file"
PCP_RULE = "pcp_longitudinal_coverage"
SNF_FILE_AMOUNT = Decimal("400.00")
PCP_QUARTER_AMOUNT = Decimal("10000.00")
# The participant's 1st, 2nd and 3rd data-sharing quarters: Milestones 2, 3, 4 and their coverage thresholds (%).
PCP_MILESTONES = {1: ("M2", 75), 2: ("M3", 90), 3: ("M4", 95)}
ZERO = Decimal("0.00")


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
