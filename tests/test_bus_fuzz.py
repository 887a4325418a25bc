"""The NATS inputs (`dsi.in.*`, AsyncAPI-documented) under generated and malformed payloads (issue 16 §3): Hypothesis
publishes bodies on real JetStream to the real consuming services (started once for the module) — bytes that are
not JSON, JSON that is not an object, CloudEvent envelopes, objects with each documented field valid, of any JSON
type, or missing, and fields nobody documented. Each message ends exactly one way: applied once (the consumer's
tracking record for its stream position) or dead-lettered at its first delivery with a reason that does not
repeat the payload; never retried as if the failure were passing, never both. After all examples each consumer
still applies a valid message (nothing stuck). Bounded and derandomized: the same bodies every run."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import pytest_asyncio
from dsi_shared.natsperms import durable_name
from dsi_shared.store import ServiceApplication
from eventsourcing.persistence import Tracking
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from nats.aio.msg import Msg

from tests.harness import STAFF, Stack, eventually, fresh_database, quiet, signature
from tests.hl7_corpus import combined
from tests.x12_834 import cin

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module"),
              # the services' tasks use `random` on the loop while Hypothesis draws in its thread (generation is
              # derandomized); see tests/test_openapi_conformance.py
              pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")]
EXAMPLES = 60  # per subject: about 5 s each
MEMBER = cin(900)
HL7, FHIR, CDA = "x-application/hl7-v2+er7", "application/fhir+json", "application/cda+xml"
UNKNOWN = "00000000-0000-4000-8000-000000000000"
MISSING = object()
ZONES = st.sampled_from([UTC, timezone(timedelta(hours=-8)), timezone(timedelta(hours=5, minutes=30))])
# Any JSON value, nested a little (NaN and infinities included: Python writes them, other producers may too).
JSON: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8)


@dataclass
class Bus:
    stack: Stack
    participant: str
    npi: str
    dead: dict[tuple[str, int], dict[str, str]] = field(default_factory=dict)  # (consumer, original seq) → headers


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bus(nats_url: str, postgres_server: str) -> AsyncIterator[Bus]:
    """Enrollment and submissions (the `dsi.in.*` consumers) on one database, a registered SNF sending as
    SUNNY_SNF and one plan member; every dead letter heard as it is published."""
    with fresh_database(postgres_server) as dsn:
        stack = Stack(nats_url, f"t{uuid.uuid4().hex[:10]}", lambda service: dsn)
        try:
            await stack.start("enrollment", "submissions")
            npi = "1234567893"
            participant = await stack.register(sending_facilities=["SUNNY_SNF"], npi=npi)
            roster = ("member_id,last_name,first_name,birth_date,eligibility_start,eligibility_end,aid_code,"
                      f"other_health_coverage,dual_eligible\n{MEMBER},DOE,JANE,1945-06-12,2024-01-01,,1H,N,N\n")
            await stack.clients["enrollment"].post("/members/import", content=roster,
                                                   headers={**STAFF, "content-type": "text/csv"})
            found = Bus(stack, participant, npi)

            async def heard(message: Msg) -> None:
                headers = message.headers or {}
                found.dead[(headers.get("Dsi-Consumer", "?"), int(headers.get("Dsi-Original-Sequence", "0")))] = headers

            await (await stack.nc()).subscribe(stack.naming.subject("dsi.dead-letter.>"), cb=heard)
            app = stack.runtimes["submissions"].app

            async def known() -> bool:
                return bool(app.participant_facts(uuid.UUID(participant)) and app.member_facts(MEMBER))  # type: ignore[attr-defined]

            await eventually(known, timeout=30)
            yield found
        finally:
            await stack.close()


def moments(start: int, end: int) -> st.SearchStrategy[str]:
    """ISO 8601 date-times, with an offset or (sometimes) without."""
    aware = st.datetimes(datetime(start, 1, 1), datetime(end, 12, 31), timezones=ZONES)
    return st.one_of(aware, aware, st.datetimes(datetime(start, 1, 1), datetime(end, 12, 31))).map(datetime.isoformat)


def fields_of(bus: Bus, subject: str) -> dict[str, st.SearchStrategy[Any]]:
    """The documented fields of each input, each with values that could be valid."""
    participants = st.sampled_from([bus.participant] * 4 + [UNKNOWN])
    if subject == "dsi.in.submission-received":
        return {"hie_submission_id": st.text(min_size=1, max_size=30), "participant_id": participants,
                "sending_facility": st.sampled_from(["SUNNY_SNF", "NOBODY_SNF"]),
                "received_at": moments(2024, 2027), "content_type": st.sampled_from([HL7, FHIR, CDA, "text/plain"]),
                "payload": st.sampled_from([combined("A01", MEMBER), combined("A03", MEMBER), "{}", "<x/>"])
                | st.text(max_size=60)}
    agreement = {"participant_id": participants, "npi": st.just(bus.npi), "tin": st.just("941234567"),
                 "agreement": st.sampled_from(["LOA", "DSA", "HIE", "MOU"]),
                 "document_id": st.text(min_size=1, max_size=20)}
    moment = "signed_at" if subject == "dsi.in.agreement-signed" else "accepted_at"
    return {**agreement, moment: moments(2023, 2027)}


def bodies(bus: Bus, subject: str) -> st.SearchStrategy[bytes]:
    """What a producer might put on the subject: objects with every documented field plausible, with one of them
    of any JSON type or missing, or each plausible, of any type or missing (all with extra fields), then anything
    else."""
    fields = fields_of(bus, subject)
    plausible = st.fixed_dictionaries(fields)
    one_off = st.tuples(plausible, st.sampled_from(sorted(fields)), JSON | st.just(MISSING)).map(
        lambda p: {k: v for k, v in {**p[0], p[1]: p[2]}.items() if v is not MISSING})
    anything = st.fixed_dictionaries({}, optional={name: valid | JSON for name, valid in fields.items()})
    objects = st.tuples(plausible | one_off | anything, st.dictionaries(st.text(max_size=8), JSON, max_size=2)).map(
        lambda p: {**p[1], **p[0]})
    envelope = st.fixed_dictionaries(
        {"specversion": st.sampled_from(["1.0", "0.3"]) | JSON},
        optional={"id": st.text(max_size=12) | JSON, "source": st.sampled_from(["/dsi/enrollment", "/hie"]) | JSON,
                  "type": st.just(subject) | JSON, "data": objects | JSON, "datacontenttype": st.just("application/json")})
    wrapped = st.builds(lambda i, data: {"specversion": "1.0", "id": f"hie-{i}", "source": "/hie", "type": subject,
                                         "datacontenttype": "application/json", "data": data},
                        st.integers(0, 10**6), plausible)
    texts = st.one_of(plausible.map(json.dumps), wrapped.map(json.dumps), objects.map(json.dumps),
                      objects.map(json.dumps), envelope.map(json.dumps), JSON.map(json.dumps), st.just("[" * 5000))
    return texts.map(str.encode) | st.binary(max_size=40)


@dataclass
class Consumer:
    app: ServiceApplication
    durable: str


def consumer_of(bus: Bus, subject: str) -> Consumer:
    service = "submissions" if subject == "dsi.in.submission-received" else "enrollment"
    return Consumer(bus.stack.runtimes[service].app, durable_name(service, "DSI_IN"))


async def publish(bus: Bus, subject: str, body: bytes) -> int:
    js = (await bus.stack.nc()).jetstream()
    return (await js.publish(bus.stack.naming.subject(subject), body)).seq


async def outcome(bus: Bus, consumer: Consumer, sequence: int) -> str | dict[str, str]:
    """How the consumer ended the message at `sequence`: "applied", or its dead letter's headers."""

    async def ended() -> str | dict[str, str] | None:
        applied = await asyncio.to_thread(consumer.app.has_processed, Tracking("nats:DSI_IN", sequence))
        dead = bus.dead.get((consumer.durable, sequence))
        assert not (applied and dead), f"seq {sequence} both applied and dead-lettered: {dead}"
        return "applied" if applied else dead

    return await eventually(ended, timeout=30, interval=0.02)  # type: ignore[no-any-return]


