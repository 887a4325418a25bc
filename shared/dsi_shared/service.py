"""What a service is (a `ServiceSpec`, discovered through the `dsi.services` entry point) and how one runs
(a `ServiceRuntime`: its store, relay, consumers and HTTP app in one asyncio loop)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from importlib.metadata import entry_points
from typing import Any, Protocol

import nats.errors
from fastapi import APIRouter, Depends, FastAPI, HTTPException
from fastapi.responses import HTMLResponse, JSONResponse
from faststream.nats import NatsBroker
from nats.aio.client import Client

from dsi_shared import asyncapi, deadletter_api, events
from dsi_shared.audit import AuditContext, WhatIfContext
from dsi_shared.bus import Naming, Publishers, broker, ensure_streams
from dsi_shared.chain import HashChain
from dsi_shared.config import Settings
from dsi_shared.consumer import Subscription, TrackingConsumer, by_stream
from dsi_shared.contracts import Contract
from dsi_shared.events import IncomingEvent
from dsi_shared.http import PROBLEM_RESPONSES, Answer, Auth, DependencyUnavailable, RequestGate, install_problem_handlers
from dsi_shared.projections import Projection, ProjectionRunner, dispose, report_read_model_lag, runner
from dsi_shared.relay import Relay, outgoing
from dsi_shared.sealer import Sealer, read_checkpoints
from dsi_shared.store import ServiceApplication
from dsi_shared.telemetry import TracingMiddleware, metrics_snapshot, report_lag, setup_metrics, setup_telemetry

log = logging.getLogger(__name__)
VERIFY_NATS_TIMEOUT = 3.0  # seconds to read the checkpoints before `GET /audit/verify` answers 503
READY_CHECK_SECONDS = 0.8  # each /readyz check gives up after this, so /readyz always answers within 1 s
ENTRY_POINT_GROUP = "dsi.services"


class Health(Answer):
    status: str
    service: str


class Readiness(Answer):
    ready: bool
    checks: dict[str, bool]
    lag: int | None


class MetricPoint(Answer):
    name: str
    attributes: dict[str, Any]
    value: int | float | None


class Metrics(Answer):
    service: str
    metrics: list[MetricPoint]


class ChainVerification(Answer):
    service: str
    intact: bool
    events: int
    sealed_head: int
    unsealed: int
    checkpoints: int
    problems: list[str]


class Replay(Answer):
    service: str
    as_of: str | None
    aggregates: int
    events: int
    participants: dict[str, dict[str, str]]
    problems: list[str]


class Worker(Protocol):
    """A long-running part of a service (relay, consumer, listener): runs until `stopping` is set."""

    stopping: asyncio.Event

    async def run(self) -> None: ...


@dataclass
class AuditReport:
    """What one service's replay found: per-participant columns and problems (facts for later services: the context)."""

    rows: dict[str, dict[str, str]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    aggregates: int = 0
    events: int = 0


def rebuild_aggregates(app: ServiceApplication, report: AuditReport, context: AuditContext | None = None,
                       each: Callable[[Any], None] | None = None) -> list[Any]:
    """Replay every aggregate of a store from its notification log in one pass (no cache, no snapshot), checking
    that each aggregate's events follow one another without a gap. With `context.as_of` (an aware datetime), only
    events that happened by then count: each aggregate as it stood at that moment (time travel). `each` sees every
    counted domain event in log order (checks over the log itself, in the same pass: the log is read and decoded once)."""
    context = context or AuditContext()
    as_of, progress = context.as_of, context.progress
    aggregates: dict[Any, Any] = {}
    for notification in app.all_notifications():
        if progress is not None:
            progress()
        domain_event: Any = app.mapper.to_domain_event(notification)
        if as_of is not None and domain_event.timestamp > as_of:
            continue
        report.events += 1
        if each is not None:
            each(domain_event)
        current = aggregates.get(notification.originator_id)
        expected = 1 if current is None else current.version + 1
        if notification.originator_version != expected:
            report.problems.append(f"{app.name}: {notification.originator_id} has v{notification.originator_version} "
                                   f"after v{expected - 1} in the log (an event is missing)")
        aggregates[notification.originator_id] = domain_event.mutate(current)
    report.aggregates += len(aggregates)
    return list(aggregates.values())


def events_as_of(app: ServiceApplication, context: AuditContext | None = None) -> Iterator[Any]:
    """The store's domain events in log order, up to `context.as_of` when given."""
    as_of = context.as_of if context else None
    for notification in app.all_notifications():
        domain_event: Any = app.mapper.to_domain_event(notification)
        if as_of is None or domain_event.timestamp <= as_of:
            yield domain_event


def published_events(app: ServiceApplication, contract: Contract, as_of: datetime | None) -> Iterator[IncomingEvent]:
    """What this store put on the bus, in order, as its consumers received it (up to `as_of`): the upstream facts a
    downstream service's payouts are re-derived from."""
    for notification in app.all_notifications():
        domain_event: Any = app.mapper.to_domain_event(notification)
        if as_of is not None and domain_event.timestamp > as_of:
            continue
        message = outgoing(contract, notification.id, domain_event)
        if message is not None:
            yield events.decode(message[1], message[0], f"{contract.service}:{notification.id}")


def recorded_at(app: ServiceApplication, notification: Any) -> datetime:
    """When an event happened (its domain timestamp, set when it was triggered)."""
    stamped: Any = app.mapper.to_domain_event(notification)
    return stamped.timestamp


# The auditor hands each service the facts earlier services reported (milestones → payments): `dsi_shared.audit`.
Auditor = Callable[[ServiceApplication, AuditContext], AuditReport]
# What-if (issue 11 §5): each service works out its part under the current and the proposed rules book from its
# own recorded facts, reading what earlier services reported (submissions → milestones). Read-only.
WhatIf = Callable[[ServiceApplication, WhatIfContext], None]


@dataclass(frozen=True)
class Command:
    """A `dsi` sub-command a service contributes (as it contributes routes): `dsi <group> <name>`."""

    group: str
    name: str
    run: Callable[..., None]  # a typer command function (its parameters are the command's arguments and options)
    group_help: str = ""  # the group's help, when this service is the one that creates the group


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    default_port: int
    application: Callable[[str], ServiceApplication]
    routes: Callable[[Any, Auth], APIRouter]
    contract: Contract  # the events it publishes (its `contract.py`)
    subscriptions: tuple[Subscription[Any], ...] = ()
    audit: Auditor | None = None
    after: tuple[str, ...] = ()  # services whose audit / what-if report this one reads (they run first)
    on_start: Callable[[ServiceApplication], None] | None = None  # e.g. seed packaged configuration
    servers: tuple[Callable[[ServiceApplication], Worker], ...] = ()  # e.g. the MLLP listener
    observe: Callable[[Any], None] | None = None  # sees every recorded domain event: the service's own metrics
    what_if: WhatIf | None = None  # runs after the services in `after`, never records anything
    commands: tuple[Command, ...] = ()  # its own `dsi` sub-commands
    projections: tuple[Projection, ...] = ()  # its read models (`dsi_shared.projections`), kept current while it runs


def discover() -> dict[str, ServiceSpec]:
    """Every installed service, in audit order (services meet only on NATS; the CLI meets them here)."""
    return in_audit_order([ep.load() for ep in entry_points(group=ENTRY_POINT_GROUP)])


def in_audit_order(found: list[ServiceSpec]) -> dict[str, ServiceSpec]:
    """By name, each service after the services whose audit or what-if report it reads (`after`)."""
    specs = {spec.name: spec for spec in found}
    ordered: dict[str, ServiceSpec] = {}

    def place(name: str, path: tuple[str, ...]) -> None:
        if name in ordered or name not in specs:
            return
        if name in path:
            raise ValueError(f"services audit after each other in a cycle: {' → '.join((*path, name))}")
        for earlier in specs[name].after:
            place(earlier, (*path, name))
        ordered[name] = specs[name]

    for name in sorted(specs):
        place(name, ())
    return ordered


class ServiceRuntime:
    def __init__(self, spec: ServiceSpec, settings: Settings | None = None, exit_on_crash: bool = False) -> None:
        """`exit_on_crash`: a service process (`dsi serve`) exits when a background worker dies, for its supervisor
        to restart it; in-process (tests, benchmarks) the death is logged and `/readyz` reports it."""
        self.spec = spec
        self.exit_on_crash = exit_on_crash
        self.crashed: list[str] = []
        self.settings = settings or Settings(spec.name, spec.default_port)
        setup_telemetry(f"dsi-{spec.name}")
        setup_metrics(f"dsi-{spec.name}")
        self.app = spec.application(self.settings.store)
        self.naming = Naming(self.settings.bus_prefix)
        self.auth = Auth(self.settings.tokens)
        self.nc: Client | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self.sealer: Sealer | None = None
        self.read_models: list[ProjectionRunner] = []
        self._read_model_tasks: list[asyncio.Task[None]] = []
        self._unreport_read_models: Callable[[], None] = lambda: None
        self._unreachable: asyncio.Event | None = None  # set by a connection problem while joining
        self.broker, self.consumers, self.publishers = bus_endpoints(
            spec, self.settings, self.app, on_error_seen=self._connection_problem)
        self._unreport_lag: Callable[[], None] = lambda: None
        self.workers: list[Worker] = []
        self._joining: asyncio.Task[None] | None = None
        self._on_bus = False  # connected, streams declared, relay and consumers running
        self._store_probe: asyncio.Future[bool] | None = None
        self.http = self._build_http()

    async def start(self) -> None:
        """Open the store, then join the bus: at once when NATS answers; when it does not, return anyway (HTTP
        serves: `/healthz` alive, `/readyz` 503) and join in the background the moment NATS is reachable."""
        if self.spec.on_start is not None:
            await asyncio.to_thread(self.spec.on_start, self.app)
        await self._start_read_models()
        unreachable = self._unreachable = asyncio.Event()
        joining = self._joining = asyncio.create_task(self._join_bus(unreachable), name=f"{self.spec.name}-join-bus")
        told = asyncio.create_task(unreachable.wait())
        await asyncio.wait({joining, told}, return_when=asyncio.FIRST_COMPLETED)
        told.cancel()
        if joining.done():
            joining.result()  # a failure to start on a reachable bus is raised, as before
            return
        log.warning("%s: NATS unreachable at start; serving HTTP, not ready until NATS is reached", self.spec.name)
        joining.add_done_callback(self._crashed)

    async def _join_bus(self, unreachable: asyncio.Event) -> None:
        self.nc = await self.broker.connect()  # waits for NATS for ever; `unreachable` hears each failed attempt
        js = self.nc.jetstream()
        if self.settings.manage_streams:
            await ensure_streams(js, self.naming)
        loop = asyncio.get_running_loop()
        relay = Relay(self.app, self.spec.contract, js, self.naming, observe=self.spec.observe, send=self.publishers.send)
        self.app.on_recorded(lambda: relay.wake_threadsafe(loop))
        sealer = self.sealer = Sealer(self.app, self.spec.name, js, self.naming, self.settings.checkpoint_seconds)
        self.app.on_recorded(lambda: sealer.wake_threadsafe(loop))
        for consumer in self.consumers:
            consumer.js, consumer.dead_letter = js, self.publishers.send
        self._unreport_lag = report_lag(lambda: [({"service": self.spec.name, "consumer": c.durable}, c.lag)
                                                 for c in self.consumers])
        self.workers = [relay, sealer, Subscribers(self.broker, self.consumers),
                        *(server(self.app) for server in self.spec.servers)]
        self.tasks = [asyncio.create_task(worker.run(), name=f"{self.spec.name}-{i}")
                      for i, worker in enumerate(self.workers)]
        for task in self.tasks:
            task.add_done_callback(self._crashed)
        self._on_bus = True

    async def _start_read_models(self) -> None:
        """Create (or rebuild, after a schema change) the read models' tables and keep them current from the
        store's log: they need the store only, not NATS."""
        self.read_models = await asyncio.to_thread(lambda: [runner(self.app, p) for p in self.spec.projections])
        loop = asyncio.get_running_loop()
        for read_model in self.read_models:
            self.app.on_recorded(lambda r=read_model: r.wake_threadsafe(loop))  # type: ignore[misc]
            task = asyncio.create_task(read_model.run(), name=f"{self.spec.name}-read-model-{read_model.projection.name}")
            task.add_done_callback(self._crashed)
            self._read_model_tasks.append(task)
        self._unreport_read_models = report_read_model_lag(self.spec.name, self.read_models)

    def _connection_problem(self, _: Exception) -> None:
        if self._unreachable is not None:
            self._unreachable.set()

    def _crashed(self, task: asyncio.Task[None]) -> None:
        stopping = any(r.stopping.is_set() for r in self.read_models)
        if stopping or (self.workers and all(w.stopping.is_set() for w in self.workers)):
            return  # shutting down: a worker ending with an error now is expected
        if not task.cancelled() and task.exception() is not None:
            log.error("%s background task %s died", self.spec.name, task.get_name(), exc_info=task.exception())
            self.crashed.append(task.get_name())
            if self.exit_on_crash:
                os._exit(70)  # a service without its relay/consumer must not look healthy: let the supervisor restart it

    async def stop(self) -> None:
        if self._joining is not None and not self._joining.done():
            self._joining.cancel()  # NATS never came: stop trying
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._joining
        self._on_bus = False
        self._unreport_lag()
        self._unreport_read_models()
        for read_model in self.read_models:
            read_model.stopping.set()
        for task in self._read_model_tasks:
            task.cancel()
        if self._read_model_tasks:
            await asyncio.wait(self._read_model_tasks, timeout=10)
        self._read_model_tasks = []
        self._unreport_lag = lambda: None
        for worker in self.workers:
            worker.stopping.set()
        for task in self.tasks:
            task.cancel()
        if self.tasks:
            _, stuck = await asyncio.wait(self.tasks, timeout=10)
            for task in stuck:
                log.error("%s task %s did not stop", self.spec.name, task.get_name())
        self.tasks, self.workers = [], []
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.broker.stop(), 10)  # its subscribers, then its connection
        if self.nc is not None:
            with contextlib.suppress(Exception):
                await self.nc.close()
        dispose(self.app)  # the read models' SQL connections, beside the store's own
        self.app.close()

    @contextlib.asynccontextmanager
    async def lifespan(self, _: FastAPI) -> AsyncIterator[None]:
        await self.start()
        try:
            yield
        finally:
            await self.stop()

    def _build_http(self) -> FastAPI:
        # FastAPI's own telemetry records the raw URL path (member ids in `/members/{id}`: PHI) and exception
        # messages: ours (TracingMiddleware) names spans by route template only.
        telemetry: Any = {"tracing": False, "operation_spans": False, "logs": False}
        http = FastAPI(title=f"DSI {self.spec.name}", lifespan=self.lifespan, telemetry=telemetry)
        install_problem_handlers(http)
        # Token first, then the body's size, before a byte of the body is read (issue 12 §3).
        http.add_middleware(RequestGate, auth=self.auth)
        http.add_middleware(TracingMiddleware, service=self.spec.name)

        @http.get("/healthz", tags=["health"], response_model=Health)
        def healthz() -> dict[str, str]:
            return {"status": "ok", "service": self.spec.name}

        @http.get("/readyz", tags=["health"], response_model=Readiness,
                  responses={503: {"model": Readiness, "description": "not ready: the failing checks are false"}})
        async def readyz() -> JSONResponse:
            """Ready: the store answers, NATS is connected, and no consumer is more than DSI_READY_MAX_LAG behind.
            Answers within a second whatever is down: a check that does not answer in time has failed."""
            connected = bool(self._on_bus and self.nc and self.nc.is_connected)
            lag, store, read_lag = await asyncio.gather(self._lag() if connected else _nothing(), self._store_answers(),
                                                        self._read_model_lag())
            checks = {"nats": connected, "store": store,
                      "consumer_lag": lag is not None and lag <= self.settings.ready_max_lag,
                      "workers": not self.crashed,
                      # each read model no more than DSI_READY_MAX_LAG events behind its store
                      "read_model_lag": read_lag is not None and read_lag <= self.settings.ready_max_lag}
            ready = all(checks.values())
            return JSONResponse({"ready": ready, "checks": checks, "lag": lag}, status_code=200 if ready else 503)

        @http.get("/asyncapi.json", tags=["docs"], include_in_schema=False)
        def asyncapi_json() -> JSONResponse:
            """What this service publishes and reads on NATS (AsyncAPI, generated by FastStream)."""
            return JSONResponse(asyncapi.document(self.broker, self.spec.name))

        @http.get("/asyncapi", tags=["docs"], include_in_schema=False)
        def asyncapi_page() -> HTMLResponse:
            return HTMLResponse(asyncapi.page(self.broker, self.spec.name))

        @http.get("/metrics", tags=["health"], dependencies=[Depends(self.auth.require("ops", "auditor"))],
                  response_model=Metrics, responses=PROBLEM_RESPONSES)
        def metrics() -> dict[str, Any]:
            """This process's metrics now (also exported over OTLP when configured)."""
            return {"service": self.spec.name, "metrics": metrics_snapshot()}

        @http.get("/audit/verify", tags=["audit"], dependencies=[Depends(self.auth.require("auditor", "ops"))],
                  response_model=ChainVerification, responses=PROBLEM_RESPONSES)
        async def verify() -> dict[str, Any]:
            """This store's hash chain recomputed from its events and checked against its published checkpoints."""
            # NATS down: 503 at once, naming the dependency (not a 500 after the client's own timeouts)
            unavailable = DependencyUnavailable("nats", "NATS is unreachable: the published checkpoints cannot be read")
            if self.nc is None or not self.nc.is_connected:
                raise unavailable
            try:
                checkpoints = await asyncio.wait_for(
                    read_checkpoints(self.nc.jetstream(), self.naming, self.spec.name), VERIFY_NATS_TIMEOUT)
            except (TimeoutError, nats.errors.Error, OSError):
                raise unavailable from None
            report = await asyncio.to_thread(lambda: HashChain(self.app).verify(checkpoints))
            return {"service": self.spec.name, "intact": report.intact, "events": report.events,
                    "sealed_head": report.sealed_head, "unsealed": report.unsealed, "checkpoints": report.checkpoints,
                    "problems": report.problems}

        @http.get("/audit/replay", tags=["audit"], dependencies=[Depends(self.auth.require("auditor", "ops"))],
                  response_model=Replay, responses=PROBLEM_RESPONSES)
        async def replay(as_of: datetime | None = None) -> dict[str, Any]:
            """This store rebuilt from its events (as of a time, if given): its rows per participant and any
            difference it finds on its own. `dsi audit replay` adds the re-derivation across services."""
            audit = self.spec.audit
            if audit is None:
                raise HTTPException(404, "this service has no audit")
            if as_of is not None and as_of.tzinfo is None:
                raise HTTPException(422, "as_of needs a UTC offset, e.g. 2025-12-31T23:59:59-08:00")
            report = await asyncio.to_thread(audit, self.app, AuditContext(as_of=as_of))
            return {"service": self.spec.name, "as_of": as_of.isoformat() if as_of else None,
                    "aggregates": report.aggregates, "events": report.events, "participants": report.rows,
                    "problems": report.problems}

        http.include_router(deadletter_api.routes(self.spec.name, self.auth, lambda: (self.nc, self.naming),
                                                  lambda: self.consumers))
        http.include_router(self.spec.routes(self.app, self.auth), responses=PROBLEM_RESPONSES)
        return http

    async def _lag(self) -> int | None:
        """The largest consumer lag now (None: the server could not be asked within READY_CHECK_SECONDS)."""
        try:
            lags = await asyncio.wait_for(asyncio.gather(*(c.lag_now() for c in self.consumers)), READY_CHECK_SECONDS)
            return max(lags, default=0)
        except Exception:  # noqa: BLE001 - any failure to ask (a timeout included) means not ready
            return None

    async def _read_model_lag(self) -> int | None:
        """The largest read-model lag now, in events (None: not answered within READY_CHECK_SECONDS)."""
        if not self.read_models:
            return 0
        try:
            lags = await asyncio.wait_for(asyncio.to_thread(lambda: [r.lag() for r in self.read_models]),
                                          READY_CHECK_SECONDS)
            return max(lags)
        except Exception:  # noqa: BLE001 - any failure to ask means not ready
            return None

    async def _store_answers(self) -> bool:
        """The store answered a query within READY_CHECK_SECONDS (one probe at a time: a hung database does not
        pile up threads, each /readyz waits on the probe in flight)."""
        if self._store_probe is None or self._store_probe.done():
            self._store_probe = asyncio.ensure_future(asyncio.to_thread(self._store_reachable))
        try:
            return await asyncio.wait_for(asyncio.shield(self._store_probe), READY_CHECK_SECONDS)
        except TimeoutError:
            return False

    def _store_reachable(self) -> bool:
        try:
            self.app.recorder.max_notification_id()
            return True
        except Exception:  # noqa: BLE001 - any failure means not ready
            return False


