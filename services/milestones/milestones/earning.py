"""Quarters and the earning rules after Milestone 1 (DOMAIN.md A3, A4), as pure functions.

A provider type's earning rule is a *kind with parameters* in the rules version in force for the quarter
(`dsi_shared.rulebook`): `per_qualifying_file` (each credit carries the amount of the version in force on its
event's date, decided once, in submissions) and `coverage_per_period` (amount and thresholds here). A type whose
rule is forthcoming earns nothing, and says so.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from dsi_shared.plantime import Quarter
from dsi_shared.rulebook import CoveragePerPeriod, CoverageThreshold

PER_FILE, COVERAGE = "per_qualifying_file", "coverage_per_period"  # the earning-rule kinds this code knows
ZERO = Decimal("0.00")


@dataclass(frozen=True)
class SnfOutcome:
    earned: Decimal
    carry_forward: Decimal  # ≤ 0: withdrawals not yet recovered, set against the next quarter's credits


def snf_quarter(credited: Iterable[Decimal], withdrawn_after_evaluation: Iterable[Decimal], carried: Decimal) -> SnfOutcome:
    """Each credit's amount (this quarter's, plus late ones for closed quarters), less credits evaluated before and
    cancelled since (and any such balance carried from before). Never below zero: the rest carries."""
    net = sum(credited, ZERO) - sum(withdrawn_after_evaluation, ZERO) + carried
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


def target(rule: CoveragePerPeriod, index: int, quarter: Quarter, met_before: frozenset[str]) -> tuple[str, int] | None:
    """The milestone and threshold a data-sharing quarter is evaluated against. "Participants will be eligible to
    continue earning so long as the maximum of $40,000 has not been reached": after the last listed period
    (and after a missed one) quarters keep earning — at the last threshold (`last_threshold`), or at the earliest
    milestone not yet met (`earliest_missed`). A repeat of a met milestone is named by its quarter, so each
    quarter's payment is its own."""
    if index < 1:
        return None
    if index <= len(rule.thresholds):
        chosen: CoverageThreshold = rule.thresholds[index - 1]
        return chosen.milestone, chosen.percent
    if rule.after_last_period == "earliest_missed":
        missed = next((t for t in rule.thresholds if t.milestone not in met_before), None)
        if missed is not None:
            return missed.milestone, missed.percent
    last = rule.thresholds[-1]
    return f"{last.milestone}:{quarter}", last.percent


def pcp_quarter(rule: CoveragePerPeriod, index: int, quarter: Quarter, attributed: set[str], recorded: set[str],
                met_before: frozenset[str] = frozenset()) -> PcpOutcome:
    """Coverage = attributed members with a credited longitudinal record received in the quarter ÷ members
    attributed in the quarter, against the threshold of the milestone this data-sharing quarter is."""
    numerator, denominator = len(attributed & recorded), len(attributed)
    aim = target(rule, index, quarter, met_before)
    if aim is None:
        return PcpOutcome(index, None, None, numerator, denominator, False, ZERO)
    milestone, threshold = aim
    met = denominator > 0 and numerator * 100 >= threshold * denominator  # exact: no float percentages
    return PcpOutcome(index, milestone, threshold, numerator, denominator, met, rule.amount if met else ZERO)
