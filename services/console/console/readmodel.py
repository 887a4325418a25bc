"""The console's own read models (issue 15 §1): SQL tables on the console's database, kept current from its store
(participant overviews, `overview`; files' verdicts, coverage evaluations and closed quarters, `activity`; all fed by
the public event streams) by the shared projection runner — each batch's rows and the runner's position in one
transaction, their lag in `/readyz` and `/metrics`, rebuilt by `dsi ops rebuild-projections --name console`. The
participants list, its filters and the three charts answer from here in one query each, instead of HTTP reads per
participant."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from dsi_shared.projections import Projection, Rows, current
from dsi_shared.store import ServiceApplication
from sqlalchemy.engine import Connection

from console.activity import ClosedQuarter, CoverageFigures, FileVerdict
from console.chart import Coverage
from console.figures import coverage_rows, file_kind, week_of
from console.overview import ParticipantOverview, as_row, cents

METADATA = sa.MetaData()
PARTICIPANTS = sa.Table(
    "console_participants", METADATA,
    sa.Column("id", sa.String(36), primary_key=True),  # the participant's id
    sa.Column("seq", sa.BigInteger, nullable=False),  # the order the console first heard of it
    sa.Column("legal_name", sa.String(300)),  # null: known from a payment or milestone, not registered yet
    sa.Column("npi", sa.String(10)),
    sa.Column("provider_type", sa.String(60)),
    sa.Column("status", sa.String(40), nullable=False),
    sa.Column("milestone1", sa.Boolean, nullable=False),
    sa.Column("paid_cents", sa.BigInteger, nullable=False),  # every payment issued to it, in all
    sa.Index("console_participants_name", "legal_name", "id"),  # the list's order
    sa.Index("console_participants_type_status", "provider_type", "status"),
    sa.Index("console_participants_paid", "paid_cents"),
)
COUNTIES = sa.Table(
    "console_participant_counties", METADATA,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("county_key", sa.String(100), primary_key=True),  # casefolded: the filter ignores case
    sa.Column("county", sa.String(100), nullable=False),  # as the interest form named it
    sa.Column("position", sa.Integer, nullable=False),  # the form's order
    sa.Index("console_participant_counties_key", "county_key", "id"),
)
PAYMENTS = sa.Table(
    "console_payments", METADATA,
    sa.Column("id", sa.String(36), primary_key=True),  # the participant's id
    sa.Column("payment_id", sa.String(36), primary_key=True),
    sa.Column("quarter", sa.String(6), nullable=False),
    sa.Column("amount_cents", sa.BigInteger, nullable=False),
    sa.Index("console_payments_quarter", "quarter"),
)
NO_QUARTER = "—"  # a payment without a quarter, as the chart labels it


def rows(_: ServiceApplication, overview: Any) -> Rows:
    """One participant overview → its rows in each table."""
    if not isinstance(overview, ParticipantOverview):
        return {}
    counties: dict[str, tuple[int, str]] = {}
    for position, county in enumerate(overview.counties):
        counties.setdefault(county.strip().casefold(), (position, county.strip()))
    return {
        PARTICIPANTS.name: [as_row(overview)],
        COUNTIES.name: [{"county_key": key, "county": name, "position": position}
                        for key, (position, name) in counties.items() if key],
        PAYMENTS.name: [{"payment_id": payment_id, "quarter": p["quarter"] or NO_QUARTER,
                         "amount_cents": cents(Decimal(p["amount"]))} for payment_id, p in overview.payments.items()],
    }


PROJECTION = Projection("console-overview", 1, METADATA, (ParticipantOverview,), rows)

FILES_METADATA = sa.MetaData()
FILES = sa.Table(
    "console_files", FILES_METADATA,
    sa.Column("id", sa.String(36), primary_key=True),  # the submission's id
    sa.Column("participant_id", sa.String(36)),  # null: received for no known participant
    sa.Column("week", sa.String(8), nullable=False),  # ISO week of its receipt, e.g. 2025-W05
    sa.Column("verdict", sa.String(20), nullable=False),
    sa.Column("kind", sa.String(80)),  # as the chart counts it: credited, rejected: <first reason>; null: neither
    sa.Index("console_files_week_kind", "week", "kind"),
)


def file_rows(_: ServiceApplication, verdict: Any) -> Rows:
    """One file's verdict → its row (a file whose verdict has not reached the console yet has none)."""
    if not isinstance(verdict, FileVerdict) or not verdict.verdict:
        return {}
    return {FILES.name: [{"participant_id": verdict.participant_id, "week": week_of(verdict.received_at),
                          "verdict": verdict.verdict,
                          "kind": file_kind({"verdict": verdict.verdict, "reasons": verdict.reasons})}]}


