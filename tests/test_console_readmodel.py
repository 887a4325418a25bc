"""The console's own read model without NATS (issue 15 §1): a participant overview as the public events make it, its
rows (the projection's pure row function), and the list's filters and the paid chart as SQL on those rows."""

from __future__ import annotations

from decimal import Decimal
from uuid import UUID, uuid4

import sqlalchemy as sa
from console.overview import ParticipantOverview, paid
from console.readmodel import COUNTIES, METADATA, PARTICIPANTS, PAYMENTS, Filters, names, paid_by_type, participants, rows
from sqlalchemy.pool import StaticPool


def overview(name: str | None, provider_type: str = "snf", counties: tuple[str, ...] = ("Monterey",),
             eligible: bool = True, pid: UUID | None = None) -> ParticipantOverview:
    made = ParticipantOverview(participant_id=pid or uuid4())
    if name is not None:
        made.note_registration(legal_name=name, npi="1234567893", provider_type=provider_type, counties=list(counties))
        made.note_eligibility(eligible=eligible)
    return made


def test_an_overview_becomes_one_participant_row_its_counties_once_each_and_a_row_per_payment() -> None:
    sunrise = overview("Sunrise Care", counties=("Monterey", " monterey", "Santa Cruz"))
    sunrise.note_milestone1()
    paid(sunrise, "p-1", "2024Q2", Decimal("400.00"))
    paid(sunrise, "p-1", "2024Q2", Decimal("400.00"))  # the same payment re-published: noted once
    paid(sunrise, "p-2", "2024Q3", Decimal("12.34"))
    found = rows(None, sunrise)  # type: ignore[arg-type]
    assert found[PARTICIPANTS.name] == [{"legal_name": "Sunrise Care", "npi": "1234567893", "provider_type": "snf",
                                         "status": "eligible", "milestone1": True, "paid_cents": 41234}]
    assert found[COUNTIES.name] == [{"county_key": "monterey", "county": "Monterey", "position": 0},
                                    {"county_key": "santa cruz", "county": "Santa Cruz", "position": 2}]
    assert found[PAYMENTS.name] == [{"payment_id": "p-1", "quarter": "2024Q2", "amount_cents": 40000},
                                    {"payment_id": "p-2", "quarter": "2024Q3", "amount_cents": 1234}]
    assert sunrise.total_paid == Decimal("412.34")


def test_a_status_is_enrollments_a_departure_first_and_undetermined_eligibility_is_ineligible() -> None:
    assert overview("A", eligible=False).status == "ineligible"
    assert ParticipantOverview(participant_id=uuid4()).status == "ineligible"
    gone = overview("B")
    gone.note_departure(kind="withdrawn")
    assert gone.status == "withdrawn"
    assert rows(None, object()) == {}  # type: ignore[arg-type]  # anything else in the store: no rows


def loaded(*overviews: ParticipantOverview) -> sa.Engine:
    engine = sa.create_engine("sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False})
    METADATA.create_all(engine)
    with engine.begin() as conn:
        for seq, each in enumerate(overviews, 1):
            for table in (PARTICIPANTS, COUNTIES, PAYMENTS):
                for row in rows(None, each).get(table.name, []):  # type: ignore[arg-type]
                    conn.execute(sa.insert(table).values(id=str(each.id), **row,
                                                         **({"seq": seq} if table is PARTICIPANTS else {})))
    return engine


def test_the_list_filters_by_type_county_status_m1_search_and_amount_paid_never_paid_being_zero() -> None:
    alder = overview("alder Clinic", "pcp", ("Santa Cruz",))
    birch = overview("Birch 100% Care", "snf", ("Monterey",))
    birch.note_milestone1()
    paid(birch, "p-1", "2024Q2", Decimal("400.00"))
    cedar = overview("Cedar Home", "snf", ("monterey",), eligible=False)
    unregistered = overview(None)  # paid before its registration reached the console: not listed
    paid(unregistered, "p-9", "2024Q2", Decimal("9.00"))
    engine = loaded(alder, birch, cedar, unregistered)
    with engine.connect() as conn:
        def listed(**given: object) -> list[str]:
            return [r["legal_name"] for r in participants(conn, Filters(**given))]  # type: ignore[arg-type]

        assert listed() == ["alder Clinic", "Birch 100% Care", "Cedar Home"]  # by name, case aside
        assert listed(provider_type="snf") == ["Birch 100% Care", "Cedar Home"]
        assert listed(county="MONTEREY ") == ["Birch 100% Care", "Cedar Home"]
        assert listed(status="ineligible") == ["Cedar Home"]
        assert listed(milestone1="yes") == ["Birch 100% Care"] and listed(milestone1="no") == ["alder Clinic", "Cedar Home"]
        assert listed(search="100%") == ["Birch 100% Care"] and listed(search="_") == []  # LIKE wildcards are text
        assert listed(search=str(cedar.id)) == ["Cedar Home"]
        assert listed(paid_min=Decimal("400.00")) == ["Birch 100% Care"]
        assert listed(paid_max=Decimal(0)) == ["alder Clinic", "Cedar Home"]  # never paid: $0
        assert listed(paid_min=Decimal("0.01"), paid_max=Decimal("399.99")) == []
        [birch_row] = participants(conn, Filters(search="birch"))
        assert birch_row["counties"] == ["Monterey"] and birch_row["milestone1"] == {"achieved": True}
        assert birch_row["total_paid"] == Decimal("400.00")
        assert paid_by_type(conn) == {"2024Q2": {"snf": Decimal("400.00")}}  # the unregistered payee has no type
        assert names(conn) == {str(alder.id): "alder Clinic", str(birch.id): "Birch 100% Care",
                               str(cedar.id): "Cedar Home"}
