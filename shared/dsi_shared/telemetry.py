"""OpenTelemetry: one tracer provider per process, W3C context carried across HTTP and NATS.

Span attributes carry only opaque ids (participant UUIDs, notification positions), never PHI.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping
from typing import Any

from opentelemetry import context, propagate, trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from starlette.types import ASGIApp, Receive, Scope, Send

_provider: TracerProvider | None = None


def setup_telemetry(service_name: str, processor: SpanProcessor | None = None) -> TracerProvider:
    """Install the process's tracer provider (once: OpenTelemetry allows a single global provider).

    Spans go to the OTLP/HTTP exporter when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, to `processor` when
    given (tests use an in-memory exporter), and nowhere otherwise.
    """
    global _provider
    if _provider is not None:
        if processor is not None:
            _provider.add_span_processor(processor)
        return _provider
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service_name}))
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    if processor is not None:
        provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)
    _provider = provider
    return provider


def tracer(service: str) -> trace.Tracer:
    return trace.get_tracer(f"dsi.{service}")


def extract(carrier: Mapping[str, str] | None) -> context.Context:
    return propagate.extract(dict(carrier or {}))


def inject() -> dict[str, str]:
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


class TracingMiddleware:
    """A server span per HTTP request, continuing an incoming `traceparent`.

    The span is named by the route template (`/participants/{participant_id}`), never the concrete path,
    so identifiers in URLs never reach the trace."""

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.tracer = tracer(service)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in {"/healthz", "/readyz"}:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}
        with self.tracer.start_as_current_span(
            f"{scope['method']} (unrouted)", context=extract(headers), kind=trace.SpanKind.SERVER
        ) as span:
            span.set_attribute("http.request.method", scope["method"])

            async def send_with_status(message: MutableMapping[str, Any]) -> None:
                if message["type"] == "http.response.start":
                    span.set_attribute("http.response.status_code", message["status"])
                await send(message)

            await self.app(scope, receive, send_with_status)
            route = getattr(scope.get("route"), "path", None)
            if route:
                span.update_name(f"{scope['method']} {route}")
                span.set_attribute("http.route", route)
