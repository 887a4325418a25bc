"""Read models (issue 15 §1): SQL tables kept current from a service's events, for the list endpoints and the console.

A `Projection` names its tables (SQLAlchemy Core) and how one aggregate becomes rows. Its `ProjectionRunner` reads
the service's own notification log after the events are recorded, in order, and for each batch writes the rows of
every aggregate the batch touched *and* its new position in one transaction on the service's own database (the same
URL as the store; a scratch in-memory SQLite beside an in-memory store). A batch already applied (a second replica,
a retried read) is a no-op: the position moves only from the value it was read at, so each event counts once.

Schema changes: no Alembic. `dsi_projection` keeps each projection's `version`; when the code declares another,
the tables are dropped, created anew and rebuilt from the log at start (read models are derived data: rebuilding is
the migration).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote
from uuid import UUID

import sqlalchemy as sa
from eventsourcing.persistence import Notification
from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import StaticPool

from dsi_shared.store import DDL_LOCK, ServiceApplication

log = logging.getLogger(__name__)
Rows = Mapping[str, Sequence[Mapping[str, Any]]]  # table name → the rows of one aggregate
BATCH = 500  # notifications per transaction

# The bookkeeping tables every service database with read models has.
BOOK = sa.MetaData()
POSITIONS = sa.Table("dsi_projection", BOOK,
                     sa.Column("name", sa.String(100), primary_key=True),
                     sa.Column("version", sa.Integer, nullable=False),
                     sa.Column("position", sa.BigInteger, nullable=False))


@dataclass(frozen=True)
class Projection:
    """One read model of a service's own aggregates: `rows(app, aggregate)` gives each table's rows for the
    aggregate as it stands after a batch (every table has an `id` column holding the aggregate's id; the first
    table may have `seq`, kept by the runner as the notification id that created the aggregate: creation order).
    Bump `version` whenever the tables or the rows change: the runner then rebuilds."""

    name: str
    version: int
    metadata: sa.MetaData
    aggregates: tuple[type[Any], ...]  # whose events count
    rows: Callable[[ServiceApplication, Any], Rows]

    @property
    def tables(self) -> list[sa.Table]:
        return list(self.metadata.tables.values())  # as declared: the first is the main table

    def topic_prefixes(self) -> tuple[str, ...]:
        return tuple(f"{cls.__module__}:{cls.__qualname__}." for cls in self.aggregates)


def engine_for(app: ServiceApplication) -> Engine:
    """The service's own database, as its store was opened (a scratch in-memory SQLite for an in-memory store)."""
    env = app.env
    module = env.get("PERSISTENCE_MODULE", "")
    if module == "eventsourcing.postgres":
        user, password = quote(env.get("POSTGRES_USER", "")), quote(env.get("POSTGRES_PASSWORD", ""))
        url = (f"postgresql+psycopg://{user}:{password}@{env.get('POSTGRES_HOST')}:{env.get('POSTGRES_PORT', '5432')}"
               f"/{env.get('POSTGRES_DBNAME')}")
        return sa.create_engine(url, pool_size=5, max_overflow=5, pool_pre_ping=True)
    path = env.get("SQLITE_DBNAME", ":memory:") if module == "eventsourcing.sqlite" else ":memory:"
    if path == ":memory:" or "mode=memory" in path:
        return sa.create_engine("sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False})
    return sa.create_engine(f"sqlite:///{path}", connect_args={"check_same_thread": False, "timeout": 30})


class ProjectionRunner:
    """Keeps one projection current (a `Worker`: `run` until `stopping`); `catch_up` on demand (a list endpoint
    reads its own writes), `rebuild` from the start, `lag` for readiness and metrics."""

    def __init__(self, app: ServiceApplication, projection: Projection, engine: Engine) -> None:
        self.app, self.projection, self.engine = app, projection, engine
        self.stopping = asyncio.Event()
        self.position = 0
        self.last_lag = 0  # as of the worker's last pass (the metric; readiness asks afresh)
        self._lock = threading.Lock()  # one writer per process; other processes are fenced by the position
        self._prefixes = projection.topic_prefixes()
        self._wake: asyncio.Event | None = None
        self.prepare()

    # -- schema ----------------------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Create the tables, or drop and create them when the declared version differs from the stored one."""
        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text(DDL_LOCK))  # replicas starting together create and version-check in turn
            BOOK.create_all(conn)
            row = conn.execute(sa.select(POSITIONS.c.version, POSITIONS.c.position)
                               .where(POSITIONS.c.name == self.projection.name)).first()
            if row is not None and row.version == self.projection.version:
                self.projection.metadata.create_all(conn)
                self.position = int(row.position)
                return
            if row is not None:
                log.warning("read model %s: version %s → %s, rebuilding", self.projection.name, row.version,
                            self.projection.version)
            self._reset(conn)

    def _reset(self, conn: Connection) -> None:
        self.projection.metadata.drop_all(conn)
        self.projection.metadata.create_all(conn)
        conn.execute(sa.delete(POSITIONS).where(POSITIONS.c.name == self.projection.name))
        conn.execute(sa.insert(POSITIONS).values(name=self.projection.name, version=self.projection.version, position=0))
        self.position = 0

    def rebuild(self, progress: Callable[[int], None] | None = None) -> int:
        """Drop the tables and build them again from the whole log; the events applied."""
        with self._lock:
            with self.engine.begin() as conn:
                self._reset(conn)
        return self.catch_up(progress)

    # -- applying --------------------------------------------------------------------------------------------
    def lag(self) -> int:
        """Notifications recorded that this read model has not applied yet."""
        return max(0, (self.app.recorder.max_notification_id() or 0) - self.stored_position())

    def stored_position(self) -> int:
        with self.engine.connect() as conn:
            found = conn.execute(sa.select(POSITIONS.c.position).where(POSITIONS.c.name == self.projection.name)).scalar()
        return int(found or 0)

    def catch_up(self, progress: Callable[[int], None] | None = None, upto: int | None = None) -> int:
        """Apply every notification recorded so far (up to `upto`), batch by batch; returns how many were read."""
        read = 0
        with self._lock:
            self.position = self.stored_position()  # another replica may have moved it
            while upto is None or self.position < upto:
                page = self.app.recorder.select_notifications(start=self.position, limit=BATCH, stop=upto,
                                                              inclusive_of_start=False)
                if not page:
                    break
                if not self.apply_batch(page):
                    self.position = self.stored_position()  # moved (or reset by a rebuild) elsewhere: go on from there
                    continue
                read += len(page)
                if progress is not None:
                    progress(len(page))
        return read

    def apply_batch(self, page: Sequence[Notification]) -> bool:
        """One transaction: the rows of every aggregate these notifications touched, and the new position (only
        from the position they follow: a batch someone else applied first changes nothing). False: not applied."""
        start, end = self.position, page[-1].id
        touched: dict[UUID, list[Notification]] = {}
        for notification in page:
            if notification.topic.startswith(self._prefixes):
                touched.setdefault(UUID(str(notification.originator_id)), []).append(notification)
        rows = {aggregate_id: self._rows(aggregate_id, notifications) for aggregate_id, notifications in touched.items()}
        created = {aggregate_id: notifications[0].id for aggregate_id, notifications in touched.items()
                   if notifications[0].originator_version == 1}
        with self.engine.begin() as conn:
            moved = conn.execute(sa.update(POSITIONS).where(POSITIONS.c.name == self.projection.name,
                                                            POSITIONS.c.position == start).values(position=end))
            if moved.rowcount != 1:
                return False  # applied elsewhere first (or rebuilt meanwhile): nothing written
            self._write(conn, rows, created)
        self.position = end
        return True

    def _rows(self, aggregate_id: UUID, notifications: Sequence[Notification]) -> Rows:
        first = notifications[0].originator_version
        aggregate: Any = None if first == 1 else self.app.repository.get(aggregate_id, version=first - 1)
        for notification in notifications:
            domain_event: Any = self.app.mapper.to_domain_event(notification)
            aggregate = domain_event.mutate(aggregate)
        return self.projection.rows(self.app, aggregate)

    def _write(self, conn: Connection, rows: Mapping[UUID, Rows], created: Mapping[UUID, int]) -> None:
        if not rows:
            return
        tables = self.projection.tables
        ids = [str(i) for i in rows]
        main = tables[0]
        seqs: dict[str, int] = {}
        if "seq" in main.c:
            for chunk in _chunks(ids, 500):
                found = conn.execute(sa.select(main.c.id, main.c.seq).where(main.c.id.in_(chunk)))
                seqs.update({str(row.id): int(row.seq) for row in found})
            seqs.update({str(i): n for i, n in created.items()})
        for table in tables:
            for chunk in _chunks(ids, 500):
                conn.execute(sa.delete(table).where(table.c.id.in_(chunk)))
            new = [{**row, "id": str(aggregate_id), **({"seq": seqs.get(str(aggregate_id), 0)} if table is main and
                                                         "seq" in table.c else {})}
                   for aggregate_id, by_table in rows.items() for row in by_table.get(table.name, ())]
            if new:
                conn.execute(sa.insert(table), new)

    # -- as a worker -----------------------------------------------------------------------------------------
    def wake_threadsafe(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._wake is not None:
            loop.call_soon_threadsafe(self._wake.set)

    async def run(self) -> None:
        self._wake = asyncio.Event()
        while not self.stopping.is_set():
            self._wake.clear()
            try:
                await asyncio.to_thread(self.catch_up)
                self.last_lag = await asyncio.to_thread(self.lag)
            except Exception as exc:  # noqa: BLE001 - the database away: try again (readiness shows the lag)
                log.warning("read model %s could not catch up: %s", self.projection.name, type(exc).__name__)
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=1.0)  # polled too: other replicas record events
            except TimeoutError:
                pass