FILES_PROJECTION = Projection("console-files", 1, FILES_METADATA, (FileVerdict,), file_rows)

QUARTERS_METADATA = sa.MetaData()
COVERAGE = sa.Table(
    "console_coverage", QUARTERS_METADATA,
    sa.Column("id", sa.String(36), primary_key=True),  # the evaluation's id
    sa.Column("seq", sa.BigInteger, nullable=False),  # the order they were recorded in
    sa.Column("participant_id", sa.String(36), nullable=False),
    sa.Column("quarter", sa.String(6), nullable=False),
    sa.Column("threshold_percent", sa.Integer),
    sa.Column("attributed_members", sa.Integer, nullable=False),
    sa.Column("members_with_record", sa.Integer, nullable=False),
    sa.Column("coverage_percent", sa.String(12), nullable=False),  # a decimal string, as milestones evaluated it
    sa.Index("console_coverage_quarter", "quarter", "seq"),
)
QUARTERS = sa.Table(
    "console_quarters", QUARTERS_METADATA,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("quarter", sa.String(6), nullable=False, unique=True),
    sa.Column("evaluations", sa.Integer, nullable=False),  # recorded by its close
)


def quarter_rows(_: ServiceApplication, aggregate: Any) -> Rows:
    """A coverage evaluation or a closed quarter → its row."""
    if isinstance(aggregate, CoverageFigures):
        return {COVERAGE.name: [{"participant_id": aggregate.participant_id, "quarter": aggregate.quarter,
                                 "threshold_percent": aggregate.threshold_percent,
                                 "attributed_members": aggregate.attributed_members,
                                 "members_with_record": aggregate.members_with_record,
                                 "coverage_percent": aggregate.coverage_percent}]}
    if isinstance(aggregate, ClosedQuarter):
        return {QUARTERS.name: [{"quarter": aggregate.quarter, "evaluations": aggregate.evaluations}]}
    return {}


QUARTERS_PROJECTION = Projection("console-quarters", 1, QUARTERS_METADATA, (CoverageFigures, ClosedQuarter),
                                 quarter_rows)
PROJECTIONS = (PROJECTION, FILES_PROJECTION, QUARTERS_PROJECTION)


def dollars(amount_cents: int) -> Decimal:
    return Decimal(amount_cents).scaleb(-2)


@dataclass(frozen=True)
class Filters:
    """The participants list's filters (empty: no filter); the paid bounds in dollars, inclusive."""

    provider_type: str = ""
    county: str = ""
    status: str = ""
    search: str = ""
    milestone1: str = ""  # yes, no, or any
    paid_min: Decimal | None = None
    paid_max: Decimal | None = None


def participants(conn: Connection, filters: Filters) -> list[dict[str, Any]]:
    """The registered participants within the filters, by legal name, each with its counties: the rows the list
    renders (id, legal_name, npi, provider_type, counties, status, milestone1.achieved, total_paid)."""
    p = PARTICIPANTS.c
    query = sa.select(PARTICIPANTS).where(p.legal_name.is_not(None))
    if filters.provider_type:
        query = query.where(p.provider_type == filters.provider_type)
    if filters.status:
        query = query.where(p.status == filters.status)
    if filters.county.strip():
        serving = sa.select(COUNTIES.c.id).where(COUNTIES.c.county_key == filters.county.strip().casefold())
        query = query.where(p.id.in_(serving))
    words = filters.search.strip().lower()
    if words:
        query = query.where(sa.or_(sa.func.lower(p.legal_name).contains(words, autoescape=True),
                                   p.npi.contains(words, autoescape=True), p.id == words))
    if filters.milestone1 in {"yes", "no"}:
        query = query.where(p.milestone1.is_(filters.milestone1 == "yes"))
    if filters.paid_min is not None:
        query = query.where(p.paid_cents >= cents(filters.paid_min))
    if filters.paid_max is not None:
        query = query.where(p.paid_cents <= cents(filters.paid_max))
    found = [dict(row._mapping) for row in conn.execute(query.order_by(p.legal_name, p.id))]
    served: dict[str, list[str]] = defaultdict(list)
    for chunk in (found[i:i + 500] for i in range(0, len(found), 500)):
        listed = sa.select(COUNTIES.c.id, COUNTIES.c.county).where(COUNTIES.c.id.in_([r["id"] for r in chunk]))
        for row in conn.execute(listed.order_by(COUNTIES.c.id, COUNTIES.c.position)):
            served[row.id].append(row.county)
    shown = [{"id": r["id"], "legal_name": r["legal_name"], "npi": r["npi"], "provider_type": r["provider_type"],
              "counties": served.get(r["id"], []), "status": r["status"],
              "milestone1": {"achieved": bool(r["milestone1"])}, "total_paid": dollars(r["paid_cents"])}
             for r in found]
    return sorted(shown, key=lambda r: r["legal_name"].lower())  # as staff read names: case does not order them


