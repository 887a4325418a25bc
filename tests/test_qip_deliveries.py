"""QIP data sharing end to end on real NATS and PostgreSQL: assignments flow from enrollment's events, feeds stream
in over HTTP, a delivery runs in the background (Bulk Data kick-off, status, manifest, NDJSON files), each member's
accounting of disclosures answers, and `dsi audit reproduce` / `dsi audit disclosures` work on the recorded store."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from qip_share.ledger import QipMember

from tests.harness import STAFF, Stack, eventually

pytestmark = pytest.mark.integration
AUDITOR = {"Authorization": "Bearer auditor-token"}
ANN, BEN, CAL = "20000001A", "20000002B", "20000003C"
DPH_NPI, DMPH_NPI = "1992753883", "1003000126"
VALUE_SET = {"resourceType": "ValueSet", "url": "http://example.org/ValueSet/cis-e", "version": "2025", "name": "CisE",
             "status": "active", "expansion": {"timestamp": "2025-01-01T00:00:00Z", "contains": [
                 {"system": "http://hl7.org/fhir/sid/cvx", "code": "03"},
                 {"system": "http://loinc.org", "code": "4548-4"}]}}


def cli(stack: Stack, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DSI_VAR_DIR": str(tmp_path / "var"), "QIP_SHARE_STORE": stack.store_url_for("qip-share"),
           "COLUMNS": "300"}
    return subprocess.run([sys.executable, "-m", "dsi_shared.cli", "audit", *args], env=env, capture_output=True,
                          text=True, timeout=120)


async def pieces(text: str, size: int = 40) -> AsyncIterator[bytes]:
    data = text.encode()
    for at in range(0, len(data), size):  # a streamed upload, as a large feed arrives
        yield data[at:at + size]


async def test_assignments_feeds_a_delivery_and_the_accounting_of_disclosures(stack: Stack, tmp_path: Path) -> None:
    await stack.start("enrollment", "qip-share")
    qip, enrollment = stack.clients["qip-share"], stack.clients["enrollment"]
    dph = (await qip.post("/entities", headers=STAFF, json={
        "kind": "DPH", "name": "Valley Medical Center", "identifiers": {"npi": DPH_NPI},
        "address": "751 S Bascom Ave, San Jose CA", "endpoint": "sftp://vmc.example/qip"})).json()
    dmph = (await qip.post("/entities", headers=STAFF, json={
        "kind": "DMPH", "name": "Hill District Hospital", "identifiers": {"npi": DMPH_NPI},
        "address": "2 Hill Rd, Hollister CA", "endpoint": "sftp://hill.example/qip",
        "community_partners": [{"name": "Valley Clinic", "address": "1 Main St, Merced CA", "endpoint": "sftp://v"}]})).json()
    assert (await qip.post("/value-sets", headers=STAFF, json=VALUE_SET)).status_code == 200
    requirement = {"code": "QIP-PY2025-CIS", "title": "Childhood immunizations and HbA1c, PY2025",
                   "feed_kinds": ["eligibility", "immunizations", "lab_results"], "period_start": "2025-01-01",
                   "period_end": "2025-12-31", "due_date": "2026-03-31", "source": "DHCS letter 2025-11"}
    assert (await qip.post("/requirements", headers=STAFF, json=requirement)).status_code == 201
    assert (await qip.post("/requirements", headers=STAFF, json=requirement)).status_code == 200

    # Enrollment states the assignments; qip-share learns them from the bus (Cal moves to the DMPH in July).
    roster = (f"member_id,kind,assignee,start,end\n{ANN},qip,{DPH_NPI},2025-01-01,\n{CAL},qip,{DPH_NPI},2025-01-01,\n"
              f"{CAL},qip,{DMPH_NPI},2025-07-01,\n{BEN},pcp,1234567893,2025-01-01,\n")
    imported = await enrollment.post("/attributions/import", content=roster, headers={**STAFF, "content-type": "text/csv"})
    assert imported.json()["accepted"] == 4, imported.text
    app = stack.runtimes["qip-share"].app

    async def assigned() -> bool:
        cal = app.find(QipMember.create_id(CAL), QipMember)
        return cal is not None and len(cal.spans) == 2 and app.find(QipMember.create_id(ANN), QipMember) is not None
    await eventually(assigned)
    assert app.find(QipMember.create_id(BEN), QipMember) is None  # a PCP attribution is not a QIP assignment

    feeds = {"eligibility": f"cin,birth_date,sex,aid_code,start_date\n{ANN},2023-04-05,F,1H,2024-01-01\n"
                            f"{BEN},2023-01-01,M,1H,2024-01-01\n{CAL},2022-02-02,M,1H,2024-01-01\n",
             "immunizations": f"immunization_id,cin,administered_date,cvx\nI1,{ANN},2025-02-01,03\nI2,{BEN},2025-02-01,03\n"
                              f"I3,{CAL},2025-03-01,03\nI4,{CAL},2025-08-01,03\nI5,{ANN},2025-02-02,999x\n",
             "lab_results": f"result_id,cin,collected_date,loinc,value,unit\nL1,{ANN},2025-05-01,4548-4,5.4,%\n"}
    for kind, text in feeds.items():
        ingested = await qip.post(f"/feeds/{kind}", content=pieces(text), headers={**STAFF, "content-type": "text/csv"})
        assert ingested.status_code == 201, ingested.text
    immunizations = (await qip.get("/feeds", headers=AUDITOR)).json()["feeds"][1]
    assert (immunizations["accepted"], immunizations["rejected"], immunizations["rejects_by_reason"]) == (
        4, 1, {"cvx: not a valid code of its system": 1})
    bad = await qip.post("/feeds/pharmacy", content="claim_id\nP1\n", headers={**STAFF, "content-type": "text/csv"})
    assert bad.status_code == 422 and bad.headers["content-type"] == "application/problem+json"
    assert (await qip.get("/feeds", headers=AUDITOR)).json()["feeds"][-1]["file_problem"].startswith("missing required")
    assert (await qip.post("/feeds/faxes", content="a\n", headers=STAFF)).status_code == 404

    # The Bulk Data pattern: kick-off (202 + Content-Location), status, manifest, files.
    order = {"entity_id": dph["id"], "requirement": "QIP-PY2025-CIS"}
    assert (await qip.post("/deliveries", json=order, headers=AUDITOR)).status_code == 403
    kicked = await qip.post("/deliveries", json=order, headers=STAFF)
    assert kicked.status_code in (200, 202), kicked.text
    status_url = kicked.headers.get("content-location") or f"/deliveries/{kicked.json()['id']}"

    async def recorded() -> dict[str, Any] | None:
        answer = await qip.get(status_url, headers=AUDITOR)
        return answer.json() if answer.status_code == 200 and answer.json()["status"] == "complete" else None
    delivery = await eventually(recorded)
    assert delivery["on_time"] is False  # delivered today, after the PY2025 due date
    # "a member assigned at any time in the period brings all their in-window records": Cal's March and August doses
    # go to the DPH (January–June) and to the DMPH (from July) alike, no longer day by day.
    assert delivery["totals"]["records"] == {"Coverage": 2, "Immunization": 3, "Observation": 1, "Patient": 2}
    assert delivery["rules_version"] == "2026.1" and delivery["policy_version"] == "2026.1"
    manifest_bytes = (await qip.get(f"/deliveries/{delivery['id']}/manifest", headers=AUDITOR)).content
    assert hashlib.sha256(manifest_bytes).hexdigest() == delivery["manifest"]["sha256"]
    for output in json.loads(manifest_bytes)["output"]:
        body = (await qip.get(f"/{output['url']}", headers=AUDITOR)).content
        assert hashlib.sha256(body).hexdigest() == output["extension"]["sha256"]
        assert len(body.splitlines()) == output["count"]
    assert BEN.encode() not in b"".join([(await qip.get(f"/{o['url']}", headers=AUDITOR)).content
                                         for o in json.loads(manifest_bytes)["output"]])
    to_dmph = await qip.post("/deliveries?wait=true", json={**order, "entity_id": dmph["id"]}, headers=STAFF)
    assert to_dmph.status_code == 201 and to_dmph.json()["totals"]["records"]["Immunization"] == 2

    accounting = (await qip.get(f"/members/{CAL}/disclosures", headers=AUDITOR)).json()
    assert [d["recipients"][0]["name"] for d in accounting["disclosures"]] == ["Valley Medical Center",
                                                                                "Hill District Hospital"]
    # "for a partner that is not itself a covered entity: through the DMPH, as its business associate"
    assert accounting["disclosures"][1]["recipients"][1] == {
        "name": "Valley Clinic", "address": "1 Main St, Merced CA", "role": "community_partner",
        "legal_basis": "through the DMPH, as its business associate (45 CFR 164.502(e), 164.504(e)): a state-approved "
                       "community partner that is not itself a covered entity"}
    assert (await qip.get(f"/members/{BEN}/disclosures", headers=AUDITOR)).json()["count"] == 0
    not_cin = await qip.get("/members/BEN-SMITH/disclosures", headers=AUDITOR)
    assert not_cin.status_code == 422 and "BEN-SMITH" not in not_cin.text
    status = (await qip.get("/requirements/QIP-PY2025-CIS", headers=AUDITOR)).json()["entities"]
    assert {s["entity"]: s["on_time"] for s in status.values()} == {"Valley Medical Center": False,
                                                                      "Hill District Hospital": False}

    # A later feed does not change what was delivered: the auditor's reproduction still matches.
    late = f"immunization_id,cin,administered_date,cvx\nI9,{ANN},2025-06-01,03\n"
    assert (await qip.post("/feeds/immunizations", content=late, headers=STAFF)).status_code == 201
    reproduced = (await qip.get(f"/deliveries/{delivery['id']}/reproduction", headers=AUDITOR)).json()
    assert reproduced["matches"] is True, reproduced
    result = await asyncio.to_thread(cli, stack, tmp_path, "reproduce", delivery["id"], "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["manifest"]["rebuilt"] == delivery["manifest"]["sha256"]
    table = await asyncio.to_thread(cli, stack, tmp_path, "disclosures", "--member", CAL)
    assert table.returncode == 0 and "Hill District Hospital" in table.stdout and "Valley Clinic" in table.stdout

    # Letter 002: only "participating DPH and DMPH systems" receive data. An entity marked not participating gets a
    # 409 problem on POST /deliveries, and nothing is recorded.
    left = await qip.post(f"/entities/{dmph['id']}/participation", headers=STAFF,
                          json={"participating": False, "reason": "not on the state's PY2026 list"})
    assert left.status_code == 200 and left.json()["participating"] is False and left.json()["changed"] is True
    recorded_before = (await qip.get("/deliveries", headers=AUDITOR)).json()["deliveries"]
    refused = await qip.post("/deliveries?wait=true", json={**order, "entity_id": dmph["id"]}, headers=STAFF)
    assert refused.status_code == 409 and refused.headers["content-type"] == "application/problem+json", refused.text
    assert CAL not in refused.text
    assert (await qip.get("/deliveries", headers=AUDITOR)).json()["deliveries"] == recorded_before
    outsider = await qip.post("/entities", headers=STAFF, json={
        "kind": "DPH", "name": "Not In QIP", "identifiers": {"npi": "1234567893"}, "address": "3 Elm St, Fresno CA",
        "endpoint": "sftp://x.example", "participating": False})
    assert outsider.status_code == 201 and outsider.json()["participating"] is False
    assert (await qip.post("/deliveries", json={**order, "entity_id": outsider.json()["id"]},
                           headers=STAFF)).status_code == 409
