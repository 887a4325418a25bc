"""The charts' figures, as pure functions (tested without a browser): which week and bar a judged file counts in, and
each PCP's coverage against its threshold in a quarter."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from console.chart import Coverage

CREDITED = "credited"


def week_of(received_at: str) -> str:
    """The ISO week (`2025-W05`, Monday to Sunday) of the day the file was received, as its receipt time states it."""
    year, week, _ = datetime.fromisoformat(received_at).isocalendar()
    return f"{year}-W{week:02d}"


def file_kind(submission: Mapping[str, Any]) -> str | None:
    """`credited`, or `rejected: <reason>` by the first reason's code (each file counted once); None for a file
    neither credited nor rejected (recorded only)."""
    if submission.get("verdict") == CREDITED:
        return CREDITED
    if submission.get("verdict") != "rejected":
        return None
    reasons = submission.get("reasons") or ["unstated"]
    return f"rejected: {str(reasons[0]).partition(':')[0]}"


def coverage_rows(evaluations: Iterable[Mapping[str, Any]], names: Mapping[str, str]) -> list[Coverage]:
    """Each PCP's coverage in the quarter, by name: the latest evaluation of each (an adjustment after late records
    supersedes the quarter's first), from its figures; evaluations of other earning rules are not coverage."""
    latest: dict[str, Mapping[str, Any]] = {}
    for evaluation in evaluations:  # in the order they were recorded
        if "coverage_percent" in (evaluation.get("figures") or {}):
            latest[evaluation["participant_id"]] = evaluation
    rows = []
    for pid, evaluation in latest.items():
        figures = evaluation["figures"]
        try:
            percent = Decimal(str(figures["coverage_percent"]))
        except InvalidOperation:
            continue
        threshold = figures.get("threshold_percent")
        rows.append(Coverage(pid, names.get(pid, pid[:8]), percent, int(threshold) if threshold is not None else None,
                             int(figures.get("attributed_members") or 0), int(figures.get("members_with_record") or 0)))
    return sorted(rows, key=lambda r: (r.name.lower(), r.participant_id))
