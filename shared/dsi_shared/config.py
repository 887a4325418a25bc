"""Settings read from the environment: one documented table in README.md.

Every service reads the same names; the per-service ones are `<SERVICE>_STORE`, `<SERVICE>_PORT`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from urllib.parse import unquote, urlsplit

ROLES = frozenset({"program-staff", "auditor", "ops", "hie", "provider"})
PROVIDER = "provider"  # a token bound to one participant: `token:provider:<participant id or NPI>` (the console)


def stream_replicas() -> int:
    """`DSI_STREAM_REPLICAS` (default 1, `make run`): how many servers of a NATS cluster hold each stream; production
    runs three (docker-compose.yml), so a stream survives one server down. Read at each declaration."""
    raw = os.environ.get("DSI_STREAM_REPLICAS", "1")
    if not raw.isdigit() or not 1 <= int(raw) <= 5:
        raise ValueError("DSI_STREAM_REPLICAS must be a whole number from 1 to 5 (JetStream's limit)")
    return int(raw)


def nats_servers(url: str) -> list[str]:
    """`NATS_URL` → the servers to try: one URL, or a cluster's as a comma-separated list."""
    return [part.strip() for part in url.split(",") if part.strip()]


def env_name(service: str, suffix: str) -> str:
    return f"{service.upper().replace('-', '_')}_{suffix}"


def var_dir() -> Path:
    return Path(os.environ.get("DSI_VAR_DIR", "var"))


def store_url(service: str) -> str:
    """`<SERVICE>_STORE`: `sqlite:///path` (default `var/<service>.db`) or `postgresql://…`."""
    default = f"sqlite:///{var_dir() / (service + '.db')}"
    return os.environ.get(env_name(service, "STORE"), default)


