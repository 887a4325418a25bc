"""Every public sample of tests/corpus/ (and our own edge cases) through the real services, once each: HL7 v2 files
into verdicts and ACKs, C-CDA and FHIR records into verdicts, X12 834s into member reports, Da Vinci ATR Groups
into attributions, VSAC ValueSets into value-set versions. Expectations and the run-time rewriting of
identifiers are in tests/corpus_cases.py; sources and licenses in tests/corpus/README.md."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio

from tests import corpus_cases as cases
from tests.harness import STAFF, Stack, eventually, fresh_database, signature
from tests.x12_834 import cin

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]
HIE = {"Authorization": "Bearer hie-token"}
HL7_NAMES, RECORD_NAMES = sorted(cases.HL7), sorted(cases.RECORDS)
HL7_CIN = {name: cin(600 + i) for i, name in enumerate(HL7_NAMES)}
RECORD_CIN = {name: cin(700 + i) for i, name in enumerate(RECORD_NAMES)}


@dataclass
class Corpus:
    stack: Stack
    snf: str
    pcp: str
    pcp_npi: str


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def corpus(nats_url: str, postgres_server: str) -> AsyncIterator[Corpus]:
    """One stack for the module: an SNF sending as SUNNY_SNF and a primary care participant, both past Milestone 1,
    every HL7 and record CIN a plan member since 2025-01-01, each record CIN attributed to the primary care one."""
    with fresh_database(postgres_server) as dsn:
        stack = Stack(nats_url, f"t{uuid.uuid4().hex[:10]}", lambda service: dsn)
        try:
            await stack.start("enrollment", "milestones", "submissions", "qip-share")
            client = stack.clients["enrollment"]
            snf = await stack.register(sending_facilities=["SUNNY_SNF"])
            pcp_npi = "1666666668"
            pcp = await stack.register(provider_type="primary_care", submitted_on="2024-08-01", npi=pcp_npi)
            for pid, signed_at in ((snf, "2024-05-01T10:00:00-07:00"), (pcp, "2024-11-01T10:00:00-07:00")):
                for agreement in ("LOA", "DSA", "HIE"):
                    await client.post(f"/participants/{pid}/agreements", json=signature(agreement, signed_at), headers=STAFF)
                await stack.accept_agreements(pid)
            members = [*HL7_CIN.values(), *RECORD_CIN.values()]
            roster = "member_id,last_name,first_name,birth_date,eligibility_start,eligibility_end,aid_code," \
                     "other_health_coverage,dual_eligible\n" + "".join(f"{m},DOE,JANE,1945-06-12,2025-01-01,,1H,N,N\n"
                                                                       for m in members)
            await client.post("/members/import", content=roster, headers={**STAFF, "content-type": "text/csv"})
            attributions = "member_id,kind,assignee,start,end\n" + "".join(f"{m},pcp,{pcp},2025-01-01,\n"
                                                                           for m in RECORD_CIN.values())
            await client.post("/attributions/import", content=attributions, headers={**STAFF, "content-type": "text/csv"})
            app = stack.runtimes["submissions"].app

            async def known() -> bool:
                ready = [app.participant_facts(uuid.UUID(p)) for p in (snf, pcp)]  # type: ignore[attr-defined]
                last = app.member_facts(members[-1])  # type: ignore[attr-defined]
                return all(f and f.milestone1_at for f in ready) and bool(last and last.attributions)

            await eventually(known, timeout=40)
            yield Corpus(stack, snf, pcp, pcp_npi)
        finally:
            await stack.close()


def ack_fields(ack: str) -> dict[str, list[str]]:
    """Segment name → its fields (MSH numbered as in HL7: fields[n] is MSH-n), first occurrence of each."""
    found: dict[str, list[str]] = {}
    for segment in filter(None, ack.replace("\n", "\r").split("\r")):
        fields = segment.split("|")
        if fields[0] == "MSH":
            fields.insert(1, "|")
        found.setdefault(fields[0], fields)
    return found


def error_code(fields: dict[str, list[str]]) -> str | None:
    """The HL7 table 0357 code of the first ERR: ERR-3 (v2.5+) or, in older ACKs, ERR-1.4.1."""
    err = fields.get("ERR")
    if err is None:
        return None
    if len(err) > 3 and err[3]:
        return err[3].split("^")[0]
    components = err[1].split("^") if len(err) > 1 else []
    return components[3].split("&")[0] if len(components) > 3 else None


def reasons_match(actual: list[str], expected: list[str]) -> bool:
    return len(actual) == len(expected) and all(
        a.startswith(e[:-1]) if e.endswith("*") else a == e for a, e in zip(actual, expected, strict=True))


async def post_hl7(stack: Stack, body: bytes) -> dict[str, Any]:
    response = await stack.clients["submissions"].post(
        "/hl7", content=body, params={"received_at": cases.RECEIVED_AT},
        headers={**HIE, "content-type": "x-application/hl7-v2+er7"})
    assert response.status_code == 200, response.text
    return dict(response.json())


@pytest.mark.parametrize("name", HL7_NAMES)
async def test_hl7_sample_gets_its_verdict_and_ack(corpus: Corpus, name: str) -> None:
    expected = cases.HL7[name]
    raw = (cases.CORPUS / "hl7" / name).read_bytes()
    body = cases.adapt_hl7(raw, HL7_CIN[name])
    bodies = cases.split_messages(body) if expected.get("each_message") else [body]
    messages: list[dict[str, Any]] = []
    submissions: list[dict[str, Any]] = []
    for part in bodies:
        answer = await post_hl7(corpus.stack, part)
        messages += answer["messages"]
        submissions += answer["submissions"]
    assert [m["ack_code"] for m in messages] == expected["acks"], [m["ack"] for m in messages]
    assert [s["verdict"] for s in submissions] == expected["verdicts"], [s["reasons"] for s in submissions]
    for submission, reasons in zip(submissions, expected["reasons"], strict=True):
        assert reasons_match(submission["reasons"], reasons), submission["reasons"]
    sent = [cases.adapt_hl7(m, HL7_CIN[name]) for m in cases.split_messages(raw)]
    for message, original in zip(messages, sent, strict=True):
        fields = ack_fields(message["ack"])
        msh = original.split(b"\r")[0].split(b"\n")[0].decode("latin-1").split("|")
        assert fields["MSA"][2] == msh[9], "MSA-2 is the message's own control id"
        assert fields["MSH"][12].split("^")[0] == msh[11].split("^")[0], "the ACK is in the sender's version"
    if "err3" in expected:
        assert error_code(ack_fields(messages[0]["ack"])) == expected["err3"], messages[0]["ack"]


@pytest.mark.parametrize("path", RECORD_NAMES)
async def test_longitudinal_record_sample_gets_its_verdict(corpus: Corpus, path: str) -> None:
    expected = cases.RECORDS[path]
    body = cases.adapt_record(path, (cases.CORPUS / path).read_bytes(), RECORD_CIN[path], expected.get("cin_type", "MA"))
    content_type = "application/fhir+json" if path.endswith(".json") else "application/xml"
    response = await corpus.stack.clients["submissions"].post(
        "/longitudinal-records", content=body, params={"participant_id": corpus.pcp, "received_at": cases.RECEIVED_AT},
        headers={**HIE, "content-type": content_type})
    assert response.status_code in (200, 201), response.text
    shown = response.json()
    assert shown["verdict"] == expected["verdict"], shown.get("reasons")
    if expected["verdict"] == "credited":
        assert shown["credit"]["member_id"] == RECORD_CIN[path]
    text = " ".join(shown.get("reasons") or [])
    for fragment in expected.get("reasons", []):
        assert fragment in text, shown.get("reasons")


@pytest.mark.parametrize("name", sorted(cases.X12))
async def test_834_sample_gets_exact_report_counts(corpus: Corpus, name: str) -> None:
    raw = (cases.CORPUS / "x12" / name).read_bytes()
    base = 800 + 10 * sorted(cases.X12).index(name)
    body = cases.adapt_834(raw, [cin(base + i) for i in range(cases.ref_0f_count(raw))])
    response = await corpus.stack.clients["enrollment"].post(
        "/members/import", content=body, headers={**STAFF, "content-type": "application/edi-x12"})
    assert response.status_code == 200, response.text
    report = response.json()
    counts = {key: report.get(key, 0) for key in cases.X12[name]}
    assert counts == cases.X12[name], json.dumps(report)[:2000]


@pytest.mark.parametrize("name", sorted(cases.ATR))
async def test_atr_sample_attributes_each_member_to_its_provider(corpus: Corpus, name: str) -> None:
    expected = cases.ATR[name]
    base = 900 + 10 * sorted(cases.ATR).index(name)
    cins = {patient: cin(base + i) for i, patient in enumerate(("patient-1.json", "patient-2.json", "patient-3.json"))}
    bundle = cases.atr_bundle(name, cins, corpus.pcp_npi)
    client = corpus.stack.clients["enrollment"]
    response = await client.post("/attributions/import", params={"kind": "pcp"}, content=json.dumps(bundle),
                                 headers={**STAFF, "content-type": "application/fhir+json"})
    assert response.status_code == 200, response.text
    report = response.json()
    assert (report.get("accepted"), report.get("rejected")) == (expected["accepted"], expected["rejected"]), \
        json.dumps(report)[:2000]
    for patient, provider in expected["attributed"].items():
        shown = (await client.get(f"/members/{cins[patient]}", params={"on": "2017-01-01"}, headers=STAFF)).json()
        wanted = {corpus.pcp, corpus.pcp_npi} if provider == "group" else {provider}
        assert shown.get("attributed_participant") in wanted, (patient, shown.get("attributed_participant"))


@pytest.mark.parametrize("name", sorted(cases.VALUE_SETS))
async def test_value_set_sample_names_each_code_it_could_not_use(corpus: Corpus, name: str) -> None:
    expected = cases.VALUE_SETS[name]
    response = await corpus.stack.clients["qip-share"].post(
        "/value-sets", content=(cases.CORPUS / "valuesets" / name).read_bytes(),
        headers={**STAFF, "content-type": "application/fhir+json"})
    assert response.status_code == expected["status"], response.text
    if "codes" in expected:
        assert response.json()["value_sets"][0]["codes"] == expected["codes"]
    for location in expected["named"]:
        assert location in response.text, response.text
