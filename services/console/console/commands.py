"""What the console's buttons do: each a command to the service that owns it, under the signed-in user's own
token (so the service authorizes it and records who acted)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from console.upstream import Upstream, checked


async def register(up: Upstream, token: str, form: dict[str, Any]) -> dict[str, Any]:
    return await up.post("enrollment", "/participants", token, form)


async def sign(up: Upstream, token: str, pid: str, agreement: str, signed_at: str, document_id: str) -> Any:
    return await up.post("enrollment", f"/participants/{pid}/agreements", token,
                         {"agreement": agreement, "signed_at": signed_at, "document_id": document_id})


async def accept_all(up: Upstream, token: str, pid: str, reason: str) -> Any:
    return await up.post("enrollment", f"/participants/{pid}/agreements/acceptance", token,
                         {"reason": reason} if reason else None)


async def review(up: Upstream, token: str, pid: str, agreement: str, document_id: str, decision: str, reason: str) -> Any:
    return await up.post("enrollment", f"/participants/{pid}/agreements/{agreement}/reviews", token,
                         {"document_id": document_id, "decision": decision, "reason": reason})


async def close_quarter(up: Upstream, token: str, quarter: str) -> Any:
    return await up.post("milestones", f"/quarters/{quarter}/close", token)


async def decide(up: Upstream, token: str, evaluation_id: str, decision: str, reason: str) -> Any:
    if decision == "validate":
        return await up.post("milestones", f"/evaluations/{evaluation_id}/validate", token)
    return await up.post("milestones", f"/evaluations/{evaluation_id}/reject", token, {"reason": reason})


async def upload(up: Upstream, token: str, path: str, params: dict[str, str], body: AsyncIterator[bytes],
                 content_type: str) -> Any:
    """A file streamed to one of enrollment's import routes; its per-line report."""
    return checked("enrollment", await up.send("POST", "enrollment", path, token, headers={"Content-Type": content_type},
                                               params=params, content=body)).json()


async def publish_rules(up: Upstream, token: str, document: dict[str, Any], reason: str, confirm_lowering: bool) -> Any:
    """The document the what-if previewed, published as is (enrollment refuses a lowering without confirmation)."""
    return await up.post("enrollment", "/program-rules", token,
                         {"rules": document, "reason": reason, "confirm_lowering": confirm_lowering})


async def replay_dead_letter(up: Upstream, token: str, service: str, sequence: int) -> Any:
    return await up.post(service, f"/dead-letters/{sequence}/replay", token)
