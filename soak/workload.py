"""The workload a seed generates and how it is driven: providers enrolling and signing (some agreements twice, by HTTP
and by `dsi.in.agreement-signed`), staff acceptance, members and PCP/QIP attributions (then a change), SNF files over
HTTP and MLLP (timely, late, duplicates, cancels), PCP records, quarter closes and validations, QIP deliveries.
Every step that depends on what another service has learnt waits for the system to settle first."""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field
from typing import Any

from dsi_shared.identifiers import npi_check_digit

from soak.client import AUDITOR, HIE, STAFF, Api
from soak.cluster import Cluster
from soak.settle import settled
from tests.hl7_corpus import adt, combined
from tests.x12_834 import cin

CSV = {"content-type": "text/csv"}
CONTROL_ID = re.compile(r"MSG\d{7}")
MEMBER_HEADER = ("member_id,last_name,first_name,birth_date,eligibility_start,eligibility_end,aid_code,"
                 "other_health_coverage,dual_eligible\n")
VALUE_SET = {"resourceType": "ValueSet", "url": "http://example.org/ValueSet/cis-e", "version": "2025", "name": "CisE",
             "status": "active", "expansion": {"timestamp": "2025-01-01T00:00:00Z", "contains": [
                 {"system": "http://hl7.org/fhir/sid/cvx", "code": "03"}]}}
REQUIREMENT = {"code": "QIP-PY2025-CIS", "title": "Immunizations, PY2025", "feed_kinds": ["eligibility", "immunizations"],
               "period_start": "2025-01-01", "period_end": "2025-12-31", "due_date": "2026-03-31", "source": "soak"}


def npi(rng: random.Random) -> str:
    first_nine = f"{rng.randrange(10**8, 10**9)}"
    return first_nine + npi_check_digit(first_nine)


@dataclass
class SnfFile:
    facility: str
    trigger: str
    member: str
    visit: str
    day: int  # of November 2025
    hours_late: int  # received this long after the event (the SNF rule: 72 hours)
    channel: str  # http | mllp (MLLP files are received now: always late)


@dataclass
class Workload:
    seed: int
    snf_npis: list[str]
    pcp_npi: str
    hie_by_http: list[bool]  # per SNF: the HIE agreement by HTTP too, not only over NATS
    members: list[str]
    files: list[SnfFile] = field(default_factory=list)
    cancels: list[tuple[int, str]] = field(default_factory=list)  # (file index, channel)
    records: list[tuple[str, str]] = field(default_factory=list)  # PCP records: (member, received_at)
    quarters: list[str] = field(default_factory=list)
    rejected: int = 0  # which pending evaluation (in a stable order) staff reject; the rest are validated


def generate(seed: int) -> Workload:
    rng = random.Random(f"workload:{seed}")
    snfs = rng.randint(1, 2)
    members = [cin(n) for n in range(1, 7)]
    work = Workload(seed, [npi(rng) for _ in range(snfs)], npi(rng), [rng.random() < 0.5 for _ in range(snfs)], members)
    for s in range(snfs):
        for v in range(rng.randint(2, 4)):
            file = SnfFile(f"SNF{s}", rng.choice(["A01", "A03"]), rng.choice(members[:4]), f"V{s}{v}",
                           rng.randint(1, 20), rng.choice([2, 10, 50, 100]), "http")
            work.files.append(file)
            if rng.random() < 0.5:  # a duplicate of the same event, by either channel
                work.files.append(SnfFile(**{**vars(file), "hours_late": file.hours_late + 1,
                                             "channel": rng.choice(["http", "mllp"])}))
    work.files.append(SnfFile("SNF0", "A01", members[0], "VLATE", 3, 0, "mllp"))  # received now: late
    work.cancels = [(i, rng.choice(["http", "mllp"])) for i, f in enumerate(work.files)
                    if f.channel == "http" and rng.random() < 0.25]
    work.records = [(m, rng.choice(["2025-02-01T10:00:00-08:00", "2025-05-01T10:00:00-07:00"]))
                    for m in members if rng.random() < 0.6]
    work.quarters = ["2025Q1", *(["2025Q2"] if rng.random() < 0.5 else []), "2025Q4"]
    work.rejected = rng.randrange(4)
    return work


def form(npi_: str, provider_type: str, facility: str, submitted_on: str) -> dict[str, Any]:
    return {"legal_name": f"Soak {facility}", "npi": npi_, "tin": f"9{npi_[:8]}", "provider_type": provider_type,
            "counties": ["Monterey"], "ehr_product": "PointClickCare", "is_hospital": False, "umbrella_group": None,
            "manages_ehr": True, "sending_facilities": [facility], "contact_email": "dsi@soak.example",
            "submitted_on": submitted_on}


