"""Milestones HTTP API."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from dsi_shared.events import to_jsonable
from dsi_shared.http import Auth
from fastapi import APIRouter, Depends

from milestones.application import Milestones


def routes(app: Milestones, auth: Auth) -> APIRouter:
    router = APIRouter(tags=["milestones"])

    @router.get("/participants/{participant_id}/milestones",
                dependencies=[Depends(auth.require("program-staff", "auditor"))])
    def milestones(participant_id: UUID) -> dict[str, Any]:
        progress = app.progress(participant_id)
        return {
            "participant_id": str(participant_id),
            "eligibility": to_jsonable(progress.eligibility),
            "agreements": to_jsonable(progress.counted_agreements()),
            "milestones": [{"milestone": m, "outcome": "achieved", **to_jsonable(v)} for m, v in progress.achieved.items()]
            + [{"milestone": m, "outcome": "missed", **to_jsonable(v)} for m, v in progress.missed.items()],
        }

    return router
