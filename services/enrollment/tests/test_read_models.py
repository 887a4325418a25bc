"""The participants read model (issue 15 §1) and, through it, the projection framework: filters, sort and cursor
pages; each event applied once; the table write and the position in one transaction; rebuilds and their audit."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import sqlalchemy as sa
from dsi_shared import projections
from dsi_shared.projections import POSITIONS, Projection, ProjectionRunner, compare_with_rebuild, runner
from enrollment.application import Enrollment
from enrollment.projections import PARTICIPANTS, PROJECTION
from fastapi.testclient import TestClient

from .conftest import FORM, STAFF

NPIS = ["1000000004", "1000000012", "1000000020", "1000000038", "1000000046"]
PEOPLE = [("Delta Clinic", "skilled_nursing", ["Monterey"]), ("Alpha Care", "skilled_nursing", ["Fresno", "Kern"]),
          ("Echo Health", "hospital", ["monterey"]), ("Bravo Nursing", "skilled_nursing", ["Kern"]),
          ("Charlie SNF", "skilled_nursing", ["MONTEREY", "Kern"])]


def register_all(api: TestClient) -> None:
    for (name, kind, counties), npi in zip(PEOPLE, NPIS, strict=True):
        form = {**FORM, "legal_name": name, "npi": npi, "tin": f"94{npi[-7:]}", "provider_type": kind, "counties": counties,
                "is_hospital": kind == "hospital"}
        assert api.post("/participants", json=form, headers=STAFF).status_code in (200, 201)


def names(api: TestClient, **params: Any) -> tuple[list[str], dict[str, Any]]:
    body = api.get("/participants", params=params, headers=STAFF).json()
    return [p["legal_name"] for p in body["participants"]], body


def test_participants_list_filters_and_sorts_from_the_read_model(api: TestClient) -> None:
    register_all(api)
    everyone, body = names(api)
    assert everyone == sorted(name for name, _, _ in PEOPLE) and body["count"] == 5 and body["next_cursor"] is None
    assert names(api, county="monterey")[0] == ["Charlie SNF", "Delta Clinic", "Echo Health"]  # any case
    assert names(api, county="Kern", provider_type="skilled_nursing", sort="-legal_name")[0] == [
        "Charlie SNF", "Bravo Nursing", "Alpha Care"]
    assert names(api, sort="registered")[0] == [name for name, _, _ in PEOPLE]
    assert names(api, milestone1="achieved")[0] == [] and names(api, milestone1="pending")[1]["count"] == 5
    assert names(api, earned_min="0.01")[0] == []
    for huge in ("6.15e150", "1e13", "NaN", "Infinity"):  # schemathesis found a bound the SQL BIGINT cannot hold
        assert api.get("/participants", params={"earned_max": huge}, headers=STAFF).status_code == 422, huge


def test_pages_follow_an_opaque_cursor_in_a_stable_order(api: TestClient) -> None:
    register_all(api)
    seen: list[str] = []
    cursor = None
    for _ in range(3):
        page, body = names(api, limit=2, sort="-legal_name", **({"cursor": cursor} if cursor else {}))
        assert len(page) <= 2 and body["count"] == 5
        seen += page
        cursor = body["next_cursor"]
    assert cursor is None and seen == sorted((name for name, _, _ in PEOPLE), reverse=True)
    _, first = names(api, limit=2)
    assert api.get("/participants", params={"cursor": first["next_cursor"], "sort": "registered"},
                   headers=STAFF).status_code == 422  # a cursor means nothing under another sort
    assert api.get("/participants", params={"cursor": "not-ours"}, headers=STAFF).status_code == 422
    forged = base64.urlsafe_b64encode(json.dumps(["legal_name", {"a": 1}, "x"]).encode()).decode()
    assert api.get("/participants", params={"cursor": forged}, headers=STAFF).status_code == 422
    assert api.get("/participants", params={"limit": 201}, headers=STAFF).status_code == 422


def rows_of(live: ProjectionRunner) -> list[tuple[Any, ...]]:
    with live.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.select(PARTICIPANTS).order_by(PARTICIPANTS.c.id))]


def test_a_batch_applied_again_changes_nothing(enrollment_app: Enrollment, api: TestClient) -> None:
    register_all(api)
    live = projections.current(enrollment_app, PROJECTION)
    before, position = rows_of(live), live.stored_position()
    replica = ProjectionRunner(enrollment_app, PROJECTION, live.engine)  # another process, still at the start
    replica.position = 0
    page = enrollment_app.recorder.select_notifications(start=0, limit=500, inclusive_of_start=False)
    assert replica.apply_batch(page) is False  # the position moved on: the redelivered events change nothing
    assert rows_of(live) == before and live.stored_position() == position
    assert replica.catch_up() == 0 and rows_of(live) == before


def test_a_failure_after_the_table_write_rolls_back_the_rows_with_the_position(
        enrollment_app: Enrollment, api: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    live = runner(enrollment_app, PROJECTION)
    register_all(api)
    write = ProjectionRunner._write

    def write_then_crash(self: ProjectionRunner, *args: Any) -> None:
        write(self, *args)
        raise RuntimeError("crash between the table write and the position")

    monkeypatch.setattr(ProjectionRunner, "_write", write_then_crash)
    with pytest.raises(RuntimeError):
        live.catch_up()
    assert rows_of(live) == [] and live.stored_position() == 0 and live.lag() > 0  # neither happened
    monkeypatch.undo()
    live.catch_up()
    assert len(rows_of(live)) == 5 and live.lag() == 0


def test_a_new_version_rebuilds_the_tables_and_the_audit_finds_a_tampered_row(
        enrollment_app: Enrollment, api: TestClient) -> None:
    register_all(api)
    live = projections.current(enrollment_app, PROJECTION)
    assert compare_with_rebuild(enrollment_app, PROJECTION).differences == []
    with live.engine.begin() as conn:
        victim = conn.execute(sa.select(PARTICIPANTS.c.id).order_by(PARTICIPANTS.c.id)).scalar()
        conn.execute(sa.update(PARTICIPANTS).where(PARTICIPANTS.c.id == victim).values(status="terminated"))
    [difference] = compare_with_rebuild(enrollment_app, PROJECTION).differences
    assert difference.row_id == victim and "status" in difference.what and "terminated" not in difference.what
    newer = Projection(PROJECTION.name, PROJECTION.version + 1, PROJECTION.metadata, PROJECTION.aggregates,
                       PROJECTION.rows)
    rebuilt = ProjectionRunner(enrollment_app, newer, live.engine)
    assert rebuilt.stored_position() == 0 and rows_of(live) == []  # dropped and created anew
    rebuilt.catch_up()
    assert compare_with_rebuild(enrollment_app, newer).differences == []
    with live.engine.connect() as conn:
        assert conn.execute(sa.select(POSITIONS.c.version).where(POSITIONS.c.name == "participants")).scalar() == 2
