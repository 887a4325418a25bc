"""Program rules (DOMAIN.md A1, A5) as published, effective-dated versions, and the eligibility rule.

The document's shape and dating live in `dsi_shared.rulebook`; enrollment is where staff publish versions
(`ProgramRules`, one record, versions only ever added) and where an interest form is judged under the version in
force on the day it was submitted. Every verdict names the version it applied.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from importlib.resources import files
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from dsi_shared.errors import PermanentError, Unprocessable
from dsi_shared.rulebook import (
    CoveragePerPeriod,
    InvalidRulesDocument,
    PerQualifyingFile,
    RuleBook,
    RulesDocument,
    parse_document,
)
from eventsourcing.domain import Aggregate, event

# Stable reason codes (A1): clients and reports key on these, so never rename one.
TYPE_NOT_IN_PROGRAM = "provider_type_not_in_program"
WINDOW_NOT_OPEN = "participation_window_not_open"
OUTSIDE_SERVICE_AREA = "no_service_area_county"
NO_EHR = "no_ehr"
HOSPITAL = "hospital"
UMBRELLA_MEMBER = "umbrella_member_not_ehr_manager"
NO_RULES_IN_FORCE = "no_rules_in_force"
HOSPITAL_FACILITY_KINDS = frozenset({"hospital", "acute_care_hospital", "ltach"})  # A1: an LTACH is a hospital
# Flags: shown to staff, never a reason to refuse.
FORM_AFTER_MILESTONE1_DATE = "form_after_type_milestone1_date"


class InvalidRules(Unprocessable):
    pass


class UnknownProviderType(Unprocessable):
    pass


class LowersSignedTerms(PermanentError):
    """A version that would lower what participants earn under terms they signed: staff must confirm (409)."""


def parse_rules(document: Any) -> RulesDocument:
    try:
        return parse_document(document)
    except InvalidRulesDocument as exc:
        raise InvalidRules(str(exc)) from None


def default_rules_document() -> dict[str, Any]:
    return parse_rules(json.loads(files("enrollment").joinpath("program_rules.json").read_text())).as_stored()


def knows(rules: RulesDocument, provider_type: str) -> bool:
    """A program type, or a recognised type outside the program (ineligible, with that reason)."""
    return provider_type in rules.provider_types or provider_type in rules.other_provider_types


@dataclass(frozen=True)
class EligibilityVerdict:
    reasons: list[str]
    flags: list[str]


def judge_interest_form(rules: RulesDocument | None, *, provider_type: str, counties: list[str],
                        ehr_product: str | None, is_hospital: bool, facility_kind: str | None,
                        umbrella_group: str | None, manages_ehr: bool, submitted_on: date) -> EligibilityVerdict:
    """A1 under the version in force on `submitted_on`: every condition the form fails (empty = eligible), and
    what staff should look at. "DSI Interest Forms may be submitted as soon as participation opens": the page
    sets no closing date, so a form after the type's Milestone 1 date is accepted and flagged."""
    if rules is None:
        return EligibilityVerdict([NO_RULES_IN_FORCE], [])
    reasons, flags = [], []
    row = rules.provider_type(provider_type)
    if row is None:
        reasons.append(TYPE_NOT_IN_PROGRAM)
    elif submitted_on < row.participation_opens:
        reasons.append(WINDOW_NOT_OPEN)
    elif submitted_on > row.milestone1_by:
        flags.append(FORM_AFTER_MILESTONE1_DATE)
    if not {c.strip().casefold() for c in counties} & {c.casefold() for c in rules.service_area_counties}:
        reasons.append(OUTSIDE_SERVICE_AREA)
    if not (ehr_product or "").strip():
        reasons.append(NO_EHR)
    if is_hospital or (facility_kind or "").strip().casefold() in HOSPITAL_FACILITY_KINDS:
        reasons.append(HOSPITAL)
    if umbrella_group and not manages_ehr:
        reasons.append(UMBRELLA_MEMBER)
    return EligibilityVerdict(reasons, flags)


def eligibility_reasons(rules: RulesDocument | None, **form: Any) -> list[str]:
    return judge_interest_form(rules, **form).reasons


