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
import inspect
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from dsi_shared.config import Settings
from dsi_shared.http import PROBLEM, Answer
from dsi_shared.service import ServiceRuntime, discover
from enrollment import responses as enrollment_out
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Flaky
from hypothesis.stateful import run_state_machine_as_test
from pydantic import ValidationError
from schemathesis import Case, GenerationMode
from schemathesis.checks import CheckContext, not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.core.transport import Response
from schemathesis.engine.errors import is_inconsistent_replay
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.harness import STAFF, Stack
from tests.hl7_corpus import combined

SERVICES = ("enrollment", "submissions", "milestones", "payments", "qip-share")
EXAMPLES = 10  # per operation: ~80 operations, each called as each role that may call it in turn
SCENARIOS, STEPS = 100, 10  # stateful phase, per service: scenarios of up to STEPS linked calls
TOKEN_OF = {"program-staff": "staff", "auditor": "auditor-token", "ops": "ops-token", "hie": "hie-token"}
ENTITY = {"kind": "DPH", "name": "County Health System", "identifiers": {"oshpd": "106440001"},
          "address": "1 Main St, Salinas CA", "endpoint": "sftp://county.example/in"}
Send = Callable[[Case], httpx.Response]


def problem_json(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """Every error is RFC 9457 problem JSON (`application/problem+json`, `type`, `title`, its own `status`)."""
    if response.status_code < 400:
        return None
    media = (response.headers.get("content-type") or [""])[0].split(";")[0].strip()
    assert media == PROBLEM, f"{case.operation.label} answered {response.status_code} as {media!r}, not problem JSON"
    body = response.json()
    assert isinstance(body, dict) and body.get("status") == response.status_code and isinstance(
        body.get("title"), str) and isinstance(body.get("type"), str), f"{case.operation.label}: not a problem: {body}"
    return None


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          problem_json]


@dataclass
class Tally:
    """What the fuzzing did, for the report: operations explored, requests sent, stateful scenarios run."""

    operations: int = 0
    requests: int = 0
    scenarios: int = 0
    scenario_requests: int = 0
    by_role: dict[str, int] = field(default_factory=dict)


def roles_of(app: FastAPI) -> dict[str, tuple[str, ...]]:
    """`METHOD path` → the roles its `Auth.require` dependency admits (read from the dependency itself), so each
    operation is called by callers who may call it; `()` for the open ones (health)."""

    def walk(dependant: Dependant) -> Iterator[tuple[str, ...]]:
        for sub in dependant.dependencies:
            if getattr(sub.call, "__qualname__", "") == "Auth.require.<locals>.dependency":
                yield tuple(inspect.getclosurevars(sub.call).nonlocals["roles"])
            yield from walk(sub)

    def routes(container: Sequence[Any]) -> Iterator[APIRoute]:
        for route in container:
            if isinstance(route, APIRoute):
                yield route
            elif hasattr(route, "original_router"):  # an included router (FastAPI resolves it lazily)
                yield from routes(route.original_router.routes)

    return {f"{method} {route.path}": next(walk(route.dependant), ())
            for route in routes(app.routes) for method in route.methods or ()}


def explore(schema: schemathesis.BaseSchema, send: Send, only: str | None = None, tally: Tally | None = None) -> list[str]:
    """Run every operation (or the one whose label is `only`) and return what failed, one line per operation."""
    failures: list[str] = []
    for result in schema.get_all_operations():
        if not isinstance(result, Ok):  # an operation schemathesis cannot read is itself a failure
            failures.append(f"unreadable operation: {result.err()}")
            continue
        operation = result.ok()
        if only is not None and operation.label != only:
            continue
        if tally is not None:
            tally.operations += 1

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


def explore_links(schema: schemathesis.BaseSchema, send: Send, tally: Tally) -> list[str]:
    """The stateful phase: scenarios that follow the links between operations (the OpenAPI `links` the services
    declare, and those schemathesis infers), each id a response returned fed to the next call; same checks. As in
    schemathesis' own runner, a failing check is recorded and the scenario carries on (nothing is replayed: the
    server keeps state, so a replay could not draw the same), and a run Hypothesis ends as inconsistent stops early."""
    found: list[str] = []

    class Scenario(schema.as_state_machine()):  # type: ignore[misc]
        def setup(self) -> None:
            tally.scenarios += 1

        def call(self, case: Case, **kwargs: Any) -> Response:
            return Response.from_any(send(case))

        def validate_response(self, response: Response, case: Case, additional_checks: Any = None,
                              **kwargs: Any) -> None:
            try:
                case.validate_response(response, checks=CHECKS)
            except (AssertionError, schemathesis.errors.FailureGroup) as exc:
                found.append(f"{case.operation.label}: {exc}")

    try:
        run_state_machine_as_test(Scenario, settings=settings(
            max_examples=SCENARIOS, stateful_step_count=STEPS, derandomize=True, database=None, deadline=None,
            phases=[Phase.generate], suppress_health_check=list(HealthCheck)))
    except schemathesis.errors.NoLinksFound:  # nothing links (payments: its ids come from the bus)
        pass
    except Exception as exc:  # noqa: BLE001 - reported with the others, unless Hypothesis only stopped early
        if not (isinstance(exc, Flaky) or is_inconsistent_replay(exc)):
            found.append(f"stateful: {exc}")
    return sorted(set(found))