async def _nothing() -> None:
    return None


def bus_endpoints(spec: ServiceSpec, settings: Settings, app: ServiceApplication | None,
                  on_error_seen: Callable[[Exception], None] | None = None,
                  ) -> tuple[NatsBroker, list[TrackingConsumer], Publishers]:
    """A service's FastStream broker with its subscribers (one durable pull consumer per upstream stream) and
    publishers (its contract's subjects). Without `app` only to document them (`dsi docs asyncapi`): never started."""
    naming = Naming(settings.bus_prefix)
    nats_broker = broker(settings, f"dsi-{spec.name}", on_error_seen)
    consumers = [TrackingConsumer(app, spec.name, None, naming, stream, handlers,  # type: ignore[arg-type]
                                  ack_wait=settings.ack_wait_seconds, max_attempts=settings.max_attempts)
                 for stream, handlers in by_stream(spec.subscriptions).items()]
    for consumer in consumers:
        consumer.subscribe(nats_broker)
    return nats_broker, consumers, Publishers(nats_broker, naming, spec.name, spec.contract.published)


class Subscribers:
    """The worker that starts the broker's subscribers once their durable consumers exist (declared, or updated,
    as before; retried while NATS or the streams are away)."""

    def __init__(self, nats_broker: NatsBroker, consumers: list[TrackingConsumer]) -> None:
        self.broker, self.consumers = nats_broker, consumers
        self.stopping = asyncio.Event()

    async def run(self) -> None:
        for consumer in self.consumers:
            consumer.stopping = self.stopping
            await consumer.declare()
        while not self.stopping.is_set():
            try:
                await self.broker.start()
                break
            except (TimeoutError, nats.errors.Error, OSError) as exc:
                log.warning("subscribers waiting for NATS: %s", type(exc).__name__)
                await asyncio.sleep(0.5)
        await self.stopping.wait()