def _chunks(items: Sequence[str], size: int) -> Iterable[Sequence[str]]:
    return (items[i:i + size] for i in range(0, len(items), size))


# -- runners per application: the routes, the runtime and the CLI share one per projection ----------------------
_RUNNERS: weakref.WeakKeyDictionary[ServiceApplication, dict[str, ProjectionRunner]] = weakref.WeakKeyDictionary()
_ENGINES: weakref.WeakKeyDictionary[ServiceApplication, Engine] = weakref.WeakKeyDictionary()
_GUARD = threading.Lock()


def runner(app: ServiceApplication, projection: Projection) -> ProjectionRunner:
    """This application's runner of `projection` (created, with its tables, on first use)."""
    with _GUARD:
        runners = _RUNNERS.setdefault(app, {})
        if projection.name not in runners:
            engine = _ENGINES.get(app)
            if engine is None:
                engine = _ENGINES[app] = engine_for(app)
            runners[projection.name] = ProjectionRunner(app, projection, engine)
        return runners[projection.name]


def current(app: ServiceApplication, projection: Projection) -> ProjectionRunner:
    """The runner, caught up with everything recorded so far: a list read after a command sees the command."""
    found = runner(app, projection)
    if found.lag():
        found.catch_up()
    return found


def dispose(app: ServiceApplication) -> None:
    with _GUARD:
        _RUNNERS.pop(app, None)
        engine = _ENGINES.pop(app, None)
    if engine is not None:
        engine.dispose()