def paid_by_type(conn: Connection) -> dict[str, dict[str, Decimal]]:
    """Dollars paid per quarter, by the provider type of the registered participant paid; quarters in order."""
    q = sa.select(PAYMENTS.c.quarter, PARTICIPANTS.c.provider_type, sa.func.sum(PAYMENTS.c.amount_cents)) \
        .join(PARTICIPANTS, PARTICIPANTS.c.id == PAYMENTS.c.id).where(PARTICIPANTS.c.legal_name.is_not(None)) \
        .group_by(PAYMENTS.c.quarter, PARTICIPANTS.c.provider_type)
    paid: dict[str, dict[str, Decimal]] = defaultdict(dict)
    for quarter, provider_type, total in conn.execute(q):
        paid[quarter][provider_type] = dollars(int(total))
    return {quarter: dict(sorted(types.items())) for quarter, types in sorted(paid.items())}


def names(conn: Connection) -> dict[str, str]:
    """Each registered participant's legal name, by id."""
    listed = sa.select(PARTICIPANTS.c.id, PARTICIPANTS.c.legal_name).where(PARTICIPANTS.c.legal_name.is_not(None))
    return {row.id: row.legal_name for row in conn.execute(listed)}


def files_by_week(conn: Connection) -> dict[str, dict[str, int]]:
    """Files credited and rejected (by the first reason's code) per ISO week of receipt, of registered participants;
    weeks in order."""
    q = sa.select(FILES.c.week, FILES.c.kind, sa.func.count()) \
        .join(PARTICIPANTS, PARTICIPANTS.c.id == FILES.c.participant_id) \
        .where(FILES.c.kind.is_not(None), PARTICIPANTS.c.legal_name.is_not(None)).group_by(FILES.c.week, FILES.c.kind)
    weeks: dict[str, dict[str, int]] = defaultdict(dict)
    for week, kind, files in conn.execute(q):
        weeks[week][kind] = int(files)
    return {week: dict(sorted(kinds.items())) for week, kinds in sorted(weeks.items())}


def coverage(conn: Connection, quarter: str) -> list[Coverage]:
    """Each PCP's coverage in `quarter` against its threshold (its latest evaluation of it), named from the
    participants table."""
    c = COVERAGE.c
    found = conn.execute(sa.select(COVERAGE).where(c.quarter == quarter).order_by(c.seq, c.id))
    evaluations = [{"participant_id": row.participant_id,
                    "figures": {"coverage_percent": row.coverage_percent, "threshold_percent": row.threshold_percent,
                                "attributed_members": row.attributed_members,
                                "members_with_record": row.members_with_record}} for row in found]
    return coverage_rows(evaluations, names(conn))


def latest_quarter(conn: Connection) -> str | None:
    """The latest quarter whose close recorded any evaluation (the coverage chart's default)."""
    return conn.execute(sa.select(sa.func.max(QUARTERS.c.quarter)).where(QUARTERS.c.evaluations > 0)).scalar()


def read(app: ServiceApplication, query: Any, *args: Any, projections: tuple[Projection, ...] = (PROJECTION,)) -> Any:
    """Run one of the queries above on the read models it reads, each caught up with everything the console's store
    recorded so far (a page right after the consumers applied an event shows it)."""
    runner = current(app, projections[0])
    for other in projections[1:]:
        current(app, other)
    with runner.engine.connect() as conn:
        return query(conn, *args)
