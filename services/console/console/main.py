"""Composition root of the console. It publishes nothing and commands the other services through their HTTP APIs
(`commands.py`); it builds its own read models from the public event streams (`feeds.py` → `overview.py`,
`activity.py` → `readmodel.py`: tracking consumers, exactly once) and reads the rest from the services' APIs
(`reads.py`); its pages are `web.py`'s. The runtime gives it `/healthz`, `/readyz` and `/metrics` (its consumers' and
read models' lag) like every service."""

from __future__ import annotations

from functools import cached_property
from typing import Any

from dsi_shared.contracts import Contract
from dsi_shared.errors import NotFound
from dsi_shared.http import Auth
from dsi_shared.service import ServiceSpec
from dsi_shared.store import ServiceApplication
from fastapi import APIRouter, Depends, Response

from console.feeds import SUBSCRIPTIONS
from console.readmodel import PROJECTIONS
from console.whatif import KEEP_JOBS, WhatIfIn, WhatIfJob, WhatIfJobs

CONTRACT = Contract("console", ())


class ConsoleStore(ServiceApplication):
    """The console's store: the participant overviews, files' verdicts, coverage evaluations and closed quarters its
    consumers keep from the streams (`overview`, `activity`), with the tracking records of the messages that made
    them."""

    name = "console"

    @cached_property
    def what_ifs(self) -> WhatIfJobs:
        """The what-if runs, shared by the bearer API below and the rules pages."""
        return WhatIfJobs()


def routes(app: ConsoleStore, auth: Auth) -> APIRouter:
    """Its pages are `web.py`'s, behind a session cookie; its one bearer API is the what-if, for program staff
    (auditors re-derive what was paid with `dsi audit replay`; a what-if is staff's preview of a rules version)."""
    router = APIRouter()
    staff = auth.require("program-staff")

    @router.post("/program-rules/what-if", dependencies=[Depends(staff)], tags=["program rules"], status_code=202,
                 response_model=WhatIfJob, responses={202: {"description": "running: GET its Location until done"}})
    async def start(body: WhatIfIn, response: Response) -> Any:
        """Start a what-if of a proposed document, or of a published version ("already-paid results that it
        changes are shown as differences for staff (never silently rewritten)"). Nothing is recorded."""
        job = await app.what_ifs.start(body)
        response.headers["Location"] = f"/program-rules/what-if/{job.id}"
        return job.view()

    @router.get("/program-rules/what-if/{job_id}", dependencies=[Depends(staff)], tags=["program rules"],
                response_model=WhatIfJob)
    def job(job_id: str) -> Any:
        """running, done (with the summary `dsi rules what-if --json` prints) or failed (with why)."""
        found = app.what_ifs.get(job_id)
        if found is None:
            raise NotFound(f"no such what-if job (jobs are kept in memory, the latest {KEEP_JOBS})")
        return found.view()

    return router


service = ServiceSpec(
    name="console",
    default_port=8100,
    application=ConsoleStore,
    routes=routes,
    contract=CONTRACT,
    subscriptions=SUBSCRIPTIONS,
    projections=PROJECTIONS,
)
