"""The other services, as the console reaches them: one HTTP client each, from `<SERVICE>_URL` (default the local
port `make run` gives it). A failure names the service and the status, never a body value (bodies may hold PHI)."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import httpx
from dsi_shared.config import Settings, env_name

# httpx logs each request line at INFO, and the console's carry member ids (`/members/{cin}/disclosures`): PHI never
# reaches a log, so only its warnings are kept.
logging.getLogger("httpx").setLevel(logging.WARNING)
SERVICES = {"enrollment": 8101, "submissions": 8102, "milestones": 8103, "payments": 8104, "qip-share": 8105}


class UpstreamError(Exception):
    """A service refused or could not answer. `detail` is the service's own problem detail (they never echo
    submitted values), shown to the signed-in user."""

    def __init__(self, service: str, status: int, detail: str = "") -> None:
        super().__init__(f"{service} answered {status}")
        self.service, self.status, self.detail = service, status, detail


def service_url(name: str, default_port: int) -> str:
    return os.environ.get(env_name(name, "URL")) or f"http://127.0.0.1:{Settings(name, default_port).port}"


class Upstream:
    def __init__(self, clients: Mapping[str, httpx.AsyncClient] | None = None) -> None:
        self.clients = dict(clients) if clients is not None else {
            name: httpx.AsyncClient(base_url=service_url(name, port), timeout=15) for name, port in SERVICES.items()}

    async def close(self) -> None:
        for client in self.clients.values():
            await client.aclose()

    async def send(self, method: str, service: str, path: str, token: str | None,
                   headers: Mapping[str, str] | None = None, **kwargs: Any) -> httpx.Response:
        sent = {**(headers or {}), **({"Authorization": f"Bearer {token}"} if token else {})}
        try:
            return await self.clients[service].request(method, path, headers=sent, **kwargs)
        except httpx.HTTPError:
            raise UpstreamError(service, 503, f"{service} is unreachable") from None

    async def get(self, service: str, path: str, token: str | None, **params: Any) -> Any:
        """The JSON answer; None for 404; UpstreamError otherwise."""
        response = await self.send("GET", service, path, token, params={k: v for k, v in params.items() if v})
        if response.status_code == 404:
            return None
        return checked(service, response).json()

    async def stream(self, service: str, path: str, token: str) -> httpx.Response:
        """A GET whose body is read as it arrives (the caller closes it); UpstreamError for a refusal."""
        client = self.clients[service]
        request = client.build_request("GET", path, headers={"Authorization": f"Bearer {token}"})
        try:
            response = await client.send(request, stream=True)
        except httpx.HTTPError:
            raise UpstreamError(service, 503, f"{service} is unreachable") from None
        if response.status_code >= 400:
            await response.aread()  # a problem JSON: small
            await response.aclose()
            checked(service, response)
        return response

    async def post(self, service: str, path: str, token: str, body: Any = None) -> Any:
        return checked(service, await self.send("POST", service, path, token, json=body)).json()


def checked(service: str, response: httpx.Response) -> httpx.Response:
    if response.status_code < 400:
        return response
    detail = ""
    if response.headers.get("content-type", "").startswith("application/problem+json"):
        body = response.json()
        detail = str(body.get("detail") or body.get("title") or "")
        detail += "".join(f"; {'.'.join(map(str, e.get('loc', [])[1:]))}: {e.get('msg')}" for e in body.get("errors", []))
    raise UpstreamError(service, response.status_code, detail)
