"""HTTP plumbing shared by every service: RFC 9457 problem JSON, bearer-token roles, health endpoints."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException

from dsi_shared.config import TokenGrant
from dsi_shared.errors import NotFound, PermanentError, Unprocessable, describe
from dsi_shared.occ import ConcurrentChange
from dsi_shared.rulebook import NoRulesYet

log = logging.getLogger(__name__)
PROBLEM = "application/problem+json"
_bearer = HTTPBearer(auto_error=False)


class Answer(BaseModel):
    """Base of every response model. `extra="forbid"`: a field a route returns that its model does not name is an
    error (500 in the route, a failed schema check in tests), never silently dropped; `strict`: what the route
    returned is what is sent (no coercion of "3" to 3), so a model documents the body and never changes it."""

    model_config = ConfigDict(extra="forbid", strict=True)


class Problem(BaseModel):
    """RFC 9457 problem details, as `problem()` writes them; some add members (`errors`, `dependency`, ids)."""

    model_config = ConfigDict(extra="allow")
    type: str
    title: str
    status: int
    detail: str | None = None


# Every route may answer these as problem JSON (the gate, the role check, validation, the handlers below).
PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"description": description, "content": {PROBLEM: {"schema": Problem.model_json_schema()}}}
    for code, description in ((400, "the body cannot be parsed (not JSON, or not UTF-8)"),
                              (401, "no or unknown bearer token"), (403, "the token's role may not do this"),
                              (404, "not found"), (409, "conflict"), (413, "the body is too large"),
                              (422, "invalid request"), (503, "a dependency is unavailable"))}


def problem(status: int, title: str, detail: str | None = None, **extra: Any) -> JSONResponse:
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status}
    if detail:
        body["detail"] = detail
    body.update(extra)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem(exc.status_code, _title(exc.status_code), str(exc.detail) if exc.detail else None)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        # Field locations and error kinds only: request bodies may hold PHI, so no input values echo back.
        errors = [{"loc": list(e.get("loc", ())), "type": e.get("type"), "msg": e.get("msg")} for e in exc.errors()]
        return problem(422, "Unprocessable Content", "the request body or parameters are invalid", errors=errors)

    @app.exception_handler(NotFound)
    async def not_found(_: Request, exc: NotFound) -> JSONResponse:
        return problem(404, "Not Found", describe(exc))

    @app.exception_handler(Unprocessable)
    async def unprocessable_input(_: Request, exc: Unprocessable) -> JSONResponse:
        return problem(422, "Unprocessable Content", describe(exc))

    @app.exception_handler(PayloadTooLarge)
    async def too_large(_: Request, exc: PayloadTooLarge) -> JSONResponse:
        return problem(413, "Content Too Large", describe(exc))

    @app.exception_handler(PermanentError)
    async def unprocessable(_: Request, exc: PermanentError) -> JSONResponse:
        return problem(409, "Conflict", describe(exc))

    @app.exception_handler(DependencyUnavailable)
    async def unavailable(_: Request, exc: DependencyUnavailable) -> JSONResponse:
        response = problem(503, "Service Unavailable", exc.detail, dependency=exc.dependency)
        response.headers["Retry-After"] = "5"
        return response

    @app.exception_handler(NoRulesYet)
    async def no_rules(_: Request, exc: NoRulesYet) -> JSONResponse:
        response = problem(503, "Service Unavailable", str(exc), dependency="program rules")
        response.headers["Retry-After"] = "5"
        return response

    @app.exception_handler(ConcurrentChange)
    async def concurrent(_: Request, exc: ConcurrentChange) -> JSONResponse:
        response = problem(409, "Conflict", str(exc))
        response.headers["Retry-After"] = "1"
        return response


def _title(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


class PayloadTooLarge(PermanentError):
    pass


class DependencyUnavailable(Exception):
    """Something this request needs (NATS, the store) cannot be reached now: 503 naming it, with Retry-After."""

    def __init__(self, dependency: str, detail: str) -> None:
        super().__init__(detail)
        self.dependency, self.detail = dependency, detail


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) as soon as it passes `limit` bytes: never buffered beyond it."""
    declared = request.headers.get("content-length")
    if declared and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the body is larger than the {limit} byte limit")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            raise PayloadTooLarge(f"the body is larger than the {limit} byte limit")
    return bytes(body)


@dataclass(frozen=True)
class Sender:
    """Who submits a file over HTTP: the actor for the record (role#fingerprint) and what the token may do."""

    actor: str
    grant: TokenGrant


def fingerprint(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:8]


