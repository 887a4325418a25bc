"""What a run produced, read through the services' APIs, in a form two runs can be compared in: participants by NPI,
every other random id (submissions, payments, evaluations, deliveries, entities) named by where it first appears in a
canonical (sorted) rendering, and the clock's own times masked (the workload's times are all before `today`)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from soak.client import AUDITOR
from soak.workload import Driver

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# positions in a store's log: PostgreSQL's sequence skips the values of rolled-back inserts (a group commit that meets
# a conflict), so the same events may sit at other positions in another run; what they are is compared, not where
POSITION = re.compile(r'"(source_event|position)": "?([a-z-]+:)?\d+"?')
STAMP = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2})?")


async def take(driver: Driver) -> dict[str, Any]:
    api = driver.api

    async def get(service: str, path: str, **params: Any) -> Any:
        return await api.json("GET", service, path, AUDITOR, params=params)

    found: dict[str, Any] = {"participants": {}, "members": {}}
    for npi, pid in sorted(driver.participants.items()):
        submissions = (await get("submissions", f"/participants/{pid}/submissions", limit=200))["submissions"]
        found["participants"][npi] = {
            "payments": await get("payments", f"/participants/{pid}/payments"),
            "milestones": await get("milestones", f"/participants/{pid}/milestones"),
            "credits": [s for s in submissions if s.get("credit") or s.get("verdict") == "credited"],
        }
    found["evaluations"] = (await get("milestones", "/evaluations", limit=200))["evaluations"]
    found["exports"] = {q: (await api.call("GET", "payments", "/payments/export", AUDITOR, params={"quarter": q}))
                        .text.splitlines() for q in ["2024Q2", "2024Q4", *driver.work.quarters]}
    deliveries = (await get("qip-share", "/deliveries", limit=200))["deliveries"]
    found["deliveries"] = []
    for listed in deliveries:
        delivery = await get("qip-share", f"/deliveries/{listed['id']}")
        # the Bulk Data manifest states its transactionTime (the clock): compared as a document, that time masked
        delivery["manifest"]["sha256"] = "<the manifest document, compared below>"
        delivery["manifest_document"] = await get("qip-share", f"/deliveries/{listed['id']}/manifest")
        found["deliveries"].append(delivery)
    for member in driver.work.members:
        found["members"][member] = await get("qip-share", f"/members/{member}/disclosures")
    return canonical(found, {pid: f"participant:{npi}" for npi, pid in driver.participants.items()})


def canonical(found: dict[str, Any], known: dict[str, str]) -> dict[str, Any]:
    today = (datetime.now(UTC) - timedelta(days=2)).date().isoformat()
    text = json.dumps(found, sort_keys=True)
    for uuid, label in known.items():
        text = text.replace(uuid, label)
    text = POSITION.sub(lambda m: f'"{m.group(1)}": "{m.group(2) or ""}<position>"', text)
    text = STAMP.sub(lambda m: "<clock>" if m.group(0)[:10] >= today else m.group(0), text)
    # name each object's own id by where the object sorts (objects sort by their content, ids masked), then any other
    # id by its first appearance; sort again once ids carry their names (lists of bare ids)
    document = _sorted(json.loads(text))
    labels: dict[str, str] = {}
    _name_own_ids(document, labels)
    for uuid in UUID.findall(json.dumps(document, sort_keys=True)):
        labels.setdefault(uuid, f"id{len(labels)}")
    return dict(_sorted(json.loads(UUID.sub(lambda m: labels[m.group(0)], json.dumps(document, sort_keys=True)))))


def _name_own_ids(value: Any, labels: dict[str, str]) -> None:
    if isinstance(value, dict):
        if isinstance(own := value.get("id"), str) and UUID.fullmatch(own):
            labels.setdefault(own, f"id{len(labels)}")
        for key in sorted(value):
            _name_own_ids(value[key], labels)
    elif isinstance(value, list):
        for item in value:
            _name_own_ids(item, labels)


def _key(value: Any) -> str:
    return UUID.sub("<id>", json.dumps(value, sort_keys=True))


def _sorted(value: Any) -> Any:
    """Lists sorted by their items with ids masked: an order that does not depend on the random ids themselves."""
    if isinstance(value, dict):
        return {k: _sorted(v) for k, v in value.items()}
    if isinstance(value, list):
        return sorted((_sorted(v) for v in value), key=_key)
    return value


def differences(clean: Any, faulted: Any, path: str = "") -> list[str]:
    """Where two snapshots differ (the first few), as paths with both values."""
    if isinstance(clean, dict) and isinstance(faulted, dict):
        out: list[str] = []
        for key in sorted(set(clean) | set(faulted)):
            out += differences(clean.get(key, "<absent>"), faulted.get(key, "<absent>"), f"{path}/{key}")
        return out
    if isinstance(clean, list) and isinstance(faulted, list) and len(clean) == len(faulted):
        return [d for n, (a, b) in enumerate(zip(clean, faulted, strict=True)) for d in differences(a, b, f"{path}[{n}]")]
    return [] if clean == faulted else [f"{path}: clean {json.dumps(clean)[:200]} faulted {json.dumps(faulted)[:200]}"]
