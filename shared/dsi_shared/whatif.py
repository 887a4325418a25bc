"""What-if before publishing (issue 11 §5), in one place for `dsi rules what-if` and the console's
`POST /program-rules/what-if`: "replays the recorded history into a scratch store under the proposed version and
prints per participant: dollars under the current rules, under the proposed rules, the difference, and the files,
evaluations and milestones that change, with their reasons. Nothing is recorded."

Each service with a `what_if` hook adds its part in audit order, its store opened read-only by `open_store` (the
same Settings the auditor's commands use); facts pass between them only through `WhatIfContext`."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime
from typing import Any

from dsi_shared.audit import WhatIfContext
from dsi_shared.config import Settings
from dsi_shared.errors import NotFound
from dsi_shared.plantime import Quarter
from dsi_shared.rulebook import RuleBook, RulesDocument
from dsi_shared.service import ServiceSpec, discover
from dsi_shared.store import ServiceApplication

OpenStore = Callable[[ServiceSpec], ServiceApplication]
Stage = Callable[[str], AbstractContextManager[Any]]  # around each service's part (the CLI shows a spinner)


class UnknownVersion(NotFound):
    """`published` names no published version."""


def open_read_only(spec: ServiceSpec) -> ServiceApplication:
    """A service's store as `dsi audit` opens it: `<SERVICE>_STORE`, else var/<service>.db."""
    return spec.application(Settings(spec.name, spec.default_port).store)


def quarters(first: str | None, last: str | None) -> tuple[Quarter | None, Quarter | None]:
    """`--from`/`--to` (e.g. 2024Q4), parsed; unset, the first is the earliest version's quarter and the last the
    last one ended on the program's calendar (worked out with the book). ValueError naming the bad one."""
    return (Quarter.parse(first) if first else None), (Quarter.parse(last) if last else None)


def what_if(proposed: RulesDocument | None = None, published: str | None = None, first: Quarter | None = None,
            last: Quarter | None = None, open_store: OpenStore = open_read_only,
            stage: Stage = lambda _: nullcontext()) -> dict[str, Any]:
    """Every participant's files, Milestone 1 and quarters worked out under the current rules and under `proposed`
    — or, with `published`, under the book without that version and the book as it is (a correction's
    differences, for staff: "already-paid results that it changes are shown as differences for staff (never
    silently rewritten)"). Returns the summary `dsi rules what-if --json` prints; records nothing."""
    if (proposed is None) == (published is None):
        raise ValueError("give either a proposed document or a published version")
    context: WhatIfContext | None = None
    started = time.monotonic()
    for spec in discover().values():  # in audit order: each after the services whose report it reads
        if spec.what_if is None:
            continue
        application = open_store(spec)
        try:
            if context is None:
                proposed, context = _context(application.rulebook(), proposed, published, first, last)  # type: ignore[attr-defined]
            with stage(spec.name):
                spec.what_if(application, context)
        finally:
            application.close()
    if proposed is None:  # no service has a what-if hook: nothing to say which version that was
        raise UnknownVersion(f"no published version {published!r}")
    return {"proposed_version": proposed.version, "effective_from": proposed.effective_from.isoformat(),
            "from": str(context.first if context else None), "to": str(context.last if context else last),
            "seconds": round(time.monotonic() - started, 2),
            "participants": context.participants if context else {}}


def the_proposal(book: RuleBook, proposed: RulesDocument | None, published: str | None) -> RulesDocument:
    """The version a what-if runs: `published` from the book (UnknownVersion when it has none), or `proposed`, which
    publishing must not refuse for another quarter calendar (InvalidRulesDocument naming `program.quarter_calendar`)."""
    if published is not None:
        found = book.version(published)
        if found is None:
            raise UnknownVersion(f"no published version {published!r}")
        return found
    assert proposed is not None
    book.refuse_calendar_change(proposed)
    return proposed


def _context(book: RuleBook, proposed: RulesDocument | None, published: str | None, first: Quarter | None,
             last: Quarter | None) -> tuple[RulesDocument, WhatIfContext]:
    """The run's books, from the first store's copy of the published versions. A proposal with another quarter
    calendar is refused as publishing it would be (InvalidRulesDocument naming `program.quarter_calendar`)."""
    current: RuleBook | None = None
    proposed_book: RuleBook | None = None
    proposed = the_proposal(book, proposed, published)
    if published is not None:  # the book without that version is "current"; the book as it is, proposed
        current, proposed_book = book.without(published), book
    # the program's calendar; with nothing published yet, the proposed first version's own
    calendar = book.calendar if book.versions else proposed.program.quarter_calendar.calendar
    last = last or calendar.quarter_at(datetime.now().astimezone()).previous()
    earliest = min((v.effective_from for v in book.versions), default=proposed.effective_from)
    return proposed, WhatIfContext(proposed, first or calendar.quarter_of(min(earliest, proposed.effective_from)),
                                   last, current, proposed_book)
