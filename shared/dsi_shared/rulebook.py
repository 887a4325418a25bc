"""The program rules document (DOMAIN.md A3–A5): its schema, and which published version is in force on a day.

The rules are data that program staff publish through enrollment (`POST /program-rules`); every service keeps a
copy of the published versions (`RulesCopy`, fed by `dsi.enrollment.rules-published`) and each decision asks the
book for the version in force on the date it concerns. This module holds the document's *shape* and the dating
rule only; what a rule decides lives in the owning service's domain module, next to the facts it judges.

Dating: a version applies from its `effective_from` (a plan-local date). On a day, the version in force is the one
with the latest `effective_from` on or before that day; between versions with the same `effective_from`, the
one published last. So a correction published later but effective earlier reaches every day from its date on,
up to the next version's date.

The quarter calendar (`program.quarter_calendar`) is the exception to dating: quarters already named and paid must
never change meaning, so it is program-wide, the same in every version (`RuleBook.refuse_calendar_change`), and a
service asks the book, not a version, for it (`RuleBook.calendar`).

Schema history: documents stored before the calendar was part of the rules are read (`upcast`) with the calendar
the program had then, so recorded history replays unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Annotated, Any, Literal
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.domain import Aggregate, event
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from dsi_shared.plantime import InvalidCalendar, QuarterCalendar

Money = Annotated[Decimal, Field(gt=0, max_digits=12, decimal_places=2)]
Trigger = Annotated[str, Field(pattern=r"^A[0-9]{2}$")]
MessageKind = Annotated[str, Field(pattern=r"^[A-Z]{3}\^[A-Z][0-9]{2}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PerQualifyingFile(_Strict):
    """A3 skilled nursing / long-term care: an amount per timely, complete combined ADT file."""

    kind: Literal["per_qualifying_file"]
    amount: Money = Field(description="paid per qualifying event, e.g. 400.00")
    timeliness_hours: int = Field(gt=0, le=24 * 366, description="receipt within this many hours of the event")
    qualifying_events: list[Trigger] = Field(min_length=1, description="ADT trigger events that earn, e.g. A01")
    associated_message_types: list[MessageKind] = Field(
        min_length=1, description="messages that belong with the ADT in a combined file, e.g. ORU^R01, RDE^O11")
    cancel_events: dict[Trigger, Trigger] = Field(description="cancel trigger → the event it withdraws, e.g. A11 → A01")

    @model_validator(mode="after")
    def _cancels_name_qualifying_events(self) -> PerQualifyingFile:
        unknown = sorted(set(self.cancel_events.values()) - set(self.qualifying_events))
        if unknown:
            raise ValueError(f"cancel_events withdraw events that do not qualify: {', '.join(unknown)}")
        return self


class CoverageThreshold(_Strict):
    milestone: str = Field(min_length=1, max_length=20, description="e.g. M2")
    percent: int = Field(gt=0, le=100)


class CoveragePerPeriod(_Strict):
    """A3 primary care: an amount per quarter when longitudinal-record coverage meets the period's threshold."""

    kind: Literal["coverage_per_period"]
    amount: Money = Field(description="paid per quarter whose threshold is met, e.g. 10000.00")
    thresholds: list[CoverageThreshold] = Field(
        min_length=1, description="by data-sharing period: the 1st quarter's, the 2nd's, ...")
    after_last_period: Literal["last_threshold", "earliest_missed"] = Field(
        description="later quarters: the last threshold keeps applying, or the earliest missed milestone is retried")


EarningRule = Annotated[PerQualifyingFile | CoveragePerPeriod, Field(discriminator="kind")]


class ProviderTypeRules(_Strict):
    """One row of table A5, with what the type earns."""

    label: str = Field(min_length=1, max_length=200)
    cohort: int | None = None
    participation_opens: date
    sign_plan_agreements_by: date
    milestone1_by: date = Field(description="the default agreement due date; staff may set a participant's own")
    data_sharing_starts: date
    milestone1_amount: Money
    earning_rule: EarningRule | None = Field(description="null: 'forthcoming', data recorded, nothing credited")

    @model_validator(mode="after")
    def _dates_in_order(self) -> ProviderTypeRules:
        if not self.participation_opens <= self.milestone1_by:
            raise ValueError("participation_opens must not be after milestone1_by")
        return self