def lowered_terms(before: RulesDocument, after: RulesDocument) -> list[str]:
    """What `after` takes away from participants compared with `before` (the version it replaces on its date):
    lower amounts or cap, a cap shared by the organization instead of one per participation, a shorter window,
    fewer qualifying events, higher thresholds, later data sharing, an earlier Milestone 1 date, a type or earning
    rule removed. Empty when nothing is lowered."""
    found: list[str] = []
    if after.program.cap < before.program.cap:
        found.append("program.cap lowered")
    if (before.program.cap_scope, after.program.cap_scope) == ("participation", "organization"):
        found.append("program.cap_scope shared by the organization")  # a later round's own cap taken away
    for name, old in before.provider_types.items():
        new = after.provider_types.get(name)
        at = f"provider_types.{name}"
        if new is None:
            found.append(f"{at} removed")
            continue
        if new.milestone1_amount < old.milestone1_amount:
            found.append(f"{at}.milestone1_amount lowered")
        if new.milestone1_by < old.milestone1_by:
            found.append(f"{at}.milestone1_by earlier")
        if new.data_sharing_starts > old.data_sharing_starts:
            found.append(f"{at}.data_sharing_starts later")
        found.extend(f"{at}.earning_rule{what}" for what in _rule_lowered(old.earning_rule, new.earning_rule))
    return found


def _rule_lowered(old: PerQualifyingFile | CoveragePerPeriod | None,
                  new: PerQualifyingFile | CoveragePerPeriod | None) -> list[str]:
    if old is None:
        return []
    if new is None or new.kind != old.kind:
        return [" removed or replaced"]
    found = [".amount lowered"] if new.amount < old.amount else []
    if isinstance(old, PerQualifyingFile) and isinstance(new, PerQualifyingFile):
        if new.timeliness_hours < old.timeliness_hours:
            found.append(".timeliness_hours shortened")
        if set(old.qualifying_events) - set(new.qualifying_events):
            found.append(".qualifying_events removed")
        if set(new.associated_message_types) - set(old.associated_message_types):
            found.append(".associated_message_types added (more to be complete)")
    if isinstance(old, CoveragePerPeriod) and isinstance(new, CoveragePerPeriod):
        periods = range(max(len(old.thresholds), len(new.thresholds)))
        if any(_percent(new, i) > _percent(old, i) for i in periods):
            found.append(".thresholds raised")
    return found


def _percent(rule: CoveragePerPeriod, period: int) -> int:
    """The threshold of a data-sharing period (0-based); past the list, the last one."""
    return rule.thresholds[min(period, len(rule.thresholds) - 1)].percent


class ProgramRules(Aggregate):
    """The single, versioned rules record. Versions are only ever added, each with its reason."""

    @staticmethod
    def create_id() -> UUID:
        return uuid5(NAMESPACE_URL, "/dsi/enrollment/program-rules")

    @event("ProgramRulesStarted")
    def __init__(self) -> None:
        self.versions: list[dict[str, Any]] = []

    @property
    def book(self) -> RuleBook:
        return RuleBook.of_current_schema(self.versions)

    @property
    def current(self) -> RulesDocument:
        latest = self.book.latest
        if latest is None:
            raise InvalidRules("no program rules published")
        return latest

    def publish(self, document: Any, reason: str, confirm_lowering: bool = False) -> bool:
        """Add a version; the same document again is no change; a known version with other content is refused;
        one that lowers signed terms needs `confirm_lowering` (staff, with the reason)."""
        rules = parse_rules(document)
        if not reason.strip():
            raise InvalidRules("reason: a rules version needs a reason")
        book = self.book
        known = book.version(rules.version)
        if known is not None:
            if known == rules:
                return False
            raise InvalidRules(f"version: {rules.version} already exists with other content: use a new version")
        try:
            book.refuse_calendar_change(rules)
        except InvalidRulesDocument as exc:
            raise InvalidRules(str(exc)) from None
        replaced = book.in_force(rules.effective_from) or book.latest
        lowered = lowered_terms(replaced, rules) if replaced is not None else []
        if lowered and not confirm_lowering:
            raise LowersSignedTerms("this version lowers terms participants signed under (the Letter of Agreement "
                                    f"governs): {'; '.join(lowered)}. Preview it with what-if, then publish with "
                                    "confirm_lowering and a reason")
        self.rules_published(document=rules.as_stored(), reason=reason, lowered=lowered)
        return True

    @event("RulesPublished")
    def rules_published(self, document: dict[str, Any], reason: str, lowered: list[str] | None = None) -> None:
        """`lowered`: what staff confirmed this version takes away (empty for most versions)."""
        self.versions.append(document)
