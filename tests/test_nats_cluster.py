"""A three-node NATS cluster (issue 16 §2): streams at replicas 3 (`DSI_STREAM_REPLICAS`), the services connected to
all three (`NATS_URL` a comma-separated list). The leader of a stream in use is killed mid-flow; the thin flow and an
SNF quarter still pay exactly while it is down, and after it restarts it catches up (stream info lists it current)
and the dollars are unchanged."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import nats.errors
import nats.js.errors
import pytest
from dsi_shared.bus import STREAMS, server_of
from dsi_shared.config import nats_servers, stream_replicas
from dsi_shared.natsserver import NatsServer, free_port
from nats.js import JetStreamContext

from tests.harness import STAFF, Stack, eventually, quiet, signature
from tests.hl7_corpus import combined
from tests.test_submissions import CSV, MEMBER, post_hl7

NODES = ("n1", "n2", "n3")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[dict[str, NatsServer]]:
    """Three nats-server processes on loopback, routed to each other, each with its own JetStream store."""
    routes = {name: free_port() for name in NODES}
    servers = {name: NatsServer(tmp_path / name, log_file=tmp_path / f"{name}.log", name=name, cluster="dsi-test",
                                cluster_port=routes[name], routes=[p for n, p in routes.items() if n != name])
               for name in NODES}
    try:
        for server in servers.values():
            server.start()
        yield servers
    finally:
        for server in servers.values():
            server.stop()


async def jetstream_ready(js: JetStreamContext) -> bool:
    """The cluster has elected a JetStream meta leader: it answers account requests (503 until then)."""
    try:
        await js.account_info()
        return True
    except (nats.errors.Error, nats.js.errors.Error, TimeoutError):
        return False


async def publish_stored(stack: Stack, subject: str, data: dict[str, str]) -> None:
    """Publish until JetStream acknowledges it (a stream may be electing a new leader for a moment)."""

    async def stored() -> bool:
        try:
            await stack.publish(subject, data)
            return True
        except (nats.errors.Error, nats.js.errors.Error, TimeoutError):
            return False

    await eventually(stored, timeout=30)


async def dollars(stack: Stack, pid: str) -> tuple[str, list[tuple[str, str]]]:
    statement = await stack.payments_of(pid)
    assert statement is not None
    return statement["total_paid"], [(p["milestone"], p["amount"]) for p in statement["payments"]]


@pytest.mark.integration
async def test_the_flow_pays_exactly_with_the_stream_leader_down_and_after_it_rejoins(
        cluster: dict[str, NatsServer], postgres_dsn: str, bus_prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSI_STREAM_REPLICAS", "3")
    stack = Stack(",".join(s.url for s in cluster.values()), bus_prefix, lambda service: postgres_dsn)
    try:
        js = (await stack.nc()).jetstream()
        await eventually(lambda: jetstream_ready(js), timeout=30)
        await stack.start("enrollment", "milestones", "submissions", "payments")
        enrollment_stream = stack.naming.stream("DSI_ENROLLMENT")
        assert (await js.stream_info(enrollment_stream)).config.num_replicas == 3

        pid = await stack.register(sending_facilities=["SUNNY_SNF"])
        client = stack.clients["enrollment"]
        response = await client.post(f"/participants/{pid}/agreements", json=signature("LOA"), headers=STAFF)
        assert response.status_code == 201

        async def relayed() -> bool:  # enrollment's events are on its stream: the stream is in use
            return (await js.stream_info(enrollment_stream)).state.messages >= 3

        await eventually(relayed)
        leader = (await js.stream_info(enrollment_stream)).cluster.leader  # type: ignore[union-attr]
        assert leader in cluster
        cluster[leader].kill()

        # Mid-flow, one server of three down: the rest of the thin flow, then an SNF quarter.
        response = await client.post(f"/participants/{pid}/agreements", json=signature("DSA"), headers=STAFF)
        assert response.status_code == 201
        await publish_stored(stack, "dsi.in.agreement-signed", {"participant_id": pid, **signature("DSA")})
        await publish_stored(stack, "dsi.in.agreement-signed",
                             {"participant_id": pid, **signature("HIE", "2024-06-20T09:00:00-07:00")})
        await stack.accept_agreements(pid)
        await stack.wait_paid(pid, timeout=30)
        await client.post("/members/import", content=CSV, headers={**STAFF, "content-type": "text/csv"})
        milestones = stack.runtimes["milestones"].app
        submissions = stack.runtimes["submissions"].app

        async def member_known() -> bool:
            facts = submissions.participant_facts(UUID(pid))  # type: ignore[attr-defined]
            return bool(facts and facts.milestone1_at and submissions.member_facts(MEMBER))  # type: ignore[attr-defined]

        await eventually(member_known, timeout=30)
        [credited] = (await post_hl7(stack, combined("A01", MEMBER), "2025-11-01T18:00:00-07:00"))["submissions"]
        assert credited["verdict"] == "credited"

        async def credit_known() -> bool:
            return credited["id"] in milestones.ledger_or_new(UUID(pid)).credits  # type: ignore[attr-defined]

        await eventually(credit_known, timeout=30)
        quarters = stack.clients["milestones"]
        assert (await quarters.post("/quarters/2025Q4/close", headers=STAFF)).json()["evaluations"] == 1
        [evaluation] = (await quarters.get("/evaluations", params={"state": "pending_validation"},
                                           headers=STAFF)).json()["evaluations"]
        assert (await quarters.post(f"/evaluations/{evaluation['id']}/validate", headers=STAFF)).status_code == 200

        async def quarter_paid() -> bool:
            return len((await dollars(stack, pid))[1]) == 2

        await eventually(quarter_paid, timeout=30)
        await quiet(stack, timeout=30)
        exact = ("10400.00", [("M1", "10000.00"), ("SNF:2025Q4", "400.00")])
        assert await dollars(stack, pid) == exact  # while the old leader is down

        cluster[leader].start()
        streams = [stack.naming.stream(name) for name in STREAMS]

        async def rejoined() -> bool:
            for stream in streams:
                info = await js.stream_info(stream)
                peers = {p.name: p for p in (info.cluster.replicas or [])} if info.cluster else {}
                if info.cluster is None or (info.cluster.leader != leader and not (
                        leader in peers and peers[leader].current and not peers[leader].offline)):
                    return False
            return True

        await eventually(rejoined, timeout=60)
        await quiet(stack, timeout=30)
        assert await dollars(stack, pid) == exact
    finally:
        await stack.close()


def test_stream_replicas_default_to_one_and_refuse_what_jetstream_cannot_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DSI_STREAM_REPLICAS", raising=False)
    assert stream_replicas() == 1
    for wrong in ("0", "6", "three", "-1"):
        monkeypatch.setenv("DSI_STREAM_REPLICAS", wrong)
        with pytest.raises(ValueError, match="DSI_STREAM_REPLICAS"):
            stream_replicas()


def test_a_cluster_nats_url_lists_each_server_and_messages_name_them_without_passwords() -> None:
    url = "nats://svc:secret@nats-1:4222, nats://svc:secret@nats-2:4222,nats://nats-3:4223"
    assert nats_servers(url) == ["nats://svc:secret@nats-1:4222", "nats://svc:secret@nats-2:4222", "nats://nats-3:4223"]
    assert server_of(url) == "nats-1:4222,nats-2:4222,nats-3:4223"
