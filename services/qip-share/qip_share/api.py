"""qip-share HTTP API: QIP reference data (entities, value sets, sensitivity policy, requirements), source feeds,
legal bases, deliveries (FHIR Bulk Data style: kick-off, status, manifest, NDJSON files) and each member's
accounting of disclosures."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any, Literal
from uuid import UUID

from dsi_shared.errors import Unprocessable
from dsi_shared.events import to_jsonable
from dsi_shared.http import Auth, problem, read_body
from dsi_shared.identifiers import Identifiers
from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from qip_share import responses as out
from qip_share.application import QipShare
from qip_share.deliveries_api import delivery_routes, feed_routes
from qip_share.policy import BadPolicy
from qip_share.reference import QipEntity
from qip_share.valuesets import BadValueSet, capped, from_csv, from_fhir

MAX_VALUE_SET_BYTES = 50 * 1024 * 1024


class Partner(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=2, max_length=200)
    identifiers: Identifiers = {}
    address: str = Field(min_length=5, max_length=500)
    endpoint: str = Field(min_length=5, max_length=500)
    covered_entity: bool = Field(False, description=(
        "the partner is itself a HIPAA covered entity (it then receives under 164.506(c)(4)); otherwise, the default, "
        "it receives through the DMPH, as its business associate"))


class EntityForm(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["DPH", "DMPH"]
    name: str = Field(min_length=2, max_length=200)
    identifiers: Identifiers = Field(min_length=1, description="e.g. {\"npi\": \"...\", \"oshpd\": \"...\"} "
                                                              "(an `npi` must carry its check digit)")
    address: str = Field(min_length=5, max_length=500, description="for the accounting of disclosures (164.528)")
    endpoint: str = Field(min_length=5, max_length=500, description="where deliveries go (SFTP or HTTPS URL)")
    community_partners: list[Partner] = []
    participating: bool = Field(True, description=(
        "the state lists it as a participating DPH/DMPH system (only participants receive deliveries); entities are "
        "registered from that list, hence the default"))


class ParticipationForm(BaseModel):
    model_config = ConfigDict(extra="forbid")
    participating: bool
    reason: str = Field(min_length=3, max_length=1000, description="e.g. the state's list of participating entities")


class PolicyForm(BaseModel):
    model_config = ConfigDict(extra="forbid")
    policy: dict[str, Any]
    reason: str = Field(min_length=3, max_length=1000)


def entity_view(entity: QipEntity) -> dict[str, Any]:
    return {"id": str(entity.id), "kind": entity.kind, "name": entity.name, "identifiers": entity.identifiers,
            "address": entity.address, "endpoint": entity.endpoint, "community_partners": entity.community_partners,
            "participating": entity.participating, "participation": to_jsonable(entity.participation),
            "recipients": entity.recipients}


def routes(app: QipShare, auth: Auth) -> APIRouter:
    router = APIRouter(tags=["qip-share"])
    staff = auth.require("program-staff")
    staff_actor = auth.require_actor("program-staff")
    readers = auth.require("program-staff", "auditor")

    @router.post("/entities", status_code=201, dependencies=[Depends(staff)], response_model=out.EntityView,
                 responses={201: {"links": {"GetEntity": {  # the id flows on (OpenAPI links)
                     "operationRef": "#/paths/~1entities~1{entity_id}/get",
                     "parameters": {"entity_id": "$response.body#/id"}}}}})
    def register(form: EntityForm) -> dict[str, Any]:
        return entity_view(app.register_entity(form.kind, form.name, form.identifiers, form.address, form.endpoint,
                                               [p.model_dump() for p in form.community_partners], form.participating))

    @router.post("/entities/{entity_id}/participation", response_model=out.ParticipationChanged)
    def participation(entity_id: UUID, form: ParticipationForm, actor: str = Depends(staff_actor)) -> dict[str, Any]:
        entity, changed = app.record_participation(entity_id, form.participating, form.reason, actor, datetime.now(UTC))
        return {**entity_view(entity), "changed": changed}

    @router.get("/entities", dependencies=[Depends(readers)], response_model=out.EntityList)
    def entities() -> dict[str, Any]:
        found = app.entities()
        return {"count": len(found), "entities": [entity_view(e) for e in found]}

    @router.get("/entities/{entity_id}", dependencies=[Depends(readers)], response_model=out.EntityView)
    def entity(entity_id: UUID) -> dict[str, Any]:
        return entity_view(app.entity(entity_id))

    @router.post("/value-sets", dependencies=[Depends(staff)], response_model=out.ValueSetUpload)
    async def publish(request: Request, version: str | None = Query(None, min_length=1, max_length=60, description=(
            "version for a CSV without a value_set_version column, or a ValueSet without one"))) -> Any:
        body = await read_body(request, MAX_VALUE_SET_BYTES)
        is_json = "json" in request.headers.get("content-type", "") or body.lstrip()[:1] == b"{"
        try:
            report = from_fhir(body, version or "") if is_json else from_csv(body, version or "")
        except BadValueSet as exc:  # each code it could not use, and why (reference data, not PHI)
            return problem(422, "Unprocessable Content", str(exc), **capped(exc.errors))
        if any(not s.version for s in report.value_sets):
            raise Unprocessable("the file names no version (ValueSet.version or a value_set_version column): pass ?version=")
        published = await asyncio.to_thread(app.publish_value_sets, report, "fhir" if is_json else "csv",
                                            datetime.now(UTC))
        return {"value_sets": published, **capped(report.errors)}

    @router.get("/value-sets", dependencies=[Depends(readers)], response_model=out.Catalog)
    def catalog() -> dict[str, Any]:
        current = app.catalog()
        return {"value_sets": [{"url": url, "name": current.names[url], "current_version": version,
                                "versions": current.history[url]} for url, version in sorted(current.current.items())]}

    @router.get("/value-sets/version", dependencies=[Depends(readers)], response_model=out.ValueSetVersionView)
    def value_set(url: str, version: str) -> dict[str, Any]:
        found = app.value_set(url, version)
        return {"url": found.url, "name": found.name, "version": found.value_set_version, "codes": found.code_count,
                "digest": found.digest, "source": found.source, "published_at": found.published_at.isoformat()}

    @router.get("/sensitivity-policy", dependencies=[Depends(readers)], response_model=out.PolicyView)
    def policy() -> dict[str, Any]:
        current = app.policy()
        return {"current_version": current.current_version, "versions": sorted(current.versions),
                "policy": to_jsonable(current.current)}

    @router.post("/sensitivity-policy", dependencies=[Depends(staff)], response_model=out.PolicyPublished)
    def publish_policy(form: PolicyForm) -> dict[str, Any]:
        try:
            changed = app.publish_policy(form.policy, form.reason)
        except BadPolicy as exc:
            raise Unprocessable(str(exc)) from None
        return {"version": form.policy.get("version"), "published": changed}

    feed_routes(router, app, auth)
    delivery_routes(router, app, auth)
    return router