@dataclass
class Difference:
    table: str
    row_id: str | None
    what: str


@dataclass
class Comparison:
    projection: str
    position: int
    rows: int = 0
    differences: list[Difference] = field(default_factory=list)


def compare_with_rebuild(app: ServiceApplication, projection: Projection) -> Comparison:
    """Build `projection` afresh in a scratch database up to the live one's position and compare them table by
    table; the first differing row of each table is named by its aggregate id (never its content)."""
    live = runner(app, projection)  # compared where it stands: the audit writes nothing to the live tables
    scratch_engine = sa.create_engine("sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False})
    try:
        scratch = ProjectionRunner(app, projection, scratch_engine)
        position = live.stored_position()
        scratch.catch_up(upto=position)
        result = Comparison(projection.name, position)
        for table in projection.tables:
            order = [c for c in table.primary_key.columns] or list(table.c)
            with live.engine.connect() as a, scratch_engine.connect() as b:
                left = [tuple(r) for r in a.execute(sa.select(table).order_by(*order))]
                right = [tuple(r) for r in b.execute(sa.select(table).order_by(*order))]
            result.rows += len(left)
            if left != right:
                result.differences.append(_first_difference(table, left, right))
        return result
    finally:
        scratch_engine.dispose()


def _first_difference(table: sa.Table, live: list[tuple[Any, ...]], rebuilt: list[tuple[Any, ...]]) -> Difference:
    index = list(table.c.keys()).index("id")
    for a, b in zip(live, rebuilt, strict=False):
        if a != b:
            columns = [name for name, x, y in zip(table.c.keys(), a, b, strict=True) if x != y]
            return Difference(table.name, str(a[index]), f"row {a[index]} differs in {', '.join(columns)}")
    longer, what = (live, "only in the live table") if len(live) > len(rebuilt) else (rebuilt, "missing from the live table")
    extra = longer[min(len(live), len(rebuilt))]
    return Difference(table.name, str(extra[index]), f"row {extra[index]} {what}")


# -- the lag gauge: `GET /metrics` and OTLP -------------------------------------------------------------------------
_lag_sources: dict[int, tuple[str, list[ProjectionRunner]]] = {}


def _observe(_: CallbackOptions) -> Iterable[Observation]:
    for service, runners in list(_lag_sources.values()):
        for each in runners:
            yield Observation(each.last_lag, {"service": service, "read_model": each.projection.name})


READ_MODEL_LAG = metrics.get_meter("dsi").create_observable_gauge(
    "dsi.read_model.lag", callbacks=[_observe], description="events recorded that a read model has not applied yet")


def report_read_model_lag(service: str, runners: list[ProjectionRunner]) -> Callable[[], None]:
    """Observe these runners for the lag gauge until the returned function is called."""
    key = id(runners)
    _lag_sources[key] = (service, runners)
    return lambda: _lag_sources.pop(key, None) and None
