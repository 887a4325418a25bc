"""The plan's members (DOMAIN.md A3 "only the plan's own members earn anything"): eligibility spans, PCP
attribution, QIP-entity assignment, and frozen-CIN aliases. Every change is a new event; nothing is overwritten.
"""

from __future__ import annotations

from datetime import date
from functools import lru_cache
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from dsi_shared.errors import Unprocessable
from dsi_shared.members import assignee_on, cin_of
from eventsourcing.domain import Aggregate, event

PCP, QIP = "pcp", "qip"


class InvalidMember(Unprocessable):
    pass


def normalise_cin(raw: str) -> str:
    """A Medi-Cal CIN: 8 digits then a letter. A 14-character BIC id starts with the CIN. (Never echo the value.)"""
    value = cin_of(raw, bic=True)
    if value is None:
        raise InvalidMember("member id is not a Medi-Cal CIN (8 digits then a letter)")
    return value


@lru_cache(maxsize=4096)  # an import asks each member's id three times (load, lookup, create), a uuid5 each
def member_id(cin: str) -> UUID:
    return uuid5(NAMESPACE_URL, f"/dsi/enrollment/member/{cin}")


def covers(span: dict[str, Any], day: date) -> bool:
    return bool(span["start"] <= day and (span["end"] is None or day <= span["end"]))