class QuarterCalendarTerms(_Strict):
    """DOMAIN.md A4: "Data-capture quarters: Jan–Mar, Apr–Jun, Jul–Sep, Oct–Dec (America/Los_Angeles)"."""

    quarter_starts: list[Annotated[str, Field(pattern=r"^[0-9]{2}-[0-9]{2}$")]] = Field(
        description="the first day (MM-DD) of quarters 1 to 4: four distinct, ascending month-days, not 02-29; "
                    "the 4th quarter runs into the next year up to the day before the 1st start")

    @field_validator("quarter_starts")
    @classmethod
    def _a_calendar(cls, starts: list[str]) -> list[str]:
        try:
            QuarterCalendar.parse(starts)
        except InvalidCalendar as exc:
            raise ValueError(str(exc)) from None
        return starts

    _calendar: QuarterCalendar = PrivateAttr()

    def model_post_init(self, context: Any, /) -> None:
        self._calendar = QuarterCalendar.parse(self.quarter_starts)  # parsed once: every file is dated by it

    @property
    def calendar(self) -> QuarterCalendar:
        return self._calendar


class ProgramTerms(_Strict):
    cap: Money = Field(description="the most a participant is ever paid, e.g. 40000.00")
    cap_scope: Literal["organization", "participation"] = Field(
        description="whether a later round shares the organization's cap or brings its own")
    quarter_calendar: QuarterCalendarTerms = Field(
        description="when quarters start: program-wide, the same in every published version")


class RulesDocument(_Strict):
    version: str = Field(min_length=1, max_length=50, pattern=r"^[A-Za-z0-9._-]+$")
    effective_from: date = Field(description="plan-local date from which this version applies")
    note: str | None = Field(default=None, max_length=2000)
    service_area_counties: list[Annotated[str, Field(min_length=1, max_length=100)]] = Field(min_length=1)
    other_provider_types: list[Annotated[str, Field(min_length=1, max_length=100)]] = Field(default_factory=list)
    program: ProgramTerms
    provider_types: dict[Annotated[str, Field(pattern=r"^[a-z0-9_]{1,60}$")], ProviderTypeRules] = Field(min_length=1)

    def provider_type(self, name: str) -> ProviderTypeRules | None:
        return self.provider_types.get(name)

    def earning_rule(self, provider_type: str | None) -> EarningRule | None:
        row = self.provider_types.get(provider_type or "")
        return row.earning_rule if row else None

    def as_stored(self) -> dict[str, Any]:
        """The normalised JSON form kept in events: the same document always stores the same bytes."""
        return self.model_dump(mode="json")


class InvalidRulesDocument(ValueError):
    """Raised with the field locations and error kinds (never values) of what is wrong."""


class NoRulesYet(Exception):
    """No rules version has reached this service yet, so no day can be put into a quarter: a consumer retries the
    message, an API answers 503 (never a default calendar)."""


# The calendar every document had before `program.quarter_calendar` was part of the schema (DOMAIN.md A4).
LEGACY_QUARTER_STARTS = ("01-01", "04-01", "07-01", "10-01")


def upcast(document: Any) -> Any:
    """A stored document of an older schema in today's: one without a quarter calendar reads with the calendar the
    program had when it was published, so recorded history replays unchanged. Other documents are left as they
    are (a new version must name its calendar)."""
    program = document.get("program") if isinstance(document, dict) else None
    if isinstance(program, dict) and "quarter_calendar" not in program:
        return {**document, "program": {**program,
                                        "quarter_calendar": {"quarter_starts": list(LEGACY_QUARTER_STARTS)}}}
    return document


def parse_document(document: Any) -> RulesDocument:
    try:
        return RulesDocument.model_validate(document)
    except ValidationError as exc:
        fields = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'rules'}: {e['type']}"
                           + (f" ({e['msg']})" if e["type"] == "value_error" else "") for e in exc.errors())
        raise InvalidRulesDocument(f"invalid rules document: {fields}") from None