def sender(stack: Stack, service: str, loop: asyncio.AbstractEventLoop, known: dict[str, str],
           tally: Tally | None = None) -> Send:
    """Send a case (from the worker thread) through the service's client on the test's loop, as a role that may call
    the operation (each such role in turn), with known ids in place of generated ones."""
    client, roles = stack.clients[service], roles_of(stack.runtimes[service].http)
    calls: dict[str, int] = {}

    def send(case: Case) -> httpx.Response:
        for name in set(case.path_parameters or {}) & set(known):
            case.path_parameters[name] = known[name]
        request = case.as_transport_kwargs(base_url=str(client.base_url))
        key = f"{case.operation.method.upper()} {case.operation.path}"
        allowed = roles.get(key) or ("program-staff",)
        calls[key] = calls.get(key, -1) + 1
        role = allowed[calls[key] % len(allowed)]
        if tally is not None:
            tally.requests += 1
            tally.by_role[role] = tally.by_role.get(role, 0) + 1
        body: dict[str, Any] = {}
        if "json" in request:
            body["json"] = request["json"]
        elif isinstance(request.get("data"), str | bytes):
            body["content"] = request["data"]
        elif request.get("data") is not None:
            body["data"] = request["data"]
        headers = {**request.get("headers", {}), "Authorization": f"Bearer {TOKEN_OF[role]}"}
        call = client.request(request["method"], request["url"], params=request.get("params"), headers=headers, **body)
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
    known, loop, tally = await seeded(stack), asyncio.get_running_loop(), Tally()
    failures: list[str] = []
    for service in SERVICES:
        schema = schemathesis.openapi.from_dict(stack.runtimes[service].http.openapi())
        failures += await asyncio.to_thread(explore, schema, sender(stack, service, loop, known, tally), None, tally)
        before = tally.requests
        failures += [f"{service} {failure}" for failure in await asyncio.to_thread(
            explore_links, schema, sender(stack, service, loop, {}, tally), tally)]
        tally.scenario_requests += tally.requests - before
    print(f"schemathesis: {tally.operations} operations, {tally.requests} requests ({tally.by_role}), "
          f"{tally.scenarios} stateful scenarios ({tally.scenario_requests} of the requests), {len(failures)} failing")
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


@pytest.mark.parametrize(("service", "path", "target"), [
    ("enrollment", "/participants", "/participants/{participant_id}"), ("qip-share", "/entities", "/entities/{entity_id}")])
def test_a_created_id_is_linked_to_the_operation_that_reads_it(tmp_path: Path, service: str, path: str,
                                                                target: str) -> None:
    spec = discover()[service]
    document = ServiceRuntime(spec, Settings(service, spec.default_port, store=f"sqlite:///{tmp_path}/s.db")).http.openapi()
    [link] = document["paths"][path]["post"]["responses"]["201"]["links"].values()
    assert link["operationRef"] == "#/paths/" + target.replace("/", "~1") + "/get"
    assert list(link["parameters"].values()) == ["$response.body#/id"]
    assert "201" in document["paths"][path]["post"]["responses"] and target in document["paths"]
    schema = schemathesis.openapi.from_dict(document)
    assert schema.as_state_machine()  # schemathesis reads the declared links


def test_every_operation_but_health_is_fuzzed_as_the_roles_that_may_call_it(tmp_path: Path) -> None:
    for name in SERVICES:
        spec = discover()[name]
        runtime = ServiceRuntime(spec, Settings(name, spec.default_port, store=f"sqlite:///{tmp_path / name}.db"))
        roles = roles_of(runtime.http)
        operations = {f"{method.upper()} {path}" for path, ops in runtime.http.openapi()["paths"].items() for method in ops}
        assert operations <= set(roles), operations - set(roles)
        unguarded = {op for op in operations if not roles[op]}
        assert unguarded == {"GET /healthz", "GET /readyz"}, unguarded
        assert all(set(roles[op]) <= set(TOKEN_OF) for op in operations - unguarded)


async def test_a_body_that_cannot_be_parsed_is_a_documented_400_problem(tmp_path: Path) -> None:
    """Found by the stateful phase: a JSON body that is not UTF-8 answered 400, a status no operation documented."""
    spec = discover()["qip-share"]
    runtime = ServiceRuntime(spec, Settings("qip-share", spec.default_port, store=f"sqlite:///{tmp_path / 'q.db'}",
                                            tokens_raw="staff:program-staff"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=runtime.http), base_url="http://qip") as client:
        response = await client.post("/entities", content=b".~F\xff\x7f", headers={**STAFF, "content-type": "application/json"})
    assert (response.status_code, response.headers["content-type"]) == (400, PROBLEM)
    assert "400" in runtime.http.openapi()["paths"]["/entities"]["post"]["responses"]


def test_response_models_forbid_fields_they_do_not_name() -> None:
    early = {"participant_id": None, "held_until_interest_form": True}
    assert enrollment_out.EarlySignature.model_validate(early).held_until_interest_form
    with pytest.raises(ValidationError, match="extra"):
        enrollment_out.EarlySignature.model_validate({**early, "npi": "1234567893"})
    assert enrollment_out.Participant.model_json_schema()["additionalProperties"] is False
    with pytest.raises(ValidationError):  # strict: a number is not coerced to the documented string
        enrollment_out.Published.model_validate({"version": 2024, "changed": True})
    assert Answer.model_config.get("extra") == "forbid"
