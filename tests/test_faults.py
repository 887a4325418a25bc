"""Exactly once under faults: a killed consumer process, a restarted NATS server, out-of-order and
late redelivery, poison messages. Every test ends by counting dollars."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from dsi_shared.natsserver import NatsServer
from enrollment.contract import (
    AgreementReviewed,
    AgreementSigned,
    EligibilityDetermined,
    ParticipantRegistered,
    RulesPublished,
)
from eventsourcing.persistence import Tracking

from tests.harness import STAFF, Stack, eventually, quiet, signature
from tests.rulesdoc import packaged

pytestmark = pytest.mark.integration


async def sign_all(stack: Stack, pid: str, agreements: tuple[str, ...] = ("LOA", "DSA", "HIE")) -> None:
    for agreement in agreements:
        response = await stack.clients["enrollment"].post(
            f"/participants/{pid}/agreements", json=signature(agreement), headers=STAFF)
        assert response.status_code == 201
    await stack.accept_agreements(pid, agreements)


async def test_payments_process_killed_after_commit_before_ack_pays_once(stack: Stack) -> None:
    await stack.start("enrollment", "milestones")
    stack.spawn("payments")
    pid = await stack.register()
    await quiet(stack)  # payments holds the rules and the registration (which names the organization whose cap it is)
    stack.kill("payments")
    # A real payments process that commits each message and then holds it unacked for a minute.
    url = stack.spawn("payments", DSI_FAULT_PAUSE_BEFORE_ACK_SECONDS="60")
    await sign_all(stack, pid)

    async def committed() -> bool:
        statement = await stack.payments_of(pid, url)
        return bool(statement and statement["payments"])

    await eventually(committed)
    stack.kill("payments")  # SIGKILL: the milestone message was committed but never acked

    js = (await stack.nc()).jetstream()
    durable = "payments--dsi-milestones"
    before = await js.consumer_info(stack.naming.stream("DSI_MILESTONES"), durable)
    assert before.num_ack_pending == 1

    url = stack.spawn("payments")
    await quiet(stack)
    after = await js.consumer_info(stack.naming.stream("DSI_MILESTONES"), durable)
    assert after.num_redelivered >= 1 or after.delivered.consumer_seq > before.delivered.consumer_seq
    statement = await stack.payments_of(pid, url)
    assert statement is not None
    assert [p["amount"] for p in statement["payments"]] == ["10000.00"]
    assert statement["total_paid"] == "10000.00"


async def test_nats_restarted_mid_flow_loses_and_doubles_nothing(tmp_path: Path, bus_prefix: str, store_url_for) -> None:  # type: ignore[no-untyped-def]
    server = NatsServer(tmp_path / "nats").start()
    stack = Stack(server.url, bus_prefix, store_url_for)
    try:
        await stack.start("enrollment", "milestones", "payments")
        pids = [await stack.register() for _ in range(3)]
        for pid in pids:
            await sign_all(stack, pid, ("LOA", "DSA"))
        server.kill()
        # While the bus is down, the last signatures are recorded in enrollment's store (its outbox).
        for pid in pids:
            await sign_all(stack, pid, ("HIE",))
        server.start()
        for pid in pids:
            await stack.wait_paid(pid, timeout=40)
        await quiet(stack, timeout=30)
        for pid in pids:
            statement = await stack.payments_of(pid)
            assert statement is not None and [p["amount"] for p in statement["payments"]] == ["10000.00"]
    finally:
        await stack.close()
        server.stop()


async def test_earlier_event_redelivered_after_a_later_one_still_applies_once(stack: Stack) -> None:
    await stack.start("milestones", "payments")
    pid = "7d8a3a8e-4f7e-4d51-9d0a-0c2a0b3f9e11"

    async def agreement_signed(position: int, agreement: str, deduplicated: bool = True) -> None:
        await stack.publish_as_producer(AgreementSigned, position, deduplicated=deduplicated, aggregate_id=pid,
                                        agreement=agreement,
                                        signed_at="2024-05-01T10:00:00-07:00", document_id=f"doc-{agreement}")

    await stack.publish_as_producer(RulesPublished, 10, aggregate_id=uuid4(), document=packaged(), reason="packaged")
    await stack.publish_as_producer(ParticipantRegistered, 11, aggregate_id=pid, provider_type="skilled_nursing",
                                    npi=None, tin=None, legal_name="Sunrise", sending_facilities=[])
    await stack.publish_as_producer(EligibilityDetermined, 12, aggregate_id=pid, eligible=True, reasons=[],
                                    rule_version="2024.1")
    for position, agreement in ((13, "LOA"), (14, "DSA"), (15, "HIE")):  # acceptances seen before the signatures
        await stack.publish_as_producer(AgreementReviewed, position, aggregate_id=pid, agreement=agreement,
                                        document_id=f"doc-{agreement}", decision="accepted", reason="test")
    # Notifications 3 and 2 are processed before 1 arrives.
    for position, agreement in ((3, "HIE"), (2, "DSA")):
        await agreement_signed(position, agreement)
    await quiet(stack)
    await agreement_signed(1, "LOA")
    await stack.wait_paid(pid)
    # Re-published long after JetStream's duplicate window (no Nats-Msg-Id): the tracking record absorbs it.
    await agreement_signed(1, "LOA", deduplicated=False)
    await quiet(stack)
    progress = (await stack.clients["milestones"].get(f"/participants/{pid}/milestones", headers=STAFF)).json()
    assert sorted(progress["agreements"]) == ["DSA", "HIE", "LOA"]
    statement = await stack.payments_of(pid)
    assert statement is not None and [p["amount"] for p in statement["payments"]] == ["10000.00"]
    milestones = stack.runtimes["milestones"].app
    assert all(milestones.has_processed(Tracking("enrollment", n)) for n in (1, 2, 3, 10, 11, 12, 13, 14, 15))
    assert not milestones.has_processed(Tracking("enrollment", 5))


async def test_poison_message_goes_to_dead_letter_with_reason_and_consumer_keeps_going(stack: Stack) -> None:
    await stack.start("enrollment", "milestones", "payments")
    js = (await stack.nc()).jetstream()
    dead = await js.subscribe(stack.naming.subject("dsi.dead-letter.enrollment"), durable="test-dlq",
                              stream=stack.naming.stream("DSI_DEAD_LETTERS"))
    await js.publish(stack.naming.subject("dsi.in.agreement-signed"), b"\xff not json")
    await stack.publish("dsi.in.agreement-signed", {"participant_id": "not-a-uuid", "agreement": "LOA",
                                                    "signed_at": "2024-05-01T10:00:00-07:00", "document_id": "x"})
    await stack.publish("dsi.in.agreement-signed", {"agreement": "LOA"})  # fields missing

    reasons = []
    for _ in range(3):
        message = await dead.next_msg(timeout=20)
        reasons.append(message.headers["Dsi-Reason"])
        assert message.headers["Dsi-Original-Subject"] == "dsi.in.agreement-signed"
        assert message.headers["Dsi-Consumer"] == "enrollment--dsi-in"
        await message.ack()
    assert reasons[0] == "InvalidMessage: message body is not JSON (UnicodeDecodeError)"
    assert reasons[1] == "PermanentError: participant_id is not a UUID"
    assert reasons[2] == "invalid fields: signed_at: missing; document_id: missing"

    # The consumer keeps going: a good signature after the poison still flows to a payment.
    pid = await stack.register()
    for agreement in ("LOA", "DSA", "HIE"):
        await stack.publish("dsi.in.agreement-signed", {"participant_id": pid, **signature(agreement)})
    await stack.accept_agreements(pid)
    await stack.wait_paid(pid)


async def test_failing_handler_is_retried_then_dead_lettered(stack: Stack) -> None:
    """A transient failure is redelivered up to DSI_MAX_ATTEMPTS (3 here), then dead-lettered."""
    await stack.start("enrollment")
    js = (await stack.nc()).jetstream()
    dead = await js.subscribe(stack.naming.subject("dsi.dead-letter.enrollment"), durable="test-dlq2",
                              stream=stack.naming.stream("DSI_DEAD_LETTERS"))
    store = stack.runtimes["enrollment"].app
    original = store.save_tracked
    store.save_tracked = lambda *a, **k: (_ for _ in ()).throw(ConnectionError("database away"))  # type: ignore[method-assign]
    pid = await stack.register()
    await stack.publish("dsi.in.agreement-signed", {"participant_id": pid, **signature("LOA")})
    message = await dead.next_msg(timeout=30)
    assert message.headers["Dsi-Reason"] == "ConnectionError"  # class only: exception texts may carry data
    assert message.headers["Dsi-Deliveries"] == "3"
    assert json.loads(message.data)["participant_id"] == pid
    store.save_tracked = original  # type: ignore[method-assign]



def ops(stack: Stack, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DSI_VAR_DIR": str(tmp_path / "var"), "NATS_URL": stack.nats_url,
           "DSI_BUS_PREFIX": stack.prefix, "COLUMNS": "250"}
    return subprocess.run([sys.executable, "-m", "dsi_shared.cli", "ops", "dead-letters", *args], env=env,
                          capture_output=True, text=True, timeout=60)


async def test_a_dead_letter_is_listed_without_its_body_and_replayed_once_the_cause_is_fixed(
        stack: Stack, tmp_path: Path) -> None:
    await stack.start("enrollment", "milestones")
    store = stack.runtimes["enrollment"].app
    original = store.save_tracked
    store.save_tracked = lambda *a, **k: (_ for _ in ()).throw(ConnectionError("database away"))  # type: ignore[method-assign]
    pid = await stack.register()
    await stack.publish("dsi.in.agreement-signed", {"participant_id": pid, **signature("LOA")})

    async def listed() -> list[dict[str, Any]] | None:
        result = await asyncio.to_thread(ops, stack, tmp_path, "list", "--json")
        return json.loads(result.stdout) or None
    [letter] = await eventually(listed, timeout=30)
    assert (letter["service"], letter["original_subject"], letter["reason"], letter["replayed"]) == (
        "enrollment", "dsi.in.agreement-signed", "ConnectionError", False)
    table = await asyncio.to_thread(ops, stack, tmp_path, "list")
    assert "ConnectionError" in table.stdout and pid not in table.stdout  # the body is never shown
    store.save_tracked = original  # type: ignore[method-assign]

    replayed = await asyncio.to_thread(ops, stack, tmp_path, "replay", str(letter["sequence"]))
    assert replayed.returncode == 0 and "1 dead letter(s) replayed" in replayed.stdout

    async def signed() -> bool:
        answer = await stack.clients["enrollment"].get(f"/participants/{pid}", headers=STAFF)
        return answer.json()["agreements"]["LOA"] is not None
    await eventually(signed)
    [after] = json.loads((await asyncio.to_thread(ops, stack, tmp_path, "list", "--json")).stdout)
    assert after["replayed"] is True
    assert (await asyncio.to_thread(ops, stack, tmp_path, "replay", "--all")).stdout.strip().endswith(
        "0 dead letter(s) replayed")
    # A replayed relayed event lands on its service's stream: that relay resumes past it, not from the start.
    js = (await stack.nc()).jetstream()
    await js.publish(stack.naming.subject("dsi.enrollment.agreement-signed"), b"{}",
                     headers={"Nats-Msg-Id": "replay:milestones--dsi-enrollment:3", "Dsi-Replay-Of": "1"})
    relay = next(w for w in stack.runtimes["enrollment"].workers if type(w).__name__ == "Relay")
    await quiet(stack)
    assert await relay.resume_position() == stack.runtimes["enrollment"].app.recorder.max_notification_id()


GROUP = 3  # participants whose Milestone 1 payments arrive at payments in one fetched batch


@pytest.mark.parametrize("fault", [
    {"DSI_FAULT_PAUSE_BEFORE_COMMIT_SECONDS": "60"},  # killed with the group decided, before its transaction
    {"DSI_FAULT_PAUSE_BEFORE_ACK_SECONDS": "60"},  # killed after the commit, before any ack
    {"DSI_FAULT_PAUSE_BEFORE_ACK_SECONDS": "60", "DSI_FAULT_ACKS_BEFORE_PAUSE": "2"},  # after some acks
], ids=["before-commit", "after-commit-before-acks", "after-some-acks"])
async def test_payments_process_killed_in_the_middle_of_a_group_commit_pays_each_milestone_once(
        stack: Stack, fault: dict[str, str]) -> None:
    await stack.start("enrollment", "milestones")
    stack.spawn("payments")
    pids = [await stack.register() for _ in range(GROUP)]
    await quiet(stack)  # payments holds the rules and the accounts; then it stops while the milestones are reached
    stack.kill("payments")
    js = (await stack.nc()).jetstream()
    stream, durable = stack.naming.stream("DSI_MILESTONES"), "payments--dsi-milestones"
    achieved = stack.naming.subject("dsi.milestones.milestone-achieved")
    for pid in pids:
        await sign_all(stack, pid)

    async def all_achieved_waiting() -> bool:
        info = await js.stream_info(stream, subjects_filter=achieved)
        return (info.state.subjects or {}).get(achieved, 0) == GROUP

    await eventually(all_achieved_waiting)
    waiting = (await js.consumer_info(stream, durable)).num_pending
    url = stack.spawn("payments", **fault)

    async def paid() -> int:
        statements = [await stack.payments_of(pid, url) for pid in pids]
        return sum(bool(s and s["payments"]) for s in statements)

    async def in_the_middle() -> bool:
        info = await js.consumer_info(stream, durable)
        if "DSI_FAULT_PAUSE_BEFORE_COMMIT_SECONDS" in fault:
            return info.num_ack_pending == waiting and await paid() == 0
        acked = int(fault.get("DSI_FAULT_ACKS_BEFORE_PAUSE", "0"))
        return info.num_ack_pending == waiting - acked and await paid() == GROUP

    await eventually(in_the_middle)
    stack.kill("payments")

    url = stack.spawn("payments")
    await quiet(stack)
    for pid in pids:
        statement = await stack.payments_of(pid, url)
        assert statement is not None
        assert [p["amount"] for p in statement["payments"]] == ["10000.00"]
        assert statement["total_paid"] == "10000.00"