class Driver:
    def __init__(self, work: Workload, cluster: Cluster, api: Api) -> None:
        self.work, self.cluster, self.api = work, cluster, api
        self.participants: dict[str, str] = {}  # NPI → participant id
        self.entities: dict[str, str] = {}  # name → QIP entity id

    async def run(self) -> None:
        await self.enrol()
        await settled(self.cluster)
        await self.accept()
        await self.members_and_assignments()
        await settled(self.cluster)
        await self.submit()
        await self.change_attributions()
        await settled(self.cluster)
        await self.pcp_records()
        await self.qip()
        await settled(self.cluster)
        await self.close_quarters()
        await settled(self.cluster)

    async def register(self, body: dict[str, Any]) -> str:
        async def applied_after_all() -> Any:
            listed = await self.api.once("GET", "enrollment", "/participants", STAFF, params={"limit": 200})
            found = [p for p in listed.json()["participants"] if p.get("npi") == body["npi"]]
            return listed if found else None

        response = await self.api.call("POST", "enrollment", "/participants", json=body, before_retry=applied_after_all)
        if response.status_code == 201:
            return str(response.json()["id"])
        listed = (await self.api.once("GET", "enrollment", "/participants", STAFF, params={"limit": 200})).json()
        [found] = [p for p in listed["participants"] if p.get("npi") == body["npi"]]
        return str(found["id"])

    async def sign(self, pid: str, agreement: str, signed_at: str) -> None:
        await self.api.json("POST", "enrollment", f"/participants/{pid}/agreements",
                            json={"agreement": agreement, "signed_at": signed_at, "document_id": f"doc-{agreement}"})

    async def sign_by_nats(self, pid: str, agreement: str, signed_at: str) -> None:
        await self.api.publish("dsi.in.agreement-signed", {"participant_id": pid, "agreement": agreement,
                                                           "signed_at": signed_at, "document_id": f"doc-{agreement}"})

    async def enrol(self) -> None:
        for n, snf_npi in enumerate(self.work.snf_npis):
            pid = self.participants[snf_npi] = await self.register(
                form(snf_npi, "skilled_nursing", f"SNF{n}", "2024-03-01"))
            signed = "2024-05-01T10:00:00-07:00"
            await self.sign(pid, "LOA", signed)
            await self.sign(pid, "DSA", signed)
            await self.sign_by_nats(pid, "DSA", signed)  # the same DSA again, by the other path
            await self.sign_by_nats(pid, "HIE", "2024-06-20T09:00:00-07:00")
            if self.work.hie_by_http[n]:
                await self.sign(pid, "HIE", "2024-06-20T09:00:00-07:00")
        pid = self.participants[self.work.pcp_npi] = await self.register(
            form(self.work.pcp_npi, "primary_care", "PCP0", "2024-08-01"))
        for agreement in ("LOA", "DSA", "HIE"):
            await self.sign(pid, agreement, "2024-11-01T10:00:00-07:00")
        await self.sign_by_nats(pid, "LOA", "2024-11-01T10:00:00-07:00")

    async def accept(self) -> None:
        for pid in self.participants.values():
            await self.api.json("POST", "enrollment", f"/participants/{pid}/agreements/acceptance", json={})

    async def members_and_assignments(self) -> None:
        rows = [f"{m},DOE,JANE,1945-06-12,2024-01-01,{'2025-10-31' if n == 5 else ''},1H,N,N\n"
                for n, m in enumerate(self.work.members)]
        await self.api.json("POST", "enrollment", "/members/import", content=MEMBER_HEADER + "".join(rows),
                            headers={**STAFF, **CSV})
        qip = self.api
        dph = await qip.json("POST", "qip-share", "/entities", json={
            "kind": "DPH", "name": "Valley Medical Center", "identifiers": {"npi": "1992753883"},
            "address": "751 S Bascom Ave, San Jose CA", "endpoint": "sftp://vmc.example/qip"})
        dmph = await qip.json("POST", "qip-share", "/entities", json={
            "kind": "DMPH", "name": "Hill District Hospital", "identifiers": {"npi": "1003000126"},
            "address": "2 Hill Rd, Hollister CA", "endpoint": "sftp://hill.example/qip", "community_partners": [
                {"name": "Valley Clinic", "address": "1 Main St, Merced CA", "endpoint": "sftp://v"}]})
        self.entities = {"DPH": dph["id"], "DMPH": dmph["id"]}
        await qip.json("POST", "qip-share", "/value-sets", json=VALUE_SET)
        await qip.json("POST", "qip-share", "/requirements", json=REQUIREMENT)
        m = self.work.members
        roster = "member_id,kind,assignee,start,end\n" + "".join(
            f"{member},qip,1992753883,2025-01-01,\n" for member in m[:4]) + "".join(
            f"{member},pcp,{self.work.pcp_npi},2025-01-01,\n" for member in m[2:])
        await self.api.json("POST", "enrollment", "/attributions/import", content=roster, headers={**STAFF, **CSV})

    async def change_attributions(self) -> None:
        """A member moves to the DMPH in July; another's PCP attribution ends with the first quarter."""
        m = self.work.members
        roster = (f"member_id,kind,assignee,start,end\n{m[1]},qip,1003000126,2025-07-01,\n"
                  f"{m[2]},pcp,{self.work.pcp_npi},2025-01-01,2025-03-31\n")
        await self.api.json("POST", "enrollment", "/attributions/import", content=roster, headers={**STAFF, **CSV})

    def hl7(self, file: SnfFile, trigger: str | None = None) -> str:
        occurred = f"202511{file.day:02d}080000"
        text = combined(trigger or file.trigger, file.member, visit=file.visit, occurred=occurred,
                        facility=file.facility, control_id=f"S{self.work.seed}{file.visit}")
        count = iter(range(1, 100))  # the corpus numbers its other messages process-wide: the same file each run
        return CONTROL_ID.sub(lambda _: f"S{self.work.seed}{file.visit}{file.channel}{file.hours_late}-{next(count)}", text)

    async def send(self, text: str, channel: str, day: int, hours_late: int) -> None:
        if channel == "mllp":
            await self.api.mllp(text.encode())
            return
        hour = 8 + hours_late
        received = f"2025-11-{day + hour // 24:02d}T{hour % 24:02d}:00:00-08:00"
        await self.api.json("POST", "submissions", "/hl7", content=text.encode(), params={"received_at": received},
                            headers={**HIE, "content-type": "x-application/hl7-v2+er7"})

    async def submit(self) -> None:
        for file in self.work.files:
            await self.send(self.hl7(file), file.channel, file.day, file.hours_late)
        for index, channel in self.work.cancels:
            file = self.work.files[index]
            cancel = adt("A11", file.member, visit=file.visit, occurred=f"202511{file.day:02d}090000",
                         facility=file.facility, control_id=f"C{self.work.seed}{file.visit}") + "\r"
            await self.send(cancel, channel, file.day, file.hours_late + 2)

    async def pcp_records(self) -> None:
        pid = self.participants[self.work.pcp_npi]
        for member, received_at in self.work.records:
            bundle = {"resourceType": "Bundle", "type": "collection", "entry": [
                {"resource": {"resourceType": "Patient", "id": "p", "identifier": [{"value": member}]}},
                {"resource": {"resourceType": "Observation", "id": "o", "status": "final", "code": {"text": "A1c"},
                              "subject": {"reference": "Patient/p"}}}]}
            await self.api.json("POST", "submissions", "/longitudinal-records", content=json.dumps(bundle),
                                params={"participant_id": pid, "received_at": received_at},
                                headers={**HIE, "content-type": "application/fhir+json"})

    async def qip(self) -> None:
        m = self.work.members
        feeds = {"eligibility": "cin,birth_date,sex,aid_code,start_date\n" + "".join(
                     f"{member},2023-04-05,F,1H,2024-01-01\n" for member in m),
                 "immunizations": "immunization_id,cin,administered_date,cvx\n" + "".join(
                     f"I{n},{member},2025-0{1 + n}-01,03\n" for n, member in enumerate(m))}
        for kind, text in feeds.items():
            await self.api.json("POST", "qip-share", f"/feeds/{kind}", content=text, headers={**STAFF, **CSV})
        for name in ("DPH", "DMPH"):
            order = {"entity_id": self.entities[name], "requirement": REQUIREMENT["code"]}

            async def recorded_after_all(entity: str = self.entities[name]) -> Any:
                listed = await self.api.once("GET", "qip-share", "/deliveries", AUDITOR)
                return listed if any(d.get("entity_id") == entity for d in listed.json()["deliveries"]) else None

            await self.api.call("POST", "qip-share", "/deliveries?wait=true", json=order,
                                before_retry=recorded_after_all)

    async def close_quarters(self) -> None:
        for quarter in self.work.quarters:
            await self.api.json("POST", "milestones", f"/quarters/{quarter}/close")
        await settled(self.cluster)  # the evaluations list is a read model
        pending = (await self.api.json("GET", "milestones", "/evaluations", params={
            "state": "pending_validation", "limit": 200}))["evaluations"]
        by_npi = {pid: n for n, pid in self.participants.items()}
        pending.sort(key=lambda e: (by_npi[e["participant_id"]], e["quarter"], e["milestone"]))
        for n, evaluation in enumerate(pending):
            if n == self.work.rejected:
                await self.api.json("POST", "milestones", f"/evaluations/{evaluation['id']}/reject",
                                    json={"reason": "soak: not supported by the records"})
            else:
                await self.api.json("POST", "milestones", f"/evaluations/{evaluation['id']}/validate")
