"""Staff imports (issue 15 §2): the members roster (CSV or X12 834), PCP and QIP attributions (CSV or a Da Vinci
ATR list) and the DxF DSA signatory list, each uploaded as a multipart form (CSRF-checked), streamed to enrollment's
import route, and answered with its per-line report.

A report shows counts and, per line, the outcome and enrollment's reason: reasons name the field and the problem,
never the value (rows hold PHI), and nothing from the file itself is echoed back."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response
from starlette.datastructures import UploadFile

from console import commands
from console.upstream import UpstreamError
from console.web import Console, Refused, check_csrf

STAFF = "program-staff"
# enrollment's own limit (the same setting), and room for the form's other fields
MAX_UPLOAD_BYTES = int(os.environ.get("DSI_MAX_UPLOAD_BYTES", str(40 * 1024 * 1024))) + 64 * 1024
CHUNK = 64 * 1024


@dataclass(frozen=True)
class Kind:
    """One import: its enrollment route, the content type it is sent as, and the query fields the form may set."""

    name: str
    title: str
    path: str
    content_type: str
    params: dict[str, tuple[str, ...]]  # form field → the values enrollment takes ("" = leave it to enrollment)


KINDS = {k.name: k for k in (
    Kind("members", "Members (eligibility roster)", "/members/import", "text/csv", {"format": ("", "csv", "834")}),
    Kind("attributions", "Attributions (PCP or QIP entity)", "/attributions/import", "text/csv",
         {"kind": ("pcp", "qip"), "format": ("", "csv", "atr")}),
    Kind("dsa-signatories", "DSA signatory list", "/agreements/dsa-signatories", "text/csv", {"list_date": ()}),
)}


@dataclass(frozen=True)
class Line:
    line: int
    outcome: str  # accepted, not applied, rejected
    reason: str
    participant_id: str | None = None


def report_lines(kind: str, report: dict[str, Any]) -> list[Line]:
    """Every line the report names, in file order: rejected lines with their reason, lines not applied and why,
    accepted lines with a note (a leniency, or how a signatory was matched). Lines accepted as they were are only
    counted."""
    lines = [Line(e["line"], "rejected", str(e.get("reason", ""))) for e in report.get("errors", [])]
    if kind == "dsa-signatories":
        for r in report.get("results", []):
            by = r.get("matched_by")
            if r["outcome"] == "unmatched":
                lines.append(Line(r["line"], "not applied", "no participant has this NPI, TIN or legal name"))
            elif r["outcome"] == "recorded_for_review":
                lines.append(Line(r["line"], "accepted", f"matched by {by} only: DSA signed, left for staff review",
                                  r.get("participant_id")))
            else:
                done = "DSA signed and accepted" if r["outcome"] == "recorded" else "already recorded"
                lines.append(Line(r["line"], "accepted", f"matched by {by}: {done}", r.get("participant_id")))
    else:
        for n in report.get("notes", []):
            outcome = "not applied" if n.get("outcome") == "not_applied" else "accepted"
            lines.append(Line(n["line"], outcome, str(n.get("note", ""))))
    return sorted(lines, key=lambda line: line.line)


def totals(kind: str, report: dict[str, Any]) -> dict[str, int]:
    """Accepted, not applied and rejected lines (they add up to the rows read)."""
    if kind == "dsa-signatories":
        return {"rows": report["rows"], "accepted": report["matched"] + report["weak_matches"],
                "not applied": report["unmatched"], "rejected": report["rejected"]}
    return {"rows": report["rows"], "accepted": report["accepted"], "not applied": report.get("not_applied") or 0,
            "rejected": report["rejected"]}


def query(kind: Kind, fields: dict[str, str]) -> dict[str, str]:
    """The form's choices as enrollment's query parameters; a value it does not take is refused (422)."""
    params: dict[str, str] = {}
    for name, allowed in kind.params.items():
        value = fields.get(name, "").strip()
        if value and allowed and value not in allowed:
            raise Refused(422, f"{name}: choose one of {', '.join(a for a in allowed if a)}.")
        if value:
            params[name] = value
    return params


async def upload(request: Request, csrf: str) -> tuple[dict[str, str], UploadFile]:
    """The multipart form (one file, spooled to disk past 1 MiB by Starlette), refused unless it carries the
    session's CSRF token, declares its length and stays within enrollment's limit."""
    declared = request.headers.get("content-length", "")
    if not declared.isdigit():
        raise Refused(411, "The upload must declare its length.")
    if int(declared) > MAX_UPLOAD_BYTES:
        raise Refused(413, "The file is larger than the 40 MiB an import takes.")
    form = await request.form(max_files=1, max_fields=10)
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    check_csrf(fields, csrf)
    file = form.get("file")
    if not isinstance(file, UploadFile) or not file.filename:
        raise Refused(422, "file: choose a file to upload.")
    return fields, file


async def chunks(file: UploadFile) -> AsyncIterator[bytes]:
    while chunk := await file.read(CHUNK):
        yield chunk


def install(app: FastAPI, console: Console) -> None:
    @app.get("/imports", response_class=HTMLResponse)
    async def imports(request: Request) -> Response:
        console.session(request, STAFF)
        return console.page(request, "imports.html", kinds=KINDS.values(), done=None)

    @app.post("/imports/{kind}", response_class=HTMLResponse)
    async def do_import(request: Request, kind: str) -> Response:
        session = console.session(request, STAFF)
        chosen = KINDS.get(kind)
        if chosen is None:
            raise Refused(404, "No such import.")
        fields, file = await upload(request, session.csrf)
        try:
            report = await commands.upload(console.up, session.token, chosen.path, query(chosen, fields),
                                           chunks(file), chosen.content_type)
        except UpstreamError as exc:
            if exc.status not in {413, 422}:
                raise
            # the file as a whole cannot be read (wrong columns, not UTF-8, not X12): said beside the forms
            return console.page(request, "imports.html", exc.status, kinds=KINDS.values(), done=None,
                                error=f"{chosen.title}: nothing was imported. {exc.detail}")
        finally:
            await file.close()
        done = {"kind": chosen, "report": report, "totals": totals(kind, report), "lines": report_lines(kind, report)}
        return console.page(request, "imports.html", kinds=KINDS.values(), done=done)
