"""The console's own read model (issue 15 §1): SQL tables on the console's database, kept current from its store of
participant overviews (`overview`, fed by the public event streams) by the shared projection runner — each batch's
rows and the runner's position in one transaction, its lag in `/readyz` and `/metrics`, rebuilt by
`dsi ops rebuild-projections --name console-overview`. The participants list, its filters and the paid chart answer
from here in one query each, instead of one HTTP read per participant."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from dsi_shared.projections import Projection, Rows, current
from dsi_shared.store import ServiceApplication
from sqlalchemy.engine import Connection

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


def read(app: ServiceApplication, query: Any, *args: Any) -> Any:
    """Run one of the queries above on the read model, caught up with everything the console's store recorded so far
    (a page right after the consumers applied an event shows it)."""
    runner = current(app, PROJECTION)
    with runner.engine.connect() as conn:
        return query(conn, *args)
