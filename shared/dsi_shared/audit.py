"""What the auditor hands each service and what a service reports to those audited after it, as typed fields (no
ad-hoc dict keys). Services never import each other: the auditor carries these facts between them, as the bus would."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

from dsi_shared.events import IncomingEvent
from dsi_shared.plantime import Quarter
from dsi_shared.rulebook import RuleBook, RulesDocument

Upstream = Callable[[str], Iterable[IncomingEvent]]  # a service's published events, read back from its store


@dataclass
class AuditContext:
    """One `dsi audit replay` run (or `GET /audit/replay` for one store)."""

    as_of: datetime | None = None  # aware: only events that happened by then count (time travel)
    upstream: Upstream | None = None  # None: one store alone, nothing to re-derive from
    progress: Callable[[], None] | None = None  # called once per notification read
    # milestones → payments: per participant, each milestone owed and its amount (None: milestones not audited)
    achieved: dict[str, dict[str, Decimal]] | None = None


class JudgedFile(Protocol):
    """A file or record as a rules book judges it (submissions' `whatif.FileOutcome`)."""

    @property
    def submission_id(self) -> str: ...
    @property
    def quarter(self) -> str: ...
    @property
    def verdict(self) -> str: ...
    @property
    def reasons(self) -> tuple[str, ...]: ...
    @property
    def amount(self) -> Decimal: ...
    @property
    def earning_rule(self) -> str | None: ...
    @property
    def member_id(self) -> str | None: ...
    @property
    def rule_version(self) -> str | None: ...


JudgedFiles = Mapping[str, Sequence[JudgedFile]]  # participant id → its files, in the order received


@dataclass(frozen=True)
class Earning:
    """A milestone a participant earned under a book (before the cap): `M1`, a quarter's files or coverage."""

    quarter: Quarter
    milestone: str
    amount: Decimal


@dataclass
class WhatIfContext:
    """One `dsi rules what-if` run (issue 11 §5): read-only, each service in turn adds its part."""

    proposed: RulesDocument
    first: Quarter
    last: Quarter
    current: RuleBook | None = None  # None: the first service's own copy of the book
    proposed_book: RuleBook | None = None  # None: `current` with `proposed` added
    # submissions → milestones: the files as judged under "current" and under "proposed"
    files: Mapping[str, JudgedFiles] = field(default_factory=lambda: {"current": {}, "proposed": {}})
    # milestones → payments: per book ("current", "proposed"), per participant, what it earned, in the order owed
    earnings: Mapping[str, dict[str, list[Earning]]] = field(default_factory=lambda: {"current": {}, "proposed": {}})
    # the answer: per participant, dollars (payments cuts them to the cap) and what changes (printed as JSON)
    participants: dict[str, dict[str, Any]] = field(default_factory=dict)

    def books(self, own: RuleBook) -> tuple[RuleBook, RuleBook]:
        """The current and proposed books, settled by the first service from its own copy and kept for the rest."""
        if self.current is None:
            self.current = own
        if self.proposed_book is None:
            self.proposed_book = self.current.with_version(self.proposed)
        return self.current, self.proposed_book