def eventsourcing_env(url: str) -> dict[str, str]:
    """Translate a store URL into the environment the eventsourcing library reads."""
    parts = urlsplit(url)
    if parts.scheme == "memory":  # a scratch store (the auditor's re-derivations): gone when the process ends
        return {"PERSISTENCE_MODULE": "eventsourcing.popo"}
    if parts.scheme == "sqlite":
        path = url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else parts.path
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        return {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": path}
    if parts.scheme in {"postgresql", "postgres"}:
        return {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": parts.path.lstrip("/"),
            "POSTGRES_HOST": parts.hostname or "127.0.0.1",
            "POSTGRES_PORT": str(parts.port or 5432),
            "POSTGRES_USER": unquote(parts.username or "postgres"),
            "POSTGRES_PASSWORD": unquote(parts.password or ""),
        }
    raise ValueError(f"unsupported store URL scheme {parts.scheme!r}: use sqlite:/// or postgresql://")


ANY_SENDER = "*"
SENDER_ROLES = frozenset({"hie", "program-staff"})  # the roles that may submit files
_FLAGS = frozenset({"backdate"})


@dataclass(frozen=True)
class TokenGrant:
    """What one bearer token may do: its role; for submitting roles, the senders it may submit for (`senders`:
    sending facilities, NPIs, participant ids; None = any) and whether it may state an earlier `received_at`."""

    role: str
    senders: frozenset[str] | None = frozenset()
    backdate: bool = False
    participant: str | None = None  # a provider token's own participant (its id, or its NPI)

    @classmethod
    def of_role(cls, role: str) -> TokenGrant:
        """A token named without scope: program-staff may submit for any sender, an hie token for none."""
        return cls(role, None if role == "program-staff" else frozenset())

    def may_submit_for(self, identifiers: set[str]) -> bool:
        return self.senders is None or bool(self.senders & identifiers)


def parse_grants(raw: str) -> dict[str, TokenGrant]:
    """`DSI_TOKENS` = `token:role[@SENDER|SENDER…|*][+backdate]` or `token:provider:<participant id or NPI>`,
    comma-separated → {token: grant}. The one parser of the setting: an unknown role or flag, a scope on a role that
    submits nothing, or a provider token bound to nothing, is a configuration error."""
    grants: dict[str, TokenGrant] = {}
    for item in filter(None, (part.strip() for part in raw.split(","))):
        token, sep, spec = item.rpartition(":")
        owner, _, bound = token.rpartition(":")
        if bound == PROVIDER and owner:  # `token:provider:<participant>`: the last field is the participant
            if not spec.strip():
                raise ValueError("DSI_TOKENS: a provider token names its participant: token:provider:<id or NPI>")
            grants[owner] = TokenGrant(PROVIDER, frozenset(), participant=spec.strip())
            continue
        if spec == PROVIDER:
            raise ValueError("DSI_TOKENS: a provider token names its participant: token:provider:<id or NPI>")
        head, *flags = spec.split("+")
        role, scoped, scope = head.partition("@")
        if not sep or not token or role not in ROLES:
            raise ValueError(f"DSI_TOKENS entry must be token:role with role in {sorted(ROLES)}")
        if set(flags) - _FLAGS:
            raise ValueError(f"DSI_TOKENS: unknown flag after a role; known: {sorted(_FLAGS)}")
        if (scoped or flags) and role not in SENDER_ROLES:
            raise ValueError(f"DSI_TOKENS: a sender scope or +backdate applies only to roles {sorted(SENDER_ROLES)}")
        senders = {s.strip() for s in scope.split("|")} - {""}
        if scoped and not senders:
            raise ValueError("DSI_TOKENS: '@' must be followed by senders (facility|NPI|participant id) or '*'")
        grant = TokenGrant.of_role(role) if not scoped else TokenGrant(
            role, None if ANY_SENDER in senders else frozenset(senders))
        grants[token] = TokenGrant(grant.role, grant.senders, "backdate" in flags)
    return grants


def parse_tokens(raw: str) -> dict[str, str]:
    """`DSI_TOKENS` → {token: role} (see `parse_grants`)."""
    return {token: grant.role for token, grant in parse_grants(raw).items()}


def hie_max_delay() -> timedelta:
    """`DSI_HIE_MAX_DELAY_HOURS` (default 72): how far before our clock a stated receipt time may be — the HIE's
    documented forwarding delay. Read at each use."""
    hours = float(os.environ.get("DSI_HIE_MAX_DELAY_HOURS", "72"))
    if not hours >= 0:
        raise ValueError("DSI_HIE_MAX_DELAY_HOURS must be a number of hours >= 0")
    return timedelta(hours=hours)


@dataclass(frozen=True)
class Settings:
    service: str
    default_port: int
    nats_url: str = field(default_factory=lambda: os.environ.get("NATS_URL", "nats://127.0.0.1:4222"))
    nats_user: str | None = field(default_factory=lambda: os.environ.get("NATS_USER"))
    nats_password: str | None = field(default_factory=lambda: os.environ.get("NATS_PASSWORD"))
    # Prefix for every stream and subject, so test runs (or tenants) never see each other's data.
    bus_prefix: str = field(default_factory=lambda: os.environ.get("DSI_BUS_PREFIX", ""))
    tokens_raw: str = field(default_factory=lambda: os.environ.get("DSI_TOKENS", ""))
    ack_wait_seconds: float = field(default_factory=lambda: float(os.environ.get("DSI_ACK_WAIT_SECONDS", "30")))
    max_attempts: int = field(default_factory=lambda: int(os.environ.get("DSI_MAX_ATTEMPTS", "5")))
    ready_max_lag: int = field(default_factory=lambda: int(os.environ.get("DSI_READY_MAX_LAG", "10000")))
    checkpoint_seconds: float = field(default_factory=lambda: float(os.environ.get("DSI_CHECKPOINT_SECONDS", "10")))
    # Declare the JetStream streams at start (dev, tests); off where an admin declares them (least privilege).
    manage_streams: bool = field(default_factory=lambda: os.environ.get("DSI_MANAGE_STREAMS", "true").lower() != "false")
    store: str = ""
    port: int = 0

    def __post_init__(self) -> None:
        if not self.store:
            object.__setattr__(self, "store", store_url(self.service))
        if not self.port:
            raw = os.environ.get(env_name(self.service, "PORT"))
            object.__setattr__(self, "port", int(raw) if raw else self.default_port)

    @property
    def tokens(self) -> dict[str, TokenGrant]:
        return parse_grants(self.tokens_raw)
