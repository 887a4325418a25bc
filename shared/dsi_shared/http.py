"""HTTP plumbing shared by every service: RFC 9457 problem JSON, bearer-token roles, health endpoints."""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Callable
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from dsi_shared.errors import NotFound, PermanentError, Unprocessable, describe
from dsi_shared.occ import ConcurrentChange

log = logging.getLogger(__name__)
PROBLEM = "application/problem+json"
_bearer = HTTPBearer(auto_error=False)


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


class Auth:
    """Bearer tokens from `DSI_TOKENS`, each mapped to one role."""

    def __init__(self, tokens: dict[str, str]) -> None:
        self.tokens = tokens
        if not tokens:
            log.warning("DSI_TOKENS is empty: every authenticated endpoint will answer 401")

    def role_of(self, token: str) -> str | None:
        for known, role in self.tokens.items():
            if hmac.compare_digest(known.encode(), token.encode()):
                return role
        return None

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
            return f"{role}#{hashlib.sha256(credentials.credentials.encode()).hexdigest()[:8]}"

        return dependency
