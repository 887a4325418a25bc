"""Public events: what a service lets out of its store, declared and typed (issue 14 §1).

A service records many domain events; only those its `contract.py` maps to a `PublicEvent` model leave it, carrying
only the model's fields (minimum necessary), with the model's schema version in the CloudEvent `dataschema`.
Consumers receive the model, never a dict, so a renamed field breaks a test instead of a ledger.

Compatibility: a consumer's model ignores fields it does not know (a producer may add fields), and reads an older
version through the model's `upcasters`. Removing or retyping a field needs a new `version`; `contracts.lock.json`
(beside this package) holds every published subject's fields, and `compatibility_problems` is the check the contract test runs.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from dsi_shared import events

SCHEMA_PREFIX = "urn:dsi:schema:"
LOCK_FILE = Path(__file__).resolve().parents[1] / "contracts.lock.json"  # shared/contracts.lock.json
Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


class Message(BaseModel):
    """Anything a consumer reads off the bus: unknown fields are ignored (a producer may add some)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    @classmethod
    def read(cls, event: events.IncomingEvent) -> Message:
        return cls.model_validate(event.data)


class PublicEvent(Message):
    """An event a service publishes. `subject` is its contract subject, `recorded_as` the qualified name of the
    domain event class it is made from (`Participant.ParticipantRegistered`), `version` its schema version."""

    subject: ClassVar[str]
    recorded_as: ClassVar[str]
    version: ClassVar[int] = 1
    # version n → the function that turns a version-n payload into version n+1
    upcasters: ClassVar[dict[int, Upcaster]] = {}

    aggregate_id: UUID = Field(description="the aggregate (participant, submission, member …) the event is about")
    aggregate_version: int = Field(description="its position in that aggregate's history: apply in this order")

    @classmethod
    def dataschema(cls) -> str:
        return f"{SCHEMA_PREFIX}{cls.subject}:{cls.version}"

    @classmethod
    def read(cls, event: events.IncomingEvent) -> PublicEvent:
        """The payload as this version of the model, upcast from the version it was published with (history from
        before schemas were named is version 1)."""
        data, version = dict(event.data), schema_version(event.dataschema)
        while version < cls.version:
            data, version = cls.upcasters[version](data), version + 1
        return cls.model_validate(data)

    @classmethod
    def payload(cls, state: dict[str, Any]) -> dict[str, Any]:
        """The declared fields of a recorded event's state, validated: what goes on the bus (money as exact decimal
        strings, times in ISO 8601, as `events.to_jsonable` has always written them)."""
        return dict(events.to_jsonable(cls.model_validate(state).model_dump()))


def schema_version(dataschema: str | None) -> int:
    if not dataschema or not dataschema.startswith(SCHEMA_PREFIX):
        return 1
    number = dataschema.rpartition(":")[2]
    return int(number) if number.isascii() and number.isdigit() else 1


M_co = TypeVar("M_co", bound=Message, covariant=True)


@dataclass(frozen=True)
class Delivered(Generic[M_co]):
    """One consumed event: its envelope (id, source, stream time) and its typed payload."""

    event: events.IncomingEvent
    data: M_co


@dataclass(frozen=True)
class Contract:
    """The events one service publishes."""

    service: str
    published: tuple[type[PublicEvent], ...]

    def __post_init__(self) -> None:
        prefix = f"dsi.{self.service.removesuffix('-share')}."
        for model in self.published:
            if not model.subject.startswith(prefix):
                raise ValueError(f"{model.__name__}: {model.subject} is not a subject of {self.service}")
            if model.subject != prefix + events.kebab(model.recorded_as.rpartition(".")[2]):
                raise ValueError(f"{model.__name__}: {model.subject} does not name {model.recorded_as}")

    def model_for(self, domain_event: Any) -> type[PublicEvent] | None:
        return self._by_event.get(type(domain_event).__qualname__)

    @cached_property
    def _by_event(self) -> dict[str, type[PublicEvent]]:  # built once: the relay asks for every recorded event
        return {model.recorded_as: model for model in self.published}


def field_types(model: type[BaseModel]) -> dict[str, Any]:
    """A model's fields → their JSON schema (what the lock file keeps per version)."""
    schema = model.model_json_schema()
    definitions = schema.get("$defs", {})
    return {name: _resolved(spec, definitions) for name, spec in schema.get("properties", {}).items()}


def _resolved(spec: Any, definitions: dict[str, Any]) -> Any:
    if isinstance(spec, dict):
        if "$ref" in spec:
            return _resolved(definitions[spec["$ref"].rpartition("/")[2]], definitions)
        return {k: _resolved(v, definitions) for k, v in spec.items() if k not in {"title", "description"}}
    if isinstance(spec, list):
        return [_resolved(v, definitions) for v in spec]
    return spec


def lock_entries(contracts: Iterable[Contract]) -> dict[str, dict[str, Any]]:
    """`subject → {"version": n, "fields": {...}}` for every published model."""
    return {model.subject: {"version": model.version, "fields": field_types(model)}
            for contract in contracts for model in contract.published}


def compatibility_problems(locked: dict[str, dict[str, Any]], current: dict[str, dict[str, Any]]) -> list[str]:
    """What breaks consumers: a subject no longer published, or a field removed or retyped without a new version.
    Added fields and new subjects are compatible (they only need the lock refreshed)."""
    problems: list[str] = []
    for subject, was in sorted(locked.items()):
        now = current.get(subject)
        if now is None:
            problems.append(f"{subject}: no longer published")
            continue
        if now["version"] != was["version"]:
            if now["version"] < was["version"]:
                problems.append(f"{subject}: version went back from {was['version']} to {now['version']}")
            continue
        for name, spec in sorted(was["fields"].items()):
            if name not in now["fields"]:
                problems.append(f"{subject} v{was['version']}: field {name} removed without a new version")
            elif now["fields"][name] != spec:
                problems.append(f"{subject} v{was['version']}: field {name} retyped without a new version")
    return problems


def read_lock(path: Path = LOCK_FILE) -> dict[str, dict[str, Any]]:
    return dict(json.loads(path.read_text())) if path.exists() else {}


def write_lock(entries: dict[str, dict[str, Any]], path: Path = LOCK_FILE) -> None:
    path.write_text(json.dumps(entries, indent=2, sort_keys=True) + "\n")
