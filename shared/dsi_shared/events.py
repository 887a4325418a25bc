"""Integration events: CloudEvents 1.0 (structured JSON mode) carried on NATS with W3C trace headers.

Subjects follow the contract `dsi.<service>.<event-name-in-kebab-case>`; the CloudEvent `id` is
`<service>:<notification id>`, the same value as the `Nats-Msg-Id` header, so a consumer can record
exactly which upstream position it processed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any
from uuid import UUID

from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from dsi_shared import jsonsafe
from dsi_shared.errors import InvalidMessage

_FORMAT = JSONFormat()
_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def kebab(name: str) -> str:
    """`MilestoneAchieved` → `milestone-achieved`."""
    return _BOUNDARY.sub("-", name).lower()


def to_jsonable(value: Any) -> Any:
    """Plain JSON types: money stays exact as a decimal string, times as ISO 8601."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = [to_jsonable(v) for v in value]
        return sorted(items) if isinstance(value, set | frozenset) else items
    if isinstance(value, Decimal | UUID):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Enum):
        return to_jsonable(value.value)
    return value


@dataclass(frozen=True)
class IncomingEvent:
    """One event as a consumer sees it, whatever its producer."""

    type: str  # contract subject without the deployment prefix, e.g. "dsi.enrollment.agreement-signed"
    data: dict[str, Any]
    id: str
    source: str
    subject: str | None = None
    stored_at: datetime | None = None  # when our bus stored it (JetStream's clock); None outside a consumer
    dataschema: str | None = None  # the payload's schema and version (`dsi_shared.contracts`); None = version 1

    @property
    def upstream_position(self) -> tuple[str, int] | None:
        """(`service`, notification id) when the id is a relay id `service:123`."""
        service, sep, position = self.id.rpartition(":")
        return (service, int(position)) if sep and position.isascii() and position.isdigit() else None


def encode(service: str, notification_id: int, event_type: str, data: dict[str, Any], *,
           time: datetime, subject: str | None, dataschema: str | None = None) -> bytes:
    attributes: dict[str, Any] = {
        "id": f"{service}:{notification_id}",
        "source": f"/dsi/{service}",
        "type": event_type,
        "time": time,
        "datacontenttype": "application/json",
    }
    if subject:
        attributes["subject"] = subject
    if dataschema:
        attributes["dataschema"] = dataschema
    return _FORMAT.write(CloudEvent(attributes, to_jsonable(data)))


def decode(body: bytes, contract_subject: str, fallback_id: str) -> IncomingEvent:
    """A structured CloudEvent, or the plain JSON object an outside system publishes on `dsi.in.*`."""
    try:
        raw = jsonsafe.loads(body, "the message body")
    except jsonsafe.JsonTooDeep as exc:
        raise InvalidMessage(str(exc)) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidMessage(f"message body is not JSON ({type(exc).__name__})") from None
    if not isinstance(raw, dict):
        raise InvalidMessage("message body must be a JSON object")
    if "specversion" in raw:
        try:
            event = _FORMAT.read(None, body)
        except Exception as exc:  # noqa: BLE001 - the SDK raises several kinds for a malformed envelope
            raise InvalidMessage(f"malformed CloudEvent ({type(exc).__name__})") from None
        data = event.get_data()
        if not isinstance(data, dict):
            raise InvalidMessage("CloudEvent data must be a JSON object")
        return IncomingEvent(type=event.get_type(), data=data, id=event.get_id(),
                             source=event.get_source(), subject=event.get_subject(),
                             dataschema=event.get_dataschema())
    return IncomingEvent(type=contract_subject, data=raw, id=fallback_id, source="external")
