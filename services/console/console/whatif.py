"""`POST /program-rules/what-if` for staff (issue 11 §5): "replays the recorded history into a scratch store under
the proposed version and prints per participant: dollars under the current rules, under the proposed rules, the
difference, and the files, evaluations and milestones that change, with their reasons. Nothing is recorded."

The what-if needs the submissions and the milestones stores, and services meet only on NATS: like `dsi audit`, the
console is a read-only cross-store reader (`dsi_shared.whatif`, the stores opened with the Settings the CLI uses).
A run over a large store takes a minute, so it is a job: 202 with its Location, then `GET` it until done. Jobs
live in memory (the what-if records nothing) and one runs at a time."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

from dsi_shared.errors import Unprocessable, describe
from dsi_shared.http import Answer
from dsi_shared.plantime import Quarter
from dsi_shared.rulebook import InvalidRulesDocument, RuleBook, RulesDocument, parse_document
from dsi_shared.whatif import open_read_only, quarters, the_proposal, what_if
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

log = logging.getLogger(__name__)
QUARTER = r"^\d{4}Q[1-4]$"
KEEP_JOBS = 20  # the latest jobs kept in memory; older ones are forgotten (GET → 404)


class InvalidProposal(Unprocessable):
    """A proposed document that does not parse, named by field (422)."""


class WhatIfIn(BaseModel):
    """A proposed rules document (`rules`, as `POST /program-rules` takes it, whose `reason` and `confirm_lowering`
    may come along and are ignored) or a `published` version; optional first and last quarters."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    rules: dict[str, Any] | None = Field(None, description="the proposed rules document (see GET /program-rules)")
    published: str | None = Field(None, min_length=1, max_length=100,
                                  description="instead: a version already published, what it changed")
    reason: str | None = Field(None, max_length=1000, description="ignored (the body of POST /program-rules runs as is)")
    confirm_lowering: bool = Field(False, description="ignored")
    from_: str | None = Field(None, alias="from", pattern=QUARTER, description="first quarter, e.g. 2024Q4")
    to: str | None = Field(None, pattern=QUARTER, description="last quarter (default: the last one ended)")

    @model_validator(mode="after")
    def one_of(self) -> WhatIfIn:
        if (self.rules is None) == (self.published is None):
            raise ValueError("give either rules (a proposed document) or published (a version)")
        return self


class Judgment(Answer):
    verdict: str
    amount: str
    reasons: list[str]
    rule_version: str | None = None


class ChangedFile(Answer):
    submission_id: str
    quarter: str
    current: Judgment
    proposed: Judgment


class Change(Answer):
    current: str
    proposed: str


class ParticipantDifference(Answer):
    current: str = Field(description="dollars under the current rules")
    proposed: str = Field(description="dollars under the proposed rules")
    difference: str
    files: list[ChangedFile]
    quarters: dict[str, Change]
    milestone1: Change | None


class WhatIfSummary(Answer):
    model_config = ConfigDict(populate_by_name=True)
    proposed_version: str
    effective_from: str
    from_: str = Field(alias="from")
    to: str
    seconds: float
    participants: dict[str, ParticipantDifference]


class WhatIfJob(Answer):
    id: str
    status: Literal["running", "done", "failed"]
    proposed_version: str | None = Field(description="the proposed document's version, or the published one")
    published: bool = Field(description="a version already published: what it changed (never rewritten)")
    started_at: str
    error: str | None = None
    summary: WhatIfSummary | None = None


@dataclass
class Job:
    id: str
    version: str | None
    published: bool
    started_at: str
    status: str = "running"
    error: str | None = None
    summary: dict[str, Any] | None = None
    document: dict[str, Any] | None = None  # the proposed document as posted: what "Publish this version" sends

    def view(self) -> dict[str, Any]:
        return {"id": self.id, "status": self.status, "proposed_version": self.version, "published": self.published,
                "started_at": self.started_at, "error": self.error, "summary": self.summary}


def from_form(fields: dict[str, str]) -> WhatIfIn:
    """The console's form as `POST /program-rules/what-if` takes it: a published version, or the pasted document
    (the document itself, or the body of POST /program-rules with it under `rules`)."""
    body: dict[str, Any] = {"from": fields.get("from") or None, "to": fields.get("to") or None}
    if fields.get("published"):
        body["published"] = fields["published"]
    else:
        try:
            document = json.loads(fields.get("document", ""))
        except ValueError:
            raise InvalidProposal("the proposed document is not JSON") from None
        wrapped = isinstance(document, dict) and isinstance(document.get("rules"), dict) and "version" not in document
        body["rules"] = document["rules"] if wrapped else document
    try:
        return WhatIfIn.model_validate(body)
    except ValidationError as exc:
        raise InvalidProposal(describe(exc)) from None


def changed(summary: dict[str, Any] | None) -> list[tuple[str, dict[str, Any]]]:
    """The participants whose dollars, files, quarters or Milestone 1 the version changes (the report's rows)."""
    return [(pid, row) for pid, row in (summary or {}).get("participants", {}).items()
            if row["difference"] != "0.00" or row["files"] or row["quarters"] or row["milestone1"]]


def proposal(body: WhatIfIn) -> tuple[RulesDocument | None, Quarter | None, Quarter | None]:
    """The parsed document and quarters, or 422 naming the field."""
    try:
        proposed = parse_document(body.rules) if body.rules is not None else None
    except InvalidRulesDocument as exc:
        raise InvalidProposal(f"rules: {exc}") from None
    try:
        first, last = quarters(body.from_, body.to)
    except ValueError as exc:
        raise InvalidProposal(f"from/to: {exc}") from None
    return proposed, first, last


class WhatIfJobs:
    """The console's what-if runs, in memory; one at a time on its own thread (the stores are read, never written)."""

    def __init__(self, run: Any = what_if) -> None:
        self._run = run
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="what-if")

    async def rulebook(self) -> RuleBook:
        """The published book, as the what-if reads it (the first store with a what-if hook)."""
        from dsi_shared.service import discover

        spec = next(s for s in discover().values() if s.what_if is not None)

        def read() -> RuleBook:
            store = open_read_only(spec)
            try:
                return store.rulebook()  # type: ignore[attr-defined]
            finally:
                store.close()

        return await asyncio.to_thread(read)

    async def start(self, body: WhatIfIn) -> Job:
        proposed, first, last = proposal(body)
        try:  # checked now, not in the job: an unknown version is 404, a refused calendar 422
            the_proposal(await self.rulebook(), proposed, body.published)
        except InvalidRulesDocument as exc:
            raise InvalidProposal(f"rules: {exc}") from None
        job = Job(uuid.uuid4().hex, proposed.version if proposed else body.published, body.published is not None,
                  time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), document=body.rules)
        with self._lock:
            self._jobs[job.id] = job
            while len(self._jobs) > KEEP_JOBS:
                self._jobs.popitem(last=False)
        self._executor.submit(self._work, job, proposed, body.published, first, last)
        return job

    def _work(self, job: Job, proposed: RulesDocument | None, published: str | None, first: Quarter | None,
              last: Quarter | None) -> None:
        try:
            job.summary = self._run(proposed, published, first, last)
            job.status = "done"
        except Exception as exc:  # noqa: BLE001 - a failed run is the job's answer, never a crash of the console
            job.error, job.status = describe(exc), "failed"  # field names and kinds only, never values
            log.warning("what-if %s failed: %s", job.id, job.error)

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)
