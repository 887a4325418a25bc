"""The console's own read models on real NATS and PostgreSQL (issue 15 §1: the console "builds its own read models from
the streams"): enrollment's registrations, milestones' Milestone 1, coverage evaluations and closes, payments'
payments and submissions' verdicts reach the console's tables exactly once — through a batch whose acks were lost
(NATS delivers it again) and a producer's re-publish — and the participants list, its filters and the charts page
show them from those tables."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from decimal import Decimal
from typing import Any
from uuid import UUID

import httpx
import sqlalchemy as sa
from console.activity import FileVerdict
from console.overview import ParticipantOverview
from console.readmodel import (
    COVERAGE,
    FILES,
    FILES_PROJECTION,
    PAYMENTS,
    PROJECTION,
    QUARTERS_PROJECTION,
    Filters,
    coverage,
    participants,
)
from console.readmodel import read as read_model
from console.reads import settled
from console.upstream import Upstream
from console.web import web
from dsi_shared.projections import compare_with_rebuild
from dsi_shared.relay import outgoing
from nats.aio.msg import Msg

from tests.harness import STAFF, Stack, eventually
from tests.hl7_corpus import adt, combined
from tests.test_cap_scope import milestone1_paid
from tests.test_program_rules import pcp_quarters_closed
from tests.test_submissions import MEMBER, post_hl7, ready_snf


async def listed(stack: Stack, filters: Filters) -> list[dict[str, Any]]:
    app = stack.runtimes["console"].app
    return list(await asyncio.to_thread(read_model, app, participants, filters))


async def signed_in_staff(client: httpx.AsyncClient) -> None:
    login = await client.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', login.text)
    assert csrf is not None
    answer = await client.post("/login", data={"token": "staff", "csrf": csrf.group(1)})
    assert answer.status_code == 303, answer.text


async def test_enrollment_milestones_and_payments_events_land_in_the_consoles_tables_once_and_its_pages_show_them(
        stack: Stack, store_kind: str) -> None:
    """On PostgreSQL (production) and on a SQLite file (`make run`'s default store)."""
    await stack.start("enrollment", "submissions", "milestones", "payments", "console")
    console = stack.runtimes["console"]
    deliveries: list[int] = []  # how many times each message the console's consumers handled had been delivered
    for consumer in console.consumers:
        handle, ack_all, lost = consumer.handle_batch, consumer._ack_all, [False]

        async def counted(messages: Sequence[Msg], handle: Any = handle) -> None:
            deliveries.extend(m.metadata.num_delivered for m in messages)
            await handle(messages)

        async def first_acks_lost(items: Sequence[Any], ack_all: Any = ack_all, lost: list[bool] = lost) -> None:
            """A crash between the commit and the acks, once per consumer: NATS delivers that batch again."""
            if not lost[0]:
                lost[0] = True
                return
            await ack_all(items)

        consumer.handle_batch = counted  # type: ignore[method-assign]
        consumer._ack_all = first_acks_lost  # type: ignore[method-assign]

    paid = await stack.register(legal_name="Harbor Care Home", counties=["Monterey", "Santa Cruz"])
    unpaid = await stack.register(legal_name="alder Rest Home", counties=["Fresno"])
    statement = await milestone1_paid(stack, paid, "2024-05-01T10:00:00-07:00")
    [payment] = statement["payments"]
    amount = Decimal(statement["total_paid"])

    async def projected() -> list[dict[str, Any]]:
        rows = await listed(stack, Filters(paid_min=Decimal("0.01")))
        return rows if rows and rows[0]["milestone1"]["achieved"] else []

    [row] = await eventually(projected, timeout=30)
    assert (row["id"], row["legal_name"], row["counties"], row["status"]) == (paid, "Harbor Care Home",
                                                                              ["Monterey", "Santa Cruz"], "eligible")
    assert row["total_paid"] == amount and row["provider_type"] == "skilled_nursing"

    async def redelivered() -> bool:
        return max(deliveries, default=0) >= 2 and all(c.lag == 0 for c in console.consumers)

    await eventually(redelivered, timeout=30)

    # payments re-publishes its payment (a new stream message, past JetStream's duplicate window): the same event
    payments = stack.runtimes["payments"]
    [issued] = [n for n in payments.app.recorder.select_notifications(start=1, limit=10_000)
                if n.topic.endswith(".PaymentIssued")]
    subject, body = outgoing(payments.spec.contract, issued.id, payments.app.mapper.to_domain_event(issued)) or ("", b"")
    js = (await stack.nc()).jetstream()
    again = await js.publish(stack.naming.subject(subject), body)

    async def consumed_again() -> bool:
        lags = [await c.lag_now() for c in console.consumers]
        info = await js.consumer_info(stack.naming.stream("DSI_PAYMENTS"), "console--dsi-payments")
        return not any(lags) and info.ack_floor.stream_seq >= again.seq

    await eventually(consumed_again, timeout=30)
    [row] = await listed(stack, Filters(paid_min=Decimal("0.01")))
    assert row["total_paid"] == amount  # counted once
    overview = console.app.repository.get(UUID(paid))
    assert isinstance(overview, ParticipantOverview)
    assert list(overview.payments) == [payment["id"]]
    noted = [e for e in console.app.events.get(UUID(paid)) if type(e).__name__ == "PaymentNoted"]
    assert len(noted) == 1
    with console.read_models[0].engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(PAYMENTS)).scalar() == 1

    # its lag in /readyz and /metrics, as the services' read models and consumers report theirs
    probes = stack.clients["console"]
    ready = (await probes.get("/readyz")).json()
    assert ready["ready"] and ready["checks"]["read_model_lag"] and ready["checks"]["consumer_lag"] and ready["lag"] == 0
    metrics = (await probes.get("/metrics", headers={"Authorization": "Bearer ops-token"})).json()["metrics"]
    assert {"name": "dsi.read_model.lag", "attributes": {"service": "console", "read_model": "console-overview"},
            "value": 0} in metrics
    consumers = {p["attributes"].get("consumer") for p in metrics if p["name"] == "dsi.consumer.lag"}
    assert {"console--dsi-enrollment", "console--dsi-milestones", "console--dsi-payments"} <= consumers

    # `dsi ops rebuild-projections` drops the tables and builds them again from the console's store: the same rows
    with console.read_models[0].engine.connect() as conn:
        before = [sorted(tuple(r) for r in conn.execute(sa.select(t))) for t in PROJECTION.tables]
    env = {**os.environ, "CONSOLE_STORE": stack.store_url_for("console")}
    rebuilt = subprocess.run([sys.executable, "-m", "dsi_shared.cli", "ops", "rebuild-projections", "--name",
                              "console-overview"], env=env, capture_output=True, text=True, timeout=120)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "console: read model console-overview rebuilt from" in rebuilt.stdout
    with console.read_models[0].engine.connect() as conn:
        assert [sorted(tuple(r) for r in conn.execute(sa.select(t))) for t in PROJECTION.tables] == before
    assert compare_with_rebuild(console.app, PROJECTION).differences == []

    # the pages answer from these tables
    pages = web(console, Upstream(stack.clients))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=pages), base_url="http://console") as client:
        await signed_in_staff(client)
        everyone = (await client.get("/participants")).text
        assert "2 participants" in everyone and everyone.index("alder Rest Home") < everyone.index("Harbor Care Home")
        by_county = (await client.get("/participants", params={"county": "santa cruz"})).text
        assert "1 participant<" in by_county and "Harbor Care Home" in by_county and "alder" not in by_county
        never_paid = (await client.get("/participants", params={"paid_max": "0"})).text
        assert "1 participant<" in never_paid and "alder Rest Home" in never_paid and "Harbor" not in never_paid
        at_least = (await client.get("/participants", params={"paid_min": str(amount), "milestone1": "yes"})).text
        assert "1 participant<" in at_least and "Harbor Care Home" in at_least
        charts = (await client.get("/charts")).text
        money = f"${amount:,.2f}"
        assert re.search(rf"<th scope=\"row\">{payment['quarter']}</th><td>skilled_nursing</td><td>{re.escape(money)}</td>",
                         charts), charts
    assert unpaid != paid


