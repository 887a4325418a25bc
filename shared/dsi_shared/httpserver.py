"""How a service's HTTP server is run (uvicorn on h11), with the limits a hostile client meets (issue 12 §3):
idle keep-alive, header and body read timeouts, a cap on connections in all and per peer, header size."""

from __future__ import annotations

import asyncio
import logging
import os
from collections import Counter
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)


def _number(name: str, default: str) -> float:
    return float(os.environ.get(name, default))


# Seconds an idle keep-alive connection stays open (uvicorn's `timeout_keep_alive`).
KEEP_ALIVE_SECONDS = _number("DSI_HTTP_KEEP_ALIVE_SECONDS", "5")
# Seconds a request's headers and body have to arrive, from its first byte (or the connection's start).
READ_TIMEOUT_SECONDS = _number("DSI_HTTP_READ_TIMEOUT_SECONDS", "60")
# Open connections from one peer address; more are closed at once.
MAX_CONNECTIONS_PER_PEER = int(_number("DSI_HTTP_MAX_CONNECTIONS_PER_PEER", "50"))
# Connections and requests in flight in all (uvicorn's `limit_concurrency`: 503 beyond).
MAX_CONNECTIONS = int(_number("DSI_HTTP_MAX_CONNECTIONS", "1000"))
# Largest request head (request line and headers; h11's `max_incomplete_event_size`).
MAX_HEADER_BYTES = int(_number("DSI_HTTP_MAX_HEADER_BYTES", "16384"))


def guarded_protocol(read_timeout: float, per_peer: int) -> type[H11Protocol]:
    """uvicorn's h11 protocol with a read deadline per request and a per-peer connection cap (uvicorn has
    neither: a client that sends half a request line, or nothing, keeps its connection for ever)."""
    open_by_peer: Counter[str] = Counter()

    class GuardedH11Protocol(H11Protocol):
        _peer: str | None = None
        _deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            peer = self.client[0] if self.client else "unknown"
            if open_by_peer[peer] >= per_peer:
                log.warning("HTTP connection from %s refused: %d open from this peer (limit %d)",
                            peer, open_by_peer[peer], per_peer)
                transport.close()
                return
            self._peer = peer
            open_by_peer[peer] += 1
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._peer is not None:
                open_by_peer[self._peer] -= 1
                if open_by_peer[self._peer] <= 0:
                    del open_by_peer[self._peer]
                self._peer = None
            self._disarm()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._deadline is None and self._between_requests():
                self._arm()  # the next request's first bytes: its head and body must arrive in time
            super().data_received(data)

        def on_response_complete(self) -> None:
            self._disarm()
            super().on_response_complete()

        def _between_requests(self) -> bool:
            return self.cycle is None or self.cycle.response_complete

        def _arm(self) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(read_timeout, self._read_timed_out)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _read_timed_out(self) -> None:
            self._deadline = None
            receiving = self._between_requests() or self.cycle.more_body
            if receiving and not self.transport.is_closing():
                log.warning("HTTP connection closed: the request did not arrive within %ss", read_timeout)
                self.transport.close()

    return GuardedH11Protocol


def server_config(app: Any, host: str, port: int, **overrides: Any) -> uvicorn.Config:
    options: dict[str, Any] = {
        "host": host, "port": port, "log_level": "warning",
        "access_log": False,  # request paths carry member ids (`/members/{cin}`), which must never reach logs
        "http": guarded_protocol(READ_TIMEOUT_SECONDS, MAX_CONNECTIONS_PER_PEER),
        "timeout_keep_alive": KEEP_ALIVE_SECONDS, "limit_concurrency": MAX_CONNECTIONS,
        "h11_max_incomplete_event_size": MAX_HEADER_BYTES,
    }
    return uvicorn.Config(app, **{**options, **overrides})


def serve(app: Any, host: str, port: int) -> None:
    """Run the HTTP server in the foreground until stopped."""
    uvicorn.Server(server_config(app, host, port)).run()
