"""The console's pages and forms, by role. Reads go through `reads`, commands through `commands`; every form is
CSRF-checked (`Console.form`) and every route that takes a participant id checks it is the user's to see."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
from datetime import datetime
from typing import Any

from dsi_shared.config import PROVIDER
from dsi_shared.plantime import PLAN_ZONE
from dsi_shared.rulebook import calendar_of
from dsi_shared.whatif import UnknownVersion
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from console import commands, plain, reads, statement_pdf
from console.chart import coverage_chart, files_chart, paid_chart
from console.filters import InvalidAmount, dollars
from console.readmodel import Filters
from console.sessions import LOGIN_CSRF_COOKIE, SESSION_COOKIE
from console.upstream import SERVICES
from console.web import HOME, Console, Refused, sign_in_as
from console.whatif import InvalidProposal, Job, WhatIfJobs, from_form
from console.whatif import changed as rows_changed

STAFF, AUDITOR, OPS = "program-staff", "auditor", "ops"
READERS = (STAFF, AUDITOR)
QUARTER = re.compile(r"^\d{4}Q[1-4]$")
AGREEMENTS = ("LOA", "DSA", "HIE")


def see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def quarter_of(text: str) -> str:
    if not QUARTER.match(text):
        raise Refused(404, "No such quarter.")
    return text


def split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def install(app: FastAPI, console: Console) -> None:
    # -- sign-in ---------------------------------------------------------------------------------------------------
    @app.get("/login", response_class=HTMLResponse)
    async def login(request: Request) -> Response:
        csrf = secrets.token_urlsafe(32)
        response = console.page(request, "login.html", csrf=csrf, error=None)
        response.set_cookie(LOGIN_CSRF_COOKIE, csrf, httponly=True, samesite="strict", secure=secure(request))
        return response

    @app.post("/login", response_class=HTMLResponse)
    async def do_login(request: Request) -> Response:
        fields = await console.form(request, None)
        signed = await sign_in_as(console, fields.get("token", ""))
        if isinstance(signed, str):
            csrf = request.cookies.get(LOGIN_CSRF_COOKIE, "")
            return console.page(request, "login.html", 401, csrf=csrf, error=signed)
        cookie, session = signed
        response = see_other(HOME[session.role])
        response.set_cookie(SESSION_COOKIE, cookie, httponly=True, samesite="strict", secure=secure(request),
                            max_age=8 * 3600)
        response.delete_cookie(LOGIN_CSRF_COOKIE, httponly=True, samesite="strict")
        return response

    @app.post("/logout")
    async def logout(request: Request) -> Response:
        session = console.session(request)
        await console.form(request, session)
        console.sessions.close(request.cookies.get(SESSION_COOKIE))
        response = see_other("/login")
        response.delete_cookie(SESSION_COOKIE, httponly=True, samesite="strict")
        return response

    @app.get("/")
    async def home(request: Request) -> Response:
        return see_other(HOME[console.session(request).role])

    # -- program staff and auditors --------------------------------------------------------------------------------
    @app.get("/participants", response_class=HTMLResponse)
    async def participants(request: Request, q: str = "", provider_type: str = "", county: str = "", status: str = "",
                           milestone1: str = "", paid_min: str = "", paid_max: str = "") -> Response:
        session = console.session(request, *READERS)
        try:
            low, high = dollars(paid_min, "Paid at least"), dollars(paid_max, "Paid at most")
        except InvalidAmount as exc:
            raise Refused(422, str(exc)) from None
        rows = await reads.participants(console.runtime, Filters(provider_type, county, status, q, milestone1, low, high))
        filters = {"q": q, "provider_type": provider_type, "county": county, "status": status, "milestone1": milestone1,
                   "paid_min": paid_min, "paid_max": paid_max}
        partial = request.headers.get("HX-Request") == "true"
        return console.page(request, "participants_table.html" if partial else "participants.html",
                            rows=rows, filters=filters, types=await provider_types(console, session.token))

    @app.get("/participants/new", response_class=HTMLResponse)
    async def new_participant(request: Request) -> Response:
        session = console.session(request, STAFF)
        return console.page(request, "interest_form.html", types=await provider_types(console, session.token))

    @app.post("/participants")
    async def register(request: Request) -> Response:
        session = console.session(request, STAFF)
        f = await console.form(request, session)
        form = {"legal_name": f.get("legal_name", ""), "npi": f.get("npi") or None, "tin": f.get("tin") or None,
                "provider_type": f.get("provider_type", ""), "counties": split(f.get("counties", "")),
                "ehr_product": f.get("ehr_product") or None, "is_hospital": f.get("is_hospital") == "yes",
                "manages_ehr": f.get("manages_ehr") == "yes", "sending_facilities": split(f.get("sending_facilities", "")),
                "contact_email": f.get("contact_email", ""), "submitted_on": f.get("submitted_on", "")}
        created = await commands.register(console.up, session.token, form)
        return see_other(f"/participants/{created['id']}")

    @app.get("/participants/{pid}", response_class=HTMLResponse)
    async def participant(request: Request, pid: str) -> Response:
        session = console.session(request, *READERS)
        shown = await reads.participant(console.up, session.token, pid)
        if shown is None:
            raise Refused(404, "No such participant.")
        corrections = await reads.corrections_reaching(console.up, session.token, shown) if session.role == STAFF else []
        return console.page(request, "participant.html", **shown, plain=plain, agreements=AGREEMENTS,
                            may_write=session.role == STAFF, corrections=corrections)

    @app.post("/participants/{pid}/agreements")
    async def sign(request: Request, pid: str) -> Response:
        session = console.session(request, STAFF)
        f = await console.form(request, session)
        await commands.sign(console.up, session.token, pid, f.get("agreement", ""), f.get("signed_at", ""),
                            f.get("document_id", ""))
        return see_other(f"/participants/{pid}#agreements")

    @app.post("/participants/{pid}/acceptance")
    async def accept(request: Request, pid: str) -> Response:
        session = console.session(request, STAFF)
        f = await console.form(request, session)
        await commands.accept_all(console.up, session.token, pid, f.get("reason", ""))
        return see_other(f"/participants/{pid}#agreements")

    @app.post("/participants/{pid}/reviews")
    async def review(request: Request, pid: str) -> Response:
        session = console.session(request, STAFF)
        f = await console.form(request, session)
        await commands.review(console.up, session.token, pid, f.get("agreement", ""), f.get("document_id", ""),
                              f.get("decision", ""), f.get("reason", ""))
        return see_other(f"/participants/{pid}#agreements")

    @app.get("/quarters", response_class=HTMLResponse)
    async def quarters(request: Request, q: str = "") -> Response:
        console.session(request, *READERS)
        if q:
            return see_other(f"/quarters/{quarter_of(q.strip().upper())}")
        return console.page(request, "quarters.html")

    @app.get("/quarters/{quarter}", response_class=HTMLResponse)
    async def quarter(request: Request, quarter: str) -> Response:
        session = console.session(request, *READERS)
        shown = await reads.quarter(console.up, session.token, quarter_of(quarter))
        return console.page(request, "quarter.html", quarter=quarter, closed=shown, may_write=session.role == STAFF)

    @app.post("/quarters/{quarter}/close")
    async def close(request: Request, quarter: str) -> Response:
        session = console.session(request, STAFF)
        await console.form(request, session)
        await commands.close_quarter(console.up, session.token, quarter_of(quarter))
        return see_other(f"/quarters/{quarter}")

    @app.post("/evaluations/{evaluation_id}/decision")
    async def decide(request: Request, evaluation_id: str) -> Response:
        session = console.session(request, STAFF)
        f = await console.form(request, session)
        if f.get("decision") not in {"validate", "reject"}:
            raise Refused(422, "Choose validate or reject.")
        decided = await commands.decide(console.up, session.token, evaluation_id, f["decision"], f.get("reason", ""))
        return see_other(f"/quarters/{decided['quarter']}#evaluations")

    @app.get("/quarters/{quarter}/export.csv")
    async def export(request: Request, quarter: str) -> Response:
        session = console.session(request, *READERS)
        body, etag = await reads.export(console.up, session.token, quarter_of(quarter))
        return Response(body, media_type="text/csv", headers={
            "Content-Disposition": f'attachment; filename="dsi-ap-export-{quarter}.csv"', "ETag": etag})

    @app.get("/charts", response_class=HTMLResponse)
    async def charts(request: Request, quarter: str = "") -> Response:
        console.session(request, *READERS)
        await reads.settled(console.runtime)  # once for the page: every chart is the console's read models'
        shown = quarter_of(quarter.strip().upper()) if quarter.strip() else await reads.latest_quarter(console.runtime)
        paid, weeks, covered = await asyncio.gather(
            reads.paid_by_type(console.runtime, settle=False), reads.files_by_week(console.runtime),
            reads.coverage(console.runtime, shown) if shown else asyncio.sleep(0, []))
        return console.page(request, "charts.html", chart=paid_chart(paid), paid=paid, weeks=weeks,
                            files=files_chart(weeks), quarter=shown or "", covered=covered,
                            coverage=coverage_chart(covered, shown or "any quarter"))

    @app.get("/qip", response_class=HTMLResponse)
    async def qip(request: Request) -> Response:
        session = console.session(request, *READERS)
        return console.page(request, "qip.html", **await reads.qip(console.up, session.token))

    # -- program rules: the versions and the what-if (issue 11 §5), staff only ------------------------------------
    @app.get("/rules", response_class=HTMLResponse)
    async def rules(request: Request) -> Response:
        session = console.session(request, STAFF)
        return console.page(request, "rules.html", versions=await reads.rules(console.up, session.token))

    @app.post("/rules/what-if")
    async def run_what_if(request: Request) -> Response:
        """A proposed document, or a published correction: "the change visible in the participant's history and
        in the what-if report (§5) before it is published"."""
        session = console.session(request, STAFF)
        fields = await console.form(request, session)
        job = await start_what_if(console, fields)
        pid = fields.get("participant", "")  # from a participant's page: its row in the report
        return see_other(f"/rules/what-if/{job.id}" + (f"#p-{pid}" if reads.UUID_TEXT.match(pid) else ""))

    @app.get("/rules/what-if/{job_id}", response_class=HTMLResponse)
    async def what_if_job(request: Request, job_id: str) -> Response:
        console.session(request, STAFF)
        job = jobs(console).get(job_id)
        if job is None:
            raise Refused(404, "No such what-if (they are kept in memory: run it again).")
        changed = rows_changed(job.summary)
        partial = request.headers.get("HX-Request") == "true"
        return console.page(request, "whatif_job.html" if partial else "whatif.html", job=job, changed=changed,
                            names=await reads.names(console.runtime) if changed else {})

    # -- auditors and operators ------------------------------------------------------------------------------------
    @app.get("/audit", response_class=HTMLResponse)
    async def audit(request: Request, run: str = "") -> Response:
        session = console.session(request, AUDITOR, OPS)
        results = await reads.audit(console.up, session.token) if run else None
        return console.page(request, "audit.html", results=results)

    @app.get("/operations", response_class=HTMLResponse)
    async def operations(request: Request) -> Response:
        session = console.session(request, OPS, AUDITOR)
        (letters, unreadable), services = await asyncio.gather(reads.dead_letters(console.up, session.token),
                                                               reads.health(console.up, session.token))
        viewer = os.environ.get("DSI_TRACE_URL")
        for letter in letters:
            letter["trace_url"] = reads.trace_link(viewer, letter["trace_id"])
        return console.page(request, "operations.html", services=services, letters=letters, unreadable=unreadable,
                            may_replay=session.role == OPS, replayed=request.query_params.get("replayed", ""))

    @app.post("/operations/replay")
    async def replay(request: Request) -> Response:
        """One dead letter replayed by its own service (`POST /dead-letters/{sequence}/replay`), as the operator."""
        session = console.session(request, OPS)
        f = await console.form(request, session)
        service, sequence = f.get("service", ""), f.get("sequence", "")
        if service not in SERVICES or not sequence.isdigit():
            raise Refused(422, "Name a service and a dead letter's sequence number.")
        done = await commands.replay_dead_letter(console.up, session.token, service, int(sequence))
        return see_other(f"/operations?replayed={done['sequence']}#dead-letters")

    # -- a provider's own statement --------------------------------------------------------------------------------
    @app.get("/statement")
    async def statement_home(request: Request) -> Response:
        session = console.session(request, PROVIDER)
        return see_other(f"/statement/{sorted(session.participants)[0]}")

    @app.get("/statement/{pid}", response_class=HTMLResponse)
    async def statement(request: Request, pid: str) -> Response:
        session = console.session(request, PROVIDER)
        shown = await reads.participant(console.up, console.reader(session), console.own(session, pid))
        if shown is None:
            raise Refused(404, "No such page.")
        return console.page(request, "statement.html", **shown, plain=plain, quarter=None)

    async def quarter_shown(request: Request, pid: str, quarter: str) -> tuple[dict[str, Any], Any, str]:
        """A provider's own participant page as read for one quarter's statement, with the program's calendar."""
        session = console.session(request, PROVIDER)
        token = console.reader(session)
        shown = await reads.participant(console.up, token, console.own(session, pid))
        if shown is None:
            raise Refused(404, "No such page.")
        return shown, calendar_of(await console.up.get("enrollment", "/program-rules", token)), quarter_of(quarter)

    @app.get("/statement/{pid}/{quarter}", response_class=HTMLResponse)
    async def quarter_statement(request: Request, pid: str, quarter: str) -> Response:
        shown, calendar, named = await quarter_shown(request, pid, quarter)
        return console.page(request, "statement.html", **shown, plain=plain, quarter=named, calendar=calendar)

    @app.get("/statement/{pid}/{quarter}/pdf")
    async def quarter_statement_pdf(request: Request, pid: str, quarter: str) -> Response:
        shown, calendar, named = await quarter_shown(request, pid, quarter)
        document = await asyncio.to_thread(statement_pdf.render, statement_pdf.rows(shown, named, calendar),
                                           datetime.now(PLAN_ZONE))
        name = f"statement-{shown['participant'].get('npi') or 'participant'}-{named}.pdf"
        return Response(document, media_type="application/pdf",
                        headers={"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"})


def secure(request: Request) -> bool:
    """Cookies are Secure when the console is reached over https (directly or behind a TLS-terminating proxy)."""
    return request.url.scheme == "https" or request.headers.get("x-forwarded-proto") == "https"


async def provider_types(console: Console, token: str) -> list[tuple[str, str]]:
    rules = await console.up.get("enrollment", "/program-rules", token)
    types: dict[str, Any] = ((rules or {}).get("in_force") or (rules or {}).get("current") or {}).get("provider_types", {})
    return sorted((name, row.get("label", name)) for name, row in types.items())


def jobs(console: Console) -> WhatIfJobs:
    from console.main import ConsoleStore

    store = console.runtime.app
    assert isinstance(store, ConsoleStore)
    return store.what_ifs


async def start_what_if(console: Console, fields: dict[str, str]) -> Job:
    try:
        return await jobs(console).start(from_form(fields))
    except InvalidProposal as exc:
        raise Refused(422, str(exc)) from None
    except UnknownVersion as exc:
        raise Refused(404, str(exc)) from None
