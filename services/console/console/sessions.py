"""Console sign-in: a bearer token from `DSI_TOKENS` exchanged for a server-side session. The cookie carries only
a random session id and its HMAC (never the token); each session has its own CSRF token for its forms."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass, field

SESSION_COOKIE = "dsi_session"
LOGIN_CSRF_COOKIE = "dsi_login_csrf"  # double submit for the sign-in form (no session yet)
SESSION_SECONDS = 8 * 3600


@dataclass(frozen=True)
class Session:
    token: str  # the user's own bearer token: the services authorize and record each command under it
    role: str
    actor: str  # role#fingerprint, what the services record (shown on pages, never the token)
    csrf: str
    expires: float
    participants: frozenset[str] = field(default_factory=frozenset)  # a provider's own participant ids


class Sessions:
    """In memory: a console restart signs everyone out (the token is the credential; sign in again)."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def sign(self, value: str) -> str:
        return f"{value}.{hmac.new(self._secret, value.encode(), hashlib.sha256).hexdigest()}"

    def unsign(self, signed: str) -> str | None:
        value = signed.rpartition(".")[0]
        return value if value and hmac.compare_digest(self.sign(value), signed) else None

    def open(self, token: str, role: str, actor: str, participants: frozenset[str] = frozenset()) -> tuple[str, Session]:
        sid = secrets.token_urlsafe(32)
        session = Session(token, role, actor, secrets.token_urlsafe(32), time.time() + SESSION_SECONDS, participants)
        with self._lock:
            self._sessions = {k: s for k, s in self._sessions.items() if s.expires > time.time()}
            self._sessions[sid] = session
        return self.sign(sid), session

    def get(self, cookie: str | None) -> Session | None:
        sid = self.unsign(cookie) if cookie else None
        with self._lock:
            session = self._sessions.get(sid) if sid else None
        return session if session is not None and session.expires > time.time() else None

    def close(self, cookie: str | None) -> None:
        sid = self.unsign(cookie) if cookie else None
        with self._lock:
            self._sessions.pop(sid or "", None)


def same(a: str | None, b: str | None) -> bool:
    """Constant-time equality of two CSRF tokens, both present."""
    return bool(a) and bool(b) and hmac.compare_digest(str(a).encode(), str(b).encode())