def fuzz(bus: Bus, subject: str, call: Callable[[Coroutine[Any, Any, Any]], Any]) -> dict[str, int]:
    """Publish each generated body and check how it ended; returns the tally of outcomes."""
    consumer, tally = consumer_of(bus, subject), {"applied": 0, "dead-lettered": 0}

    @given(body=bodies(bus, subject))
    @settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    def run(body: bytes) -> None:
        ended = call(outcome(bus, consumer, call(publish(bus, subject, body))))
        if ended == "applied":
            tally["applied"] += 1
            return
        tally["dead-lettered"] += 1
        reason = ended.get("Dsi-Reason", "")
        assert reason and reason != "?", ended
        assert ended["Dsi-Deliveries"] == "1", f"refused only after retries (a failure taken for passing): {reason}"
        assert "DOE" not in reason and "MSH|" not in reason, "a reason repeats the payload"

    run()
    return tally


def in_thread(loop: asyncio.AbstractEventLoop) -> Callable[[Coroutine[Any, Any, Any]], Any]:
    return lambda coroutine: asyncio.run_coroutine_threadsafe(coroutine, loop).result(60)


async def still_applies(bus: Bus, subject: str, body: dict[str, Any]) -> None:
    """After the fuzzing, a valid message is applied and nothing is left pending: the consumer is not stuck."""
    assert await outcome(bus, consumer_of(bus, subject), await publish(bus, subject, json.dumps(body).encode())) == "applied"
    await quiet(bus.stack)


async def test_agreement_signed_messages_end_applied_once_or_dead_lettered_with_a_reason(bus: Bus) -> None:
    subject = "dsi.in.agreement-signed"
    tally = await asyncio.to_thread(fuzz, bus, subject, in_thread(asyncio.get_running_loop()))
    assert tally["applied"] and tally["dead-lettered"], tally  # both ways were exercised
    await still_applies(bus, subject, {"participant_id": bus.participant, **signature("LOA")})


async def test_agreement_accepted_messages_end_applied_once_or_dead_lettered_with_a_reason(bus: Bus) -> None:
    subject = "dsi.in.agreement-accepted"
    tally = await asyncio.to_thread(fuzz, bus, subject, in_thread(asyncio.get_running_loop()))
    assert tally["applied"] and tally["dead-lettered"], tally
    await still_applies(bus, subject, {"participant_id": bus.participant, "agreement": "LOA", "document_id": "doc-LOA",
                                       "accepted_at": "2024-05-02T10:00:00-07:00"})


async def test_submission_received_messages_end_applied_once_or_dead_lettered_with_a_reason(bus: Bus) -> None:
    subject = "dsi.in.submission-received"
    tally = await asyncio.to_thread(fuzz, bus, subject, in_thread(asyncio.get_running_loop()))
    assert tally["applied"] and tally["dead-lettered"], tally
    await still_applies(bus, subject, {"hie_submission_id": "after-fuzz", "sending_facility": "SUNNY_SNF",
                                       "received_at": datetime.now(UTC).isoformat(), "content_type": HL7,
                                       "payload": combined("A01", MEMBER, visit="V0099")})
