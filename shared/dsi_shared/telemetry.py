"""OpenTelemetry: one tracer provider per process, W3C context carried across HTTP and NATS.

Span attributes carry only opaque ids (participant UUIDs, notification positions), never PHI.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from typing import Any

from opentelemetry import context, metrics, propagate, trace
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricReader, PeriodicExportingMetricReader
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


def link_to(carrier: Mapping[str, str] | None) -> trace.Link | None:
    """A span link to the span a W3C carrier names (None when it names none): how one operation that
    aggregates many earlier ones (a quarter close over many credits) stays traceable to each of them."""
    span_context = trace.get_current_span(extract(carrier)).get_span_context()
    return trace.Link(span_context) if span_context.is_valid else None


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


# -- metrics -----------------------------------------------------------------------------------------------------
# Instrument names, one place. Attributes are subjects, services, verdicts and reason codes: never ids or PHI.
_meter_provider: MeterProvider | None = None
_snapshot = InMemoryMetricReader()  # what `GET /metrics` shows
_lag_sources: list[Callable[[], Iterable[tuple[dict[str, str], int]]]] = []


def setup_metrics(service_name: str) -> MeterProvider:
    """The process's meter provider (once): readable at `GET /metrics`, and exported over OTLP/HTTP when
    `OTEL_EXPORTER_OTLP_ENDPOINT` is set."""
    global _meter_provider
    if _meter_provider is not None:
        return _meter_provider
    readers: list[MetricReader] = [_snapshot]
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
    _meter_provider = MeterProvider(resource=Resource.create({SERVICE_NAME: service_name}), metric_readers=readers)
    metrics.set_meter_provider(_meter_provider)
    return _meter_provider


_meter = metrics.get_meter("dsi")
MESSAGES_OUT = _meter.create_counter("dsi.messages.out", description="events published, by subject")
MESSAGES_IN = _meter.create_counter("dsi.messages.in", description="messages consumed, by subject and outcome")
DEAD_LETTERS = _meter.create_counter("dsi.dead_letters", description="messages dead-lettered, by subject")
VERDICTS = _meter.create_counter("dsi.submissions.verdicts", description="submission verdicts, by verdict and reason")
PAID = _meter.create_counter("dsi.payments.paid", unit="USD", description="amount paid, by milestone")


def _observe_lag(_: CallbackOptions) -> Iterable[Observation]:
    for source in list(_lag_sources):
        for attributes, lag in source():
            yield Observation(lag, attributes)


CONSUMER_LAG = _meter.create_observable_gauge("dsi.consumer.lag", callbacks=[_observe_lag],
                                              description="messages waiting for a durable consumer")


def report_lag(source: Callable[[], Iterable[tuple[dict[str, str], int]]]) -> Callable[[], None]:
    """Observe `source` for the lag gauge until the returned function is called."""
    _lag_sources.append(source)
    return lambda: _lag_sources.remove(source)


def metrics_snapshot() -> list[dict[str, Any]]:
    """Every metric point this process holds now, as plain JSON."""
    data = _snapshot.get_metrics_data()
    points: list[dict[str, Any]] = []
    for resource_metrics in data.resource_metrics if data else []:
        for scope in resource_metrics.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    points.append({"name": metric.name, "attributes": dict(point.attributes or {}),
                                   "value": getattr(point, "value", None)})
    return sorted(points, key=lambda p: (p["name"], sorted(p["attributes"].items())))