class Member(Aggregate):
    @staticmethod
    def create_id(cin: str) -> UUID:
        return member_id(cin)

    @event("MemberRegistered")
    def __init__(self, cin: str) -> None:
        self.cin = cin
        self.demographics: dict[str, Any] = {}
        self.spans: dict[str, dict[str, Any]] = {}  # by start date (ISO)
        self.attributions: list[dict[str, Any]] = []
        self.aliases: list[str] = []

    # -- demographics: stored for the plan's own use, never relayed to other services ---------------------------
    def record_demographics(self, family_name: str, given_name: str, birth_date: date | None, source: str) -> bool:
        new: dict[str, Any] = {"family_name": family_name, "given_name": given_name, "birth_date": birth_date}
        if new == self.demographics:
            return False
        self.demographics_recorded(**new, source=source)
        return True

    @event("DemographicsRecorded")
    def demographics_recorded(self, family_name: str, given_name: str, birth_date: date | None, source: str) -> None:
        self.demographics = {"family_name": family_name, "given_name": given_name, "birth_date": birth_date}

    # -- eligibility spans -------------------------------------------------------------------------------------
    # A span: start, end, aid_code (None = unknown: the file left it blank), other_health_coverage, dual_eligible,
    # and `dates_from` ({"start": ..., "end": ...}: the field that supplied each date, e.g. "DTP*356"). Provenance
    # is recorded with the dates but is not itself a change: the same dates from another qualifier change nothing.
    def record_eligibility(self, start: date, end: date | None, aid_code: str | None, other_health_coverage: bool,
                           dual_eligible: bool, source: str, dates_from: dict[str, str | None] | None = None) -> bool:
        if end is not None and end < start:
            raise InvalidMember("eligibility ends before it starts")
        span: dict[str, Any] = {"start": start, "end": end, "aid_code": aid_code, "other_health_coverage": other_health_coverage,
                "dual_eligible": dual_eligible}
        existing = self.spans.get(start.isoformat())
        facts = None if existing is None else {k: v for k, v in existing.items() if k in span}
        if facts == span:
            return False
        if facts is None:
            self.eligibility_opened(cin=self.cin, **span, source=source, dates_from=dates_from)
        elif {k: v for k, v in facts.items() if k != "end"} == {k: v for k, v in span.items() if k != "end"}:
            self.eligibility_closed(cin=self.cin, start=start, end=end, source=source,
                                    end_from=(dates_from or {}).get("end"))
        else:
            self.eligibility_changed(cin=self.cin, **span, source=source, dates_from=dates_from)
        return True

    def has_span_by(self, day: date) -> bool:
        """Some span starts on or before `day`: a termination at `day` has something to apply to."""
        return any(span["start"] <= day for span in self.spans.values())

    def terminate(self, end: date, source: str, end_from: str | None = None) -> bool:
        """Close every span still running past `end` (an 834 termination)."""
        changed = False
        for span in list(self.spans.values()):
            if span["start"] <= end and (span["end"] is None or span["end"] > end):
                self.eligibility_closed(cin=self.cin, start=span["start"], end=end, source=source, end_from=end_from)
                changed = True
        return changed

    @event("EligibilityOpened")
    def eligibility_opened(self, cin: str, start: date, end: date | None, aid_code: str | None,
                           other_health_coverage: bool, dual_eligible: bool, source: str,
                           dates_from: dict[str, str | None] | None = None) -> None:
        self.spans[start.isoformat()] = {"start": start, "end": end, "aid_code": aid_code,
                                         "other_health_coverage": other_health_coverage, "dual_eligible": dual_eligible,
                                         "dates_from": dates_from}

    @event("EligibilityChanged")
    def eligibility_changed(self, cin: str, start: date, end: date | None, aid_code: str | None,
                            other_health_coverage: bool, dual_eligible: bool, source: str,
                            dates_from: dict[str, str | None] | None = None) -> None:
        self.spans[start.isoformat()] = {"start": start, "end": end, "aid_code": aid_code,
                                         "other_health_coverage": other_health_coverage, "dual_eligible": dual_eligible,
                                         "dates_from": dates_from}

    @event("EligibilityClosed")
    def eligibility_closed(self, cin: str, start: date, end: date | None, source: str,
                           end_from: str | None = None) -> None:
        span = self.spans[start.isoformat()]
        span["end"] = end
        if end_from is not None:
            span["dates_from"] = {**(span.get("dates_from") or {}), "end": end_from}

    def eligibility_on(self, day: date) -> dict[str, Any] | None:
        return next((s for s in sorted(self.spans.values(), key=lambda s: s["start"], reverse=True) if covers(s, day)), None)

    # -- attribution (PCP participant) and assignment (QIP entity) ------------------------------------------------
    def attribute(self, kind: str, assignee: str, start: date, end: date | None, source: str) -> bool:
        if kind not in {PCP, QIP}:
            raise InvalidMember("attribution kind must be pcp or qip")
        if end is not None and end < start:
            raise InvalidMember("attribution ends before it starts")
        current = next((a for a in self.attributions if a["kind"] == kind and a["start"] == start), None)
        if current is not None and current["assignee"] == assignee and current["end"] == end:
            return False
        self.attributed(cin=self.cin, kind=kind, assignee=assignee, start=start, end=end, source=source)
        return True

    @event("AttributionRecorded")
    def attributed(self, cin: str, kind: str, assignee: str, start: date, end: date | None, source: str) -> None:
        # The latest record for a (kind, start) wins; earlier ones stay in the event history.
        self.attributions = [a for a in self.attributions if not (a["kind"] == kind and a["start"] == start)]
        self.attributions.append({"kind": kind, "assignee": assignee, "start": start, "end": end, "source": source})

    def attributed_on(self, kind: str, day: date) -> str | None:
        return assignee_on(((a["start"], a["end"], a["assignee"]) for a in self.attributions if a["kind"] == kind), day)

    # -- frozen CINs -------------------------------------------------------------------------------------------
    def add_alias(self, frozen_cin: str) -> bool:
        if frozen_cin == self.cin or frozen_cin in self.aliases:
            return False
        self.alias_added(cin=self.cin, frozen_cin=frozen_cin)
        return True

    @event("AliasAdded")
    def alias_added(self, cin: str, frozen_cin: str) -> None:
        self.aliases.append(frozen_cin)


# Demographics stay in enrollment's store: no other service needs names or birth dates (minimum necessary).
Member.DemographicsRecorded.relay = False  # type: ignore[attr-defined]


class CinAlias(Aggregate):
    """A frozen (merged) CIN pointing at the member's current CIN, so old records still find their member."""

    @staticmethod
    def create_id(frozen_cin: str) -> UUID:
        return uuid5(NAMESPACE_URL, f"/dsi/enrollment/cin-alias/{frozen_cin}")

    @event("CinAliasRecorded")
    def __init__(self, frozen_cin: str, current_cin: str) -> None:
        self.frozen_cin, self.current_cin = frozen_cin, current_cin