async def test_files_verdicts_and_coverage_evaluations_land_in_the_consoles_tables_once_and_the_charts_show_them(
        stack: Stack, store_kind: str) -> None:
    """Submissions' `file-judged` (a credited file, a rejected one, and a credit reversed by a cancel: its verdict
    stated again) and milestones' `coverage-evaluated` and `quarter-closed` reach the console's tables exactly once —
    a re-publish changes nothing — and the charts page answers from them without asking submissions or milestones."""
    snf = await ready_snf(stack)  # enrollment, milestones, submissions; an SNF past Milestone 1 sending as SUNNY_SNF
    await stack.start("console")
    console = stack.runtimes["console"]
    [late] = (await post_hl7(stack, combined("A02", MEMBER, occurred="20251105080000"),
                             "2025-11-08T08:01:00-08:00"))["submissions"]  # ISO week 45
    [credited] = (await post_hl7(stack, combined("A01", MEMBER), "2025-11-01T18:00:00-07:00"))["submissions"]  # week 44
    [cancel] = (await post_hl7(stack, adt("A11", MEMBER), "2025-11-02T09:00:00-08:00"))["submissions"]  # week 44
    assert (late["verdict"], late["reasons"], credited["verdict"]) == ("rejected", ["late"], "credited")
    assert cancel["reasons"] == [f"cancels:{credited['id']}"]
    pcp = await pcp_quarters_closed(stack)  # a record received 2025-02-01 (ISO week 5), credited; 2025Q1 evaluated
    evaluations = (await stack.clients["milestones"].get("/evaluations", params={"quarter": "2025Q1"},
                                                         headers=STAFF)).json()["evaluations"]
    [figures] = [e["figures"] for e in evaluations if e["participant_id"] == pcp]

    async def projected() -> list[Any]:
        await settled(console)
        app = console.app
        files = await asyncio.to_thread(read_model, app, lambda conn: list(conn.execute(sa.select(FILES))),
                                        projections=(FILES_PROJECTION,))
        covered = await asyncio.to_thread(read_model, app, coverage, "2025Q1",
                                          projections=(QUARTERS_PROJECTION, PROJECTION))
        return [files, covered] if len(files) == 4 and covered else []

    files, [pcp_row] = await eventually(projected, timeout=30)
    by_id = {row.id: row for row in files}
    assert (by_id[late["id"]].kind, by_id[late["id"]].week, by_id[late["id"]].participant_id) == (
        "rejected: late", "2025-W45", snf)
    assert (by_id[credited["id"]].kind, by_id[cancel["id"]].kind) == ("credited", None)  # a cancel: recorded
    assert by_id[credited["id"]].verdict == "credited"
    reversed_ = console.app.repository.get(UUID(credited["id"]))
    assert isinstance(reversed_, FileVerdict) and reversed_.reasons == ["cancelled_by"]  # its later verdict, codes only
    assert (pcp_row.participant_id, pcp_row.attributed, pcp_row.with_record, str(pcp_row.coverage),
            pcp_row.threshold) == (pcp, figures["attributed_members"], figures["members_with_record"],
                                   figures["coverage_percent"], figures["threshold_percent"])

    # submissions re-publishes the rejected file's verdict (past JetStream's duplicate window): nothing changes
    submissions = stack.runtimes["submissions"]
    [stated] = [n for n in submissions.app.recorder.select_notifications(start=1, limit=10_000)
                if n.topic.endswith(".FileJudged") and str(n.originator_id) == late["id"]]
    subject, body = outgoing(submissions.spec.contract, stated.id,
                             submissions.app.mapper.to_domain_event(stated)) or ("", b"")
    js = (await stack.nc()).jetstream()
    again = await js.publish(stack.naming.subject(subject), body)

    async def consumed_again() -> bool:
        info = await js.consumer_info(stack.naming.stream("DSI_SUBMISSIONS"), "console--dsi-submissions")
        return not any([await c.lag_now() for c in console.consumers]) and info.ack_floor.stream_seq >= again.seq

    await eventually(consumed_again, timeout=30)
    noted = [e for e in console.app.events.get(UUID(late["id"])) if type(e).__name__ == "VerdictNoted"]
    assert len(noted) == 1
    with console.read_models[0].engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(FILES)).scalar() == 4
        assert conn.execute(sa.select(sa.func.count()).select_from(COVERAGE)
                            .where(COVERAGE.c.quarter == "2025Q1")).scalar() == 1
    for projection in (FILES_PROJECTION, QUARTERS_PROJECTION):
        assert compare_with_rebuild(console.app, projection).differences == []

    # the charts page, with submissions and milestones no longer there to ask: the console's tables alone
    await stack.stop("submissions")
    await stack.stop("milestones")
    pages = web(console, Upstream(stack.clients))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=pages), base_url="http://console") as client:
        await signed_in_staff(client)
        charts = (await client.get("/charts")).text
    for week, kind in (("2025-W05", "credited"), ("2025-W44", "credited"), ("2025-W45", "rejected: late")):
        assert f'<tr><th scope="row">{week}</th><td>{kind}</td><td>1</td></tr>' in charts, charts
    assert "Coverage per PCP against its threshold, 2025Q1" in charts  # the latest quarter evaluated, by default
    assert re.search(rf"<td>{figures['attributed_members']}</td><td>{figures['members_with_record']}</td>"
                     rf"<td>{re.escape(figures['coverage_percent'])}%</td><td>{figures['threshold_percent']}%</td>",
                     charts), charts
