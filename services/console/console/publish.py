"""Publishing a rules version after its what-if (issue 15 §2: "publishing a new one after its what-if report"):
the what-if page of a proposed document offers "Publish this version", which posts that same document, with the
staff's reason, to enrollment's `POST /program-rules`. Enrollment decides: a version that lowers signed terms is
a 409 until staff confirm the lowering (the page then shows what was lowered and the confirmation box); a
malformed one is a 422 naming the field."""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response

from console import commands, reads
from console.pages import STAFF, jobs
from console.upstream import UpstreamError
from console.web import Console, Refused
from console.whatif import changed

# Enrollment's 409 for a lowering: "...(the Letter of Agreement governs): a; b. Preview it with what-if, ..."
LOWERED = re.compile(r"governs\): (?P<what>.+?)\. Preview it")


def lowered_of(status: int, detail: str) -> list[str] | None:
    """What a refused version lowers, item by item, when enrollment refused it for that (409 LowersSignedTerms);
    None for any other refusal. An unexpected wording is shown whole rather than lost."""
    if status != 409 or not detail.startswith("LowersSignedTerms"):
        return None
    found = LOWERED.search(detail)
    return found.group("what").split("; ") if found else [detail]


def install(app: FastAPI, console: Console) -> None:
    @app.post("/rules/what-if/{job_id}/publish")
    async def publish(request: Request, job_id: str) -> Response:
        session = console.session(request, STAFF)
        fields = await console.form(request, session)
        job = jobs(console).get(job_id)
        if job is None or job.document is None or job.status != "done":
            raise Refused(404, "No such what-if of a proposed version (they are kept in memory: run it again).")
        reason, confirm = fields.get("reason", "").strip(), fields.get("confirm_lowering") == "yes"
        form: dict[str, Any] = {"reason": reason, "lowered": None, "error": None}
        try:
            if not reason:
                raise Refused(422, "reason: a rules version needs a reason.")
            await commands.publish_rules(console.up, session.token, job.document, reason, confirm)
        except UpstreamError as exc:
            if exc.status not in {409, 422}:
                raise
            form.update(lowered=lowered_of(exc.status, exc.detail), error=exc.detail, status=exc.status)
        except Refused as exc:
            form.update(error=exc.message, status=exc.status)
        else:
            return RedirectResponse("/rules", status_code=303)
        rows = changed(job.summary)
        return console.page(request, "whatif.html", form["status"], job=job, changed=rows, publish=form,
                            names=await reads.names(console.runtime) if rows else {})
