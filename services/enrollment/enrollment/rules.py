"""Program rules (DOMAIN.md A1, A5) as versioned data, and the eligibility rule as a pure function.

The provider-type schedule is configuration: a correction or a new provider type is a new rules version
(`RulesPublished`), never a code change. Every verdict names the version it applied.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from importlib.resources import files
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from dsi_shared.errors import Unprocessable
from eventsourcing.domain import Aggregate, event

# Stable reason codes (A1): clients and reports key on these, so never rename one.
TYPE_NOT_IN_PROGRAM = "provider_type_not_in_program"
WINDOW_NOT_OPEN = "participation_window_not_open"
OUTSIDE_SERVICE_AREA = "no_service_area_county"
NO_EHR = "no_ehr"
HOSPITAL = "hospital"
UMBRELLA_MEMBER = "umbrella_member_not_ehr_manager"
HOSPITAL_FACILITY_KINDS = frozenset({"hospital", "acute_care_hospital", "ltach"})  # A1: an LTACH is a hospital


class InvalidRules(Unprocessable):
    pass


class UnknownProviderType(Unprocessable):
    pass


@dataclass(frozen=True)
class Schedule:
    """One provider type's row of table A5."""

    provider_type: str
    label: str
    participation_opens: date
    sign_plan_agreements_by: date
    milestone1_by: date
    data_sharing_starts: date
    earning_rule: str | None  # None: rules "forthcoming": data recorded, nothing credited
    participation_closes: date  # forms after this cannot reach Milestone 1; defaults to milestone1_by

    def window_open_on(self, day: date) -> bool:
        return self.participation_opens <= day <= self.participation_closes


def parse_rules(document: dict[str, Any]) -> dict[str, Any]:
    """Validate a rules document and return it normalised (dates as ISO strings, sorted keys)."""
    try:
        version = str(document["version"]).strip()
        counties = sorted({str(c).strip() for c in document["service_area_counties"]})
        others = sorted({str(t).strip() for t in document.get("other_provider_types", [])} - set(document["provider_types"]))
        types = document["provider_types"]
        if not version or not counties or not isinstance(types, dict) or not types:
            raise InvalidRules("version, service_area_counties and provider_types are required")
        normalised = {}
        for name, row in types.items():
            schedule = _schedule(name, row)
            if not schedule.participation_opens <= min(schedule.participation_closes, schedule.milestone1_by):
                raise InvalidRules(f"provider type {name}: participation must open before it closes and before Milestone 1")
            normalised[name] = {
                "label": schedule.label, "participation_opens": schedule.participation_opens.isoformat(),
                "participation_closes": schedule.participation_closes.isoformat(),
                "sign_plan_agreements_by": schedule.sign_plan_agreements_by.isoformat(),
                "milestone1_by": schedule.milestone1_by.isoformat(),
                "data_sharing_starts": schedule.data_sharing_starts.isoformat(), "earning_rule": schedule.earning_rule,
            }
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, InvalidRules):
            raise
        raise InvalidRules(f"malformed rules document ({type(exc).__name__}: {exc})") from None
    return {"version": version, "service_area_counties": counties, "other_provider_types": others,
            "provider_types": dict(sorted(normalised.items()))}


def _schedule(name: str, row: dict[str, Any]) -> Schedule:
    milestone1_by = date.fromisoformat(row["milestone1_by"])
    return Schedule(
        provider_type=name,
        label=str(row.get("label", name)),
        participation_opens=date.fromisoformat(row["participation_opens"]),
        sign_plan_agreements_by=date.fromisoformat(row["sign_plan_agreements_by"]),
        milestone1_by=milestone1_by,
        data_sharing_starts=date.fromisoformat(row["data_sharing_starts"]),
        earning_rule=row.get("earning_rule"),
        participation_closes=date.fromisoformat(row.get("participation_closes") or row["milestone1_by"]),
    )


@dataclass(frozen=True)
class Rules:
    """One version of the program rules."""

    document: dict[str, Any]

    @property
    def version(self) -> str:
        return str(self.document["version"])

    @property
    def counties(self) -> frozenset[str]:
        return frozenset(self.document["service_area_counties"])

    def knows(self, provider_type: str) -> bool:
        """A program type, or a recognised type outside the program (ineligible, with that reason)."""
        return provider_type in self.document["provider_types"] or provider_type in self.document["other_provider_types"]

    def schedule(self, provider_type: str) -> Schedule | None:
        row = self.document["provider_types"].get(provider_type)
        return _schedule(provider_type, row) if row is not None else None


def default_rules_document() -> dict[str, Any]:
    return parse_rules(json.loads(files("enrollment").joinpath("program_rules.json").read_text()))


def eligibility_reasons(rules: Rules, *, provider_type: str, counties: list[str], ehr_product: str | None,
                        is_hospital: bool, facility_kind: str | None, umbrella_group: str | None,
                        manages_ehr: bool, submitted_on: date) -> list[str]:
    """Every A1 condition the interest form fails (empty = eligible)."""
    reasons = []
    schedule = rules.schedule(provider_type)
    if schedule is None:
        reasons.append(TYPE_NOT_IN_PROGRAM)
    elif not schedule.window_open_on(submitted_on):
        reasons.append(WINDOW_NOT_OPEN)
    if not {c.strip().casefold() for c in counties} & {c.casefold() for c in rules.counties}:
        reasons.append(OUTSIDE_SERVICE_AREA)
    if not (ehr_product or "").strip():
        reasons.append(NO_EHR)
    if is_hospital or (facility_kind or "").strip().casefold() in HOSPITAL_FACILITY_KINDS:
        reasons.append(HOSPITAL)
    if umbrella_group and not manages_ehr:
        reasons.append(UMBRELLA_MEMBER)
    return reasons


class ProgramRules(Aggregate):
    """The single, versioned rules record. Versions are only ever added."""

    @staticmethod
    def create_id() -> UUID:
        return uuid5(NAMESPACE_URL, "/dsi/enrollment/program-rules")

    @event("ProgramRulesStarted")
    def __init__(self) -> None:
        self.versions: list[dict[str, Any]] = []

    @property
    def current(self) -> Rules:
        if not self.versions:
            raise InvalidRules("no program rules published")
        return Rules(self.versions[-1])

    def rules_version(self, version: str) -> Rules | None:
        return next((Rules(v) for v in self.versions if v["version"] == version), None)

    def publish(self, document: dict[str, Any], reason: str) -> bool:
        """Add a version; the same document again is no change; a known version with other content is refused."""
        rules = parse_rules(document)
        known = self.rules_version(rules["version"])
        if known is not None:
            if known.document == rules:
                return False
            raise InvalidRules(f"rules version {rules['version']} already exists with other content: use a new version")
        self.rules_published(document=rules, reason=reason)
        return True

    @event("RulesPublished")
    def rules_published(self, document: dict[str, Any], reason: str) -> None:
        self.versions.append(document)
