"""Every service answers what its OpenAPI says (issue 12 §5): schemathesis generates requests for each operation of
each service on the real stack (NATS, PostgreSQL), and checks every answer: no 5xx, a documented status and content
type, and a body that matches the documented schema. Response models forbid fields they do not name, so a field a
route returns without documenting it fails here (and in the route: 500), never passes unseen.

Bounded and deterministic: a few derandomized examples per operation, no example database, no deadline. Hypothesis
runs in a worker thread; each request goes through the service's ASGI app on the test's event loop. Path parameters
naming a participant, entity or submission get one that exists, so the 200 bodies are checked, not only 404s."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from dsi_shared.config import Settings
from dsi_shared.http import Answer
from dsi_shared.service import ServiceRuntime, discover
from enrollment import responses as enrollment_out
from hypothesis import HealthCheck, Phase, given, settings
from pydantic import ValidationError
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.harness import STAFF, Stack
from tests.hl7_corpus import combined

SERVICES = ("enrollment", "submissions", "milestones", "payments", "qip-share")
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
EXAMPLES = 5  # per operation: ~80 operations, the whole file well under a minute
AUDITOR = {"Authorization": "Bearer auditor-token"}
ENTITY = {"kind": "DPH", "name": "County Health System", "identifiers": {"oshpd": "106440001"},
          "address": "1 Main St, Salinas CA", "endpoint": "sftp://county.example/in"}
Send = Callable[[Case], httpx.Response]


def explore(schema: schemathesis.BaseSchema, send: Send, only: str | None = None) -> list[str]:
    """Run every operation (or the one whose label is `only`) and return what failed, one line per operation."""
    failures: list[str] = []
    for result in schema.get_all_operations():
        if not isinstance(result, Ok):  # an operation schemathesis cannot read is itself a failure
            failures.append(f"unreadable operation: {result.err()}")
            continue
        operation = result.ok()
        if only is not None and operation.label != only:
            continue

        @given(case=operation.as_strategy(generation_mode=GenerationMode.POSITIVE))
        @settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
                  phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
        def run(case: Case) -> None:
            case.validate_response(send(case), checks=CHECKS)

        try:
            run()
        except (Exception, schemathesis.errors.FailureGroup) as exc:  # noqa: BLE001 - collected, then all reported
            failures.append(f"{operation.label}: {exc}")
    return failures


def sender(stack: Stack, service: str, loop: asyncio.AbstractEventLoop, known: dict[str, str]) -> Send:
    """Send a case (from the worker thread) through the service's client on the test's loop, as staff (the auditor
    for the audit and metrics routes), with known ids in place of generated ones."""
    client = stack.clients[service]

    def send(case: Case) -> httpx.Response:
        for name in set(case.path_parameters or {}) & set(known):
            case.path_parameters[name] = known[name]
        request = case.as_transport_kwargs(base_url=str(client.base_url))
        headers = AUDITOR if case.path.startswith(("/audit", "/metrics")) else STAFF
        body: dict[str, Any] = {}
        if "json" in request:
            body["json"] = request["json"]
        elif isinstance(request.get("data"), str | bytes):
            body["content"] = request["data"]
        elif request.get("data") is not None:
            body["data"] = request["data"]
        call = client.request(request["method"], request["url"], params=request.get("params"),
                              headers={**request.get("headers", {}), **headers}, **body)
        return asyncio.run_coroutine_threadsafe(call, loop).result(30)

    return send


async def seeded(stack: Stack) -> dict[str, str]:
    """One participant, one QIP entity and one HL7 submission: ids the generated requests then use."""
    participant_id = await stack.register()
    entity = await stack.clients["qip-share"].post("/entities", json=ENTITY, headers=STAFF)
    hl7 = await stack.clients["submissions"].post("/hl7", content=combined("A01", "91000001A").encode(), headers=STAFF)
    assert entity.status_code == 201 and hl7.status_code == 200, (entity.text, hl7.text)
    return {"participant_id": participant_id, "entity_id": entity.json()["id"],
            "submission_id": hl7.json()["submissions"][0]["id"]}


@pytest.mark.integration
# The services' own tasks (NATS clients) use `random` on the loop while Hypothesis draws in the worker thread; it
# takes that for a strategy using `random`. Generation itself is derandomized.
@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")
async def test_every_operation_of_every_service_answers_its_documented_schema(stack: Stack) -> None:
    await stack.start(*SERVICES)
    known, loop = await seeded(stack), asyncio.get_running_loop()
    failures: list[str] = []
    for service in SERVICES:
        schema = schemathesis.openapi.from_dict(stack.runtimes[service].http.openapi())
        failures += await asyncio.to_thread(explore, schema, sender(stack, service, loop, known))
    assert not failures, "\n\n".join(failures)


@pytest.mark.integration
async def test_a_field_missing_from_the_documented_schema_fails_the_conformance_check(stack: Stack) -> None:
    await stack.start("enrollment")
    known = {"participant_id": await stack.register()}
    document = copy.deepcopy(stack.runtimes["enrollment"].http.openapi())
    detail = document["components"]["schemas"]["ParticipantDetail"]
    del detail["properties"]["status"]  # a model without `status`; the route still sends it
    detail["required"].remove("status")
    schema = schemathesis.openapi.from_dict(document)
    send = sender(stack, "enrollment", asyncio.get_running_loop(), known)
    failures = await asyncio.to_thread(explore, schema, send, "GET /participants/{participant_id}")
    assert len(failures) == 1 and "violates schema" in failures[0] and "'status' was unexpected" in failures[0], failures


def typed(schema: dict[str, Any] | None) -> bool:
    """A named model, a map of named models, or a non-JSON string body: not `{}` nor an open object."""
    schema = schema or {}
    values = schema.get("additionalProperties")
    return "$ref" in schema or (isinstance(values, dict) and "$ref" in values) or schema.get("type") == "string"


# Served byte for byte as recorded (a FHIR Bulk Data manifest, its own specification's document).
OPEN_BODIES = {"qip-share get /deliveries/{delivery_id}/manifest 200 application/json"}


def test_every_success_response_of_every_service_documents_its_body(tmp_path: Path) -> None:
    untyped = []
    for name, spec in discover().items():
        settings = Settings(name, spec.default_port, store=f"sqlite:///{tmp_path / name}.db")
        for path, operations in ServiceRuntime(spec, settings).http.openapi()["paths"].items():
            for method, operation in operations.items():
                for code, response in operation["responses"].items():
                    content = response.get("content") or {"": {}}
                    untyped += [f"{name} {method} {path} {code} {media}" for media, body in content.items()
                                if code.startswith("2") and not typed(body.get("schema"))]
    assert set(untyped) == OPEN_BODIES, untyped


def test_response_models_forbid_fields_they_do_not_name() -> None:
    early = {"participant_id": None, "held_until_interest_form": True}
    assert enrollment_out.EarlySignature.model_validate(early).held_until_interest_form
    with pytest.raises(ValidationError, match="extra"):
        enrollment_out.EarlySignature.model_validate({**early, "npi": "1234567893"})
    assert enrollment_out.Participant.model_json_schema()["additionalProperties"] is False
    with pytest.raises(ValidationError):  # strict: a number is not coerced to the documented string
        enrollment_out.Published.model_validate({"version": 2024, "changed": True})
    assert Answer.model_config.get("extra") == "forbid"
