"""HTTP contract shared by every service: bearer roles, problem JSON, health."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.harness import FORM, STAFF, Stack, eventually, signature

pytestmark = pytest.mark.integration
READY = {"nats": True, "store": True, "consumer_lag": True, "workers": True, "read_model_lag": True}

PROBLEM = "application/problem+json"


@pytest.fixture
async def services(stack: Stack) -> Stack:
    await stack.start("enrollment", "submissions", "milestones", "payments", "qip-share")
    return stack


async def test_every_service_is_live_and_ready_without_a_token(services: Stack) -> None:
    for name, client in services.clients.items():
        assert (await client.get("/healthz")).json() == {"status": "ok", "service": name}

        async def ready(client: Any = client) -> Any:  # readiness asks NATS for consumer lag: a busy machine may time out
            answer = await client.get("/readyz")
            return answer if answer.status_code == 200 else None

        assert (await eventually(ready)).json()["checks"] == READY, name


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic c3RhZmY="}])
async def test_missing_or_unknown_token_is_401_problem(services: Stack, headers: dict[str, str]) -> None:
    response = await services.clients["enrollment"].post("/participants", json=FORM, headers=headers)
    assert response.status_code == 401
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["status"] == 401 and response.headers["www-authenticate"] == "Bearer"


async def test_wrong_role_is_403_problem(services: Stack) -> None:
    pid = await services.register()
    for token in ("auditor-token", "hie-token", "ops-token"):
        response = await services.clients["enrollment"].post(
            f"/participants/{pid}/agreements", json=signature("LOA"), headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 403, token
        assert response.headers["content-type"] == PROBLEM
    # an auditor reads but never writes (the account opens once payments has seen the registration)
    async def audit_read() -> bool:
        read = await services.clients["payments"].get(f"/participants/{pid}/payments",
                                                      headers={"Authorization": "Bearer auditor-token"})
        return read.status_code == 200

    await eventually(audit_read)


async def test_malformed_json_is_422_problem_without_echoing_input(services: Stack) -> None:
    client = services.clients["enrollment"]
    broken = await client.post("/participants", content=b'{"legal_name": "x", ', headers={
        **STAFF, "content-type": "application/json"})
    assert broken.status_code == 422 and broken.headers["content-type"] == PROBLEM
    wrong = await client.post("/participants", json={**FORM, "npi": "12", "submitted_on": "2024-02-30"}, headers=STAFF)
    body = wrong.json()
    assert wrong.status_code == 422
    assert {tuple(e["loc"]) for e in body["errors"]} == {("body", "npi"), ("body", "submitted_on")}
    assert "2024-02-30" not in wrong.text  # the submitted values are never echoed back
    naive = await client.post(f"/participants/{await services.register()}/agreements", headers=STAFF,
                              json={**signature("LOA"), "signed_at": "2024-05-01T10:00:00"})
    assert naive.status_code == 422  # a signature time without a UTC offset is ambiguous


async def test_unknown_participant_is_404_problem(services: Stack) -> None:
    unknown = "00000000-0000-4000-8000-000000000000"
    for service, path in (("enrollment", f"/participants/{unknown}"), ("payments", f"/participants/{unknown}/payments"),
                          ("milestones", f"/participants/{unknown}/milestones")):
        response = await services.clients[service].get(path, headers=STAFF)
        assert response.status_code == 404, service
        assert response.headers["content-type"] == PROBLEM
    signed = await services.clients["enrollment"].post(f"/participants/{unknown}/agreements", json=signature("LOA"),
                                                       headers=STAFF)
    assert signed.status_code == 404
    not_uuid = await services.clients["enrollment"].get("/participants/abc", headers=STAFF)
    assert not_uuid.status_code == 422


async def test_an_auditor_token_is_refused_on_every_write_endpoint_of_every_service(stack: Stack) -> None:
    names = ("enrollment", "submissions", "milestones", "payments", "qip-share")
    await stack.start(*names)
    checked = 0
    for name in names:
        for template, operations in stack.runtimes[name].http.openapi()["paths"].items():
            for method in set(operations) - {"get", "head", "options"}:
                path = re.sub(r"\{[^}]+\}", "00000000-0000-0000-0000-000000000001", template)
                answer = await stack.clients[name].request(method.upper(), path, json={},
                                                           headers={"Authorization": "Bearer auditor-token"})
                assert answer.status_code == 403, f"{name} {method} {template} answered {answer.status_code}"
                checked += 1
    assert checked >= 21  # every write endpoint of the five services (21 today)
