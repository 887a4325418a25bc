"""The plan's members (DOMAIN.md A3 "only the plan's own members earn anything"): eligibility spans, PCP
attribution, QIP-entity assignment, and frozen-CIN aliases. Every change is a new event; nothing is overwritten.
"""

from __future__ import annotations

from datetime import date
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from dsi_shared.errors import Unprocessable
from dsi_shared.members import CIN, assignee_on
from eventsourcing.domain import Aggregate, event

PCP, QIP = "pcp", "qip"


class InvalidMember(Unprocessable):
    pass


def normalise_cin(raw: str) -> str:
    """A Medi-Cal CIN: 8 digits then a letter. A 14-character BIC id starts with the CIN. (Never echo the value.)"""
    value = (raw or "").strip().upper()
    if len(value) == 14 and CIN.match(value[:9]):
        value = value[:9]
    if not CIN.match(value):
        raise InvalidMember("member id is not a Medi-Cal CIN (8 digits then a letter)")
    return value


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
    def record_eligibility(self, start: date, end: date | None, aid_code: str, other_health_coverage: bool,
                           dual_eligible: bool, source: str) -> bool:
        if end is not None and end < start:
            raise InvalidMember("eligibility ends before it starts")
        span: dict[str, Any] = {"start": start, "end": end, "aid_code": aid_code, "other_health_coverage": other_health_coverage,
                "dual_eligible": dual_eligible}
        existing = self.spans.get(start.isoformat())
        if existing == span:
            return False
        if existing is None:
            self.eligibility_opened(cin=self.cin, **span, source=source)
        elif {k: v for k, v in existing.items() if k != "end"} == {k: v for k, v in span.items() if k != "end"}:
            self.eligibility_closed(cin=self.cin, start=start, end=end, source=source)
        else:
            self.eligibility_changed(cin=self.cin, **span, source=source)
        return True

    def terminate(self, end: date, source: str) -> bool:
        """Close every span still running past `end` (an 834 termination)."""
        changed = False
        for span in list(self.spans.values()):
            if span["start"] <= end and (span["end"] is None or span["end"] > end):
                self.eligibility_closed(cin=self.cin, start=span["start"], end=end, source=source)
                changed = True
        return changed

    @event("EligibilityOpened")
    def eligibility_opened(self, cin: str, start: date, end: date | None, aid_code: str, other_health_coverage: bool,
                           dual_eligible: bool, source: str) -> None:
        self.spans[start.isoformat()] = {"start": start, "end": end, "aid_code": aid_code,
                                         "other_health_coverage": other_health_coverage, "dual_eligible": dual_eligible}

    @event("EligibilityChanged")
    def eligibility_changed(self, cin: str, start: date, end: date | None, aid_code: str, other_health_coverage: bool,
                            dual_eligible: bool, source: str) -> None:
        self.spans[start.isoformat()] = {"start": start, "end": end, "aid_code": aid_code,
                                         "other_health_coverage": other_health_coverage, "dual_eligible": dual_eligible}

    @event("EligibilityClosed")
    def eligibility_closed(self, cin: str, start: date, end: date | None, source: str) -> None:
        self.spans[start.isoformat()]["end"] = end

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