class Auth:
    """Bearer tokens from `DSI_TOKENS` (`dsi_shared.config.parse_grants`), each with one role and, for roles that
    submit files, the senders it may submit for and whether it may backdate a receipt. A plain role (tests, tools)
    is a grant with that role's defaults."""

    def __init__(self, tokens: Mapping[str, str | TokenGrant]) -> None:
        self.grants = {token: g if isinstance(g, TokenGrant) else TokenGrant.of_role(g) for token, g in tokens.items()}
        self.tokens = {token: grant.role for token, grant in self.grants.items()}
        if not tokens:
            log.warning("DSI_TOKENS is empty: every authenticated endpoint will answer 401")

    def grant_of(self, token: str) -> TokenGrant | None:
        for known, grant in self.grants.items():
            if hmac.compare_digest(known.encode(), token.encode()):
                return grant
        return None

    def role_of(self, token: str) -> str | None:
        grant = self.grant_of(token)
        return grant.role if grant else None

    def require(self, *roles: str) -> Callable[..., str]:
        """A FastAPI dependency: 401 without a known token, 403 when its role is not among `roles`."""

        def dependency(credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> str:
            role = self.role_of(credentials.credentials) if credentials else None
            if role is None:
                raise HTTPException(401, "a valid bearer token is required")
            if role not in roles:
                raise HTTPException(403, f"role {role!r} may not do this; allowed: {', '.join(roles)}")
            return role

        return dependency

    def require_actor(self, *roles: str) -> Callable[..., str]:
        """Like `require`, answering who acted, for the record: the role and a fingerprint of the token
        (`program-staff#3f2a9c1d`), never the token itself."""

        def dependency(credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),
                       role: str = Depends(self.require(*roles))) -> str:
            assert credentials is not None
            return f"{role}#{fingerprint(credentials.credentials)}"

        return dependency

    def require_sender(self, *roles: str) -> Callable[..., Sender]:
        """Like `require_actor`, for endpoints that take files: answers the token's grant too. A token bound to no
        sender at all (an `hie` token without `@…`) may submit nothing: 403 naming the fix."""

        def dependency(credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),
                       actor: str = Depends(self.require_actor(*roles))) -> Sender:
            assert credentials is not None
            grant = self.grant_of(credentials.credentials)
            assert grant is not None
            if grant.senders is not None and not grant.senders:
                raise HTTPException(403, f"token {actor} is bound to no sender: give it the sending facilities, NPIs "
                                         "or participant ids it submits for in DSI_TOKENS (token:hie@FACILITY|NPI)")
            return Sender(actor, grant)

        return dependency


# -- the request gate: who asks, and how much they may send, before any body is read (issue 12 §3) ---------------
MAX_JSON_BYTES = int(os.environ.get("DSI_MAX_JSON_BYTES", str(1024 * 1024)))
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json",
                        "/asyncapi", "/asyncapi.json"})
Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def _too_large(limit: int) -> HTTPException:
    return HTTPException(413, f"the body is larger than the {limit} byte limit")


class RequestGate:
    """Pure ASGI middleware, outside everything else: a request without a known bearer token gets 401 problem JSON
    before a byte of its body is read (every path but the health and docs pages; roles are still checked by the
    routes' dependencies). A body is refused (413) before it is read when its Content-Length is over the limit,
    and, streamed, as soon as it passes it. The limit of a route whose body FastAPI parses is `DSI_MAX_JSON_BYTES`;
    an upload route (its endpoint takes the `Request` and streams the body through `read_body`) has its own limit
    there. The route is known once the router has matched it (it records it in the scope), which is before the
    first byte of the body is asked for."""

    def __init__(self, app: AsgiApp, auth: Auth, json_limit: int | None = None) -> None:
        self.app, self.auth = app, auth
        self.json_limit = MAX_JSON_BYTES if json_limit is None else json_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip() or self.auth.role_of(token.strip()) is None:
            await _answer(send, problem(401, "Unauthorized", "a valid bearer token is required"))
            return
        declared = headers.get("content-length", "")
        size = int(declared) if declared.isascii() and declared.isdigit() else None
        received = 0
        limit: int | None = None
        started = checked = False

        async def limited_receive() -> Message:
            nonlocal received, limit, checked
            if not checked:  # the first ask for the body: the route is matched by now
                checked, limit = True, self._limit_for(scope)
                if limit is not None and size is not None and size > limit:
                    raise _too_large(limit)
            message = await receive()
            if limit is not None and message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _too_large(limit)
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, watched_send)
        except HTTPException as exc:  # raised by limited_receive where no handler turned it into a response
            if exc.status_code != 413 or started:
                raise
            await _answer(send, problem(413, "Content Too Large", str(exc.detail)))

    def _limit_for(self, scope: Scope) -> int | None:
        """None for an upload route (`read_body` limits it), else the JSON limit."""
        route = scope.get("route")
        dependant = getattr(route, "dependant", None)
        raw = dependant is not None and dependant.request_param_name is not None
        return None if raw and getattr(route, "body_field", None) is None else self.json_limit


async def _answer(send: Send, response: JSONResponse) -> None:
    await send({"type": "http.response.start", "status": response.status_code,
                "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers.items()]})
    await send({"type": "http.response.body", "body": response.body})