@dataclass(frozen=True)
class RuleBook:
    """The published versions, in publication order."""

    versions: tuple[RulesDocument, ...]

    @classmethod
    def of(cls, documents: Iterable[dict[str, Any]]) -> RuleBook:
        return cls(tuple(RulesDocument.model_validate(upcast(d)) for d in documents))

    @classmethod
    def of_current_schema(cls, documents: Iterable[dict[str, Any]]) -> RuleBook:
        """The documents of today's schema; one of an older schema is history, never applied."""
        valid = []
        for document in documents:
            try:
                valid.append(RulesDocument.model_validate(upcast(document)))
            except ValidationError:
                continue
        return cls(tuple(valid))

    def in_force(self, day: date) -> RulesDocument | None:
        """The version in force on `day` (None before the earliest effective date)."""
        best: RulesDocument | None = None
        for version in self.versions:  # publication order: a later one with the same date wins the tie
            if version.effective_from <= day and (best is None or version.effective_from >= best.effective_from):
                best = version
        return best

    @property
    def calendar(self) -> QuarterCalendar:
        """The program's quarter calendar (every version carries the same one). NoRulesYet before any version."""
        if not self.versions:
            raise NoRulesYet("no program rules have arrived yet: no quarter calendar to date by")
        return self.versions[-1].program.quarter_calendar.calendar

    def refuse_calendar_change(self, proposed: RulesDocument) -> None:
        """Quarters already named and paid must never change meaning: once a version is published, every later one
        carries the same calendar (InvalidRulesDocument naming `program.quarter_calendar` otherwise)."""
        if self.versions and proposed.program.quarter_calendar.calendar != self.calendar:
            raise InvalidRulesDocument(
                "invalid rules document: program.quarter_calendar: the quarter calendar is program-wide and cannot "
                f"change once published (it is {', '.join(self.calendar.month_days())})")

    def version(self, name: str) -> RulesDocument | None:
        return next((v for v in self.versions if v.version == name), None)

    @property
    def latest(self) -> RulesDocument | None:
        return self.versions[-1] if self.versions else None

    def without(self, version: str) -> RuleBook:
        """The book as it was before `version` was published (what a published correction changed)."""
        return RuleBook(tuple(v for v in self.versions if v.version != version))

    def with_version(self, proposed: RulesDocument) -> RuleBook:
        """The book as it would be if `proposed` were published now (for what-if)."""
        return RuleBook((*self.versions, proposed))


class RulesCopy(Aggregate):
    """A service's copy of the rules versions enrollment published (one per store), in publication order.
    Versions that are not a valid current document (an older schema) are kept out of the book, never applied."""

    @staticmethod
    def create_id() -> UUID:
        return uuid5(NAMESPACE_URL, "/dsi/rules-copy")

    @event("RulesCopyStarted")
    def __init__(self) -> None:
        self.documents: list[dict[str, Any]] = []

    def note(self, document: dict[str, Any]) -> bool:
        parsed = RuleBook.of_current_schema([document]).latest  # None: an older schema, not applicable today
        if parsed is None or any(d["version"] == parsed.version for d in self.documents):
            return False
        self.version_noted(document=parsed.as_stored())
        return True

    @event("VersionNoted")
    def version_noted(self, document: dict[str, Any]) -> None:
        self.documents.append(document)

    @property
    def book(self) -> RuleBook:
        return RuleBook.of(self.documents)


class RulesReader:
    """A service's rules book as its `RulesCopy` stands now, parsed only when a new version was noted (decisions
    on the hot path — every file, every enrollment fact — read it)."""

    def __init__(self) -> None:
        self._version = -1
        self._book = RuleBook(())

    @staticmethod
    def copy_in(app: Any) -> RulesCopy:
        """The store's copy, or a new one (saved only once a version is noted)."""
        return app.find(RulesCopy.create_id(), RulesCopy) or RulesCopy()

    def book(self, app: Any) -> RuleBook:
        try:  # read only: a consumer's kept copy is read without copying it first (see `aggregatecache`)
            copy = app.repository.get(RulesCopy.create_id(), deepcopy_from_cache=False)
        except AggregateNotFoundError:
            return RuleBook(())
        return self.book_of(copy)

    def book_of(self, copy: Any) -> RuleBook:
        """The book of a copy the caller loaded itself (e.g. with other aggregates in one query); None: no copy."""
        if copy is None:
            return RuleBook(())
        if not isinstance(copy, RulesCopy):
            raise TypeError(f"the rules copy id holds a {type(copy).__name__}")
        if copy.version != self._version:
            self._book, self._version = copy.book, copy.version
        return self._book


for _internal in (RulesCopy.RulesCopyStarted, RulesCopy.VersionNoted):  # type: ignore[attr-defined]
    _internal.relay = False  # a projection of enrollment's events: never re-published


def calendar_of(program_rules: dict[str, Any] | None) -> QuarterCalendar | None:
    """The program's quarter calendar from enrollment's `GET /program-rules` answer, for clients of the API (the
    console, the demo); None before any version is published."""
    current = (program_rules or {}).get("current") or {}
    starts = ((current.get("program") or {}).get("quarter_calendar") or {}).get("quarter_starts")
    return QuarterCalendar.parse(starts) if starts else None
