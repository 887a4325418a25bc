"""The console's web app: sign-in with a session cookie, CSRF on every form, security headers, role-gated pages
(`pages.py`), and the runtime's own probes (`/healthz`, `/readyz`, `/metrics`) passed through unchanged."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from dsi_shared.config import PROVIDER
from dsi_shared.http import Auth, fingerprint
from dsi_shared.service import ServiceRuntime
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, PackageLoader, select_autoescape

from console import plain, reads
from console.sessions import LOGIN_CSRF_COOKIE, SESSION_COOKIE, Session, Sessions, same
from console.upstream import Upstream, UpstreamError

log = logging.getLogger(__name__)
CONSOLE_ROLES = ("program-staff", "auditor", "ops", PROVIDER)
RUNTIME_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/audit/verify", "/audit/replay"})
API_PREFIX = "/program-rules/"  # the console's own bearer API (the what-if), served by the runtime's app
MAX_FORM_BYTES = 64 * 1024
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'; object-src 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff",
           "Referrer-Policy": "no-referrer", "Cache-Control": "no-store",
           "Permissions-Policy": "camera=(), microphone=(), geolocation=()"}
HOME = {"program-staff": "/participants", "auditor": "/participants", "ops": "/operations", PROVIDER: "/statement"}


def check_csrf(fields: dict[str, str], expected: str | None) -> None:
    """A posted form carries the session's CSRF token (the sign-in form: its double-submit cookie), or is refused."""
    if not same(fields.get("csrf"), expected):
        raise Refused(403, "This form was refused: its CSRF token is missing or does not match. Reload the page and "
                           "try again.")


class Refused(Exception):
    """A page that does not exist for this user (404) or an action it may not take (403)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class SignIn(Exception):
    """No session: go to the sign-in page."""


def templates() -> Environment:
    env = Environment(loader=PackageLoader("console", "templates"), autoescape=select_autoescape(default=True))
    env.filters["money"] = plain.money
    return env


class Console:
    """What every page needs: the upstream services, the sessions, the templates, and how to reach a provider's data."""

    def __init__(self, runtime: ServiceRuntime, upstream: Upstream, read_token: str | None, secret: bytes) -> None:
        self.runtime, self.up = runtime, upstream
        self.auth = Auth(runtime.settings.tokens)
        self.read_token = read_token or next(
            (t for t, g in self.auth.grants.items() if g.role == "auditor"), None)
        self.sessions = Sessions(secret)
        self.env = templates()

    def page(self, request: Request, name: str, code: int = 200, **context: Any) -> HTMLResponse:
        session = getattr(request.state, "session", None)
        html = self.env.get_template(name).render(session=session, request=request, **context)
        return HTMLResponse(html, status_code=code)

    def session(self, request: Request, *roles: str) -> Session:
        """The signed-in session, its role among `roles`: else sign in, or refused (a provider gets 404 for any page
        that is not its own, so it learns nothing of what exists)."""
        session = self.sessions.get(request.cookies.get(SESSION_COOKIE))
        if session is None:
            raise SignIn()
        request.state.session = session
        if roles and session.role not in roles:
            raise Refused(404, "No such page.") if session.role == PROVIDER else \
                Refused(403, f"The role {session.role} may not do this.")
        return session

    def own(self, session: Session, pid: str) -> str:
        """Object-level authorization: a provider sees its own participants only, anything else is 404."""
        if session.role == PROVIDER and pid not in session.participants:
            raise Refused(404, "No such page.")
        return pid

    def reader(self, session: Session) -> str:
        """The token a page reads with: the user's own, a provider's through the console's read-only token."""
        if session.role != PROVIDER:
            return session.token
        if self.read_token is None:
            raise Refused(503, "The console has no read token (DSI_CONSOLE_READ_TOKEN, or an auditor in DSI_TOKENS).")
        return self.read_token

    async def form(self, request: Request, session: Session | None) -> dict[str, str]:
        """The posted form (urlencoded), refused (403) unless it carries the session's CSRF token — or, before
        sign-in, the login cookie's (double submit)."""
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM_BYTES:
                raise Refused(413, "The form is too large.")
        fields = {k: v[-1] for k, v in parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True).items()}
        check_csrf(fields, session.csrf if session else request.cookies.get(LOGIN_CSRF_COOKIE))
        return fields


def web(runtime: ServiceRuntime, upstream: Upstream | None = None,
        read_token: str | None = None) -> ConsoleApp:
    """The console's ASGI app around its runtime (`dsi serve console` serves it; tests pass in-process clients)."""
    from console import imports, pages, publish, qip

    own_upstream = upstream is None
    up = upstream or Upstream()
    secret = os.environ.get("DSI_CONSOLE_SECRET", "").encode() or secrets.token_bytes(32)
    console = Console(runtime, up, read_token or os.environ.get("DSI_CONSOLE_READ_TOKEN"), secret)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()
            if own_upstream:
                await up.close()

    app = FastAPI(title="DSI console", lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None)
    app.mount("/static", StaticFiles(directory=Path(__file__).parent / "static"), name="static")

    @app.middleware("http")
    async def headers(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        for name, value in HEADERS.items():
            response.headers.setdefault(name, value)
        if request.url.path.startswith("/static/"):
            response.headers["Cache-Control"] = "public, max-age=3600"
        return response

    @app.exception_handler(SignIn)
    async def sign_in(_: Request, __: SignIn) -> Response:
        return RedirectResponse("/login", status_code=303)

    @app.exception_handler(Refused)
    async def refused(request: Request, exc: Refused) -> Response:
        return console.page(request, "error.html", exc.status, status=exc.status, message=exc.message)

    @app.exception_handler(UpstreamError)
    async def upstream_error(request: Request, exc: UpstreamError) -> Response:
        status = exc.status if exc.status in {403, 404, 409, 422} else 502 if exc.status != 503 else 503
        message = "No such page." if exc.status == 404 else f"{exc.service} refused this ({exc.status}): {exc.detail}"
        return console.page(request, "error.html", status, status=status, message=message)

    pages.install(app, console)
    imports.install(app, console)
    publish.install(app, console)
    qip.install(app, console)
    return ConsoleApp(app, runtime.http)


class ConsoleApp:
    """ASGI: the runtime's probes to the runtime's app (bearer tokens, as on every service), the rest to the pages."""

    def __init__(self, pages: FastAPI, runtime_http: FastAPI) -> None:
        self.pages, self.runtime_http = pages, runtime_http

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and (scope["path"] in RUNTIME_PATHS or scope["path"].startswith(API_PREFIX)):
            await self.runtime_http(scope, receive, send)
        else:
            await self.pages(scope, receive, send)


def actor_of(role: str, token: str) -> str:
    return f"{role}#{fingerprint(token)}"


async def sign_in_as(console: Console, token: str) -> tuple[str, Session] | str:
    """A session for a known token of a console role, or why not (said without naming the token)."""
    grant = console.auth.grant_of(token.strip()) if token.strip() else None
    if grant is None:
        return "That token is not known."
    if grant.role not in CONSOLE_ROLES:
        return f"The role {grant.role} has no console pages."
    participants: frozenset[str] = frozenset()
    if grant.role == PROVIDER:
        if console.read_token is None or grant.participant is None:
            return "The console cannot read providers' data: it has no read token."
        participants = await reads.own_participants(console.up, console.read_token, grant.participant)
        if not participants:
            return "This provider token is bound to no registered participant yet."
    return console.sessions.open(token.strip(), grant.role, actor_of(grant.role, token.strip()), participants)
