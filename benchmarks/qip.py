"""A QIP delivery at plan scale (issue: QIP share), on PostgreSQL when reachable.

Seeds one qip-share store with DSI_BENCH_QIP_MEMBERS members (default 1,000,000; quick 20,000) in DSI_BENCH_QIP_ROWS
feed rows (default 10,000,000, quick 200,000: eligibility 10%, claims 40%, pharmacy 20%, labs 20%, immunizations
10%), of whom DSI_BENCH_QIP_ASSIGNED (default 100,000; quick 2,000) are assigned to the delivering DPH (a tenth of them
reassigned to another entity in July) and as many again to that other entity. Then, each in its own process so that
its peak memory is its own: the delivery (select, withhold, write NDJSON, record 1 delivery + a disclosure per member), its
reproduction, and the raw ceiling — decrypting and CSV-splitting every stored feed row without looking at it.
"""

from __future__ import annotations

import base64
import json
import os
import random
import subprocess
import sys
import time
from datetime import UTC, date, datetime
from uuid import UUID

from qip_share.application import QipShare
from qip_share.ledger import QipMember
from qip_share.valuesets import from_fhir

from benchmarks.setting import report, size, store_factory, vm_hwm_mb

MEMBERS = size("DSI_BENCH_QIP_MEMBERS", quick=20_000, default=1_000_000)
ROWS = size("DSI_BENCH_QIP_ROWS", quick=200_000, default=10_000_000)
ASSIGNED = size("DSI_BENCH_QIP_ASSIGNED", quick=2_000, default=100_000)
AT = datetime(2026, 1, 20, tzinfo=UTC)
DPH_NPI, OTHER_NPI = "1992753880", "1003000126"
CPT_IN, CPT_OUT = ["99213", "99214", "99395", "99396", "83036"], ["99203", "97110", "71046", "80053"]
ICD_IN, ICD_OUT, ICD_SENSITIVE = ["E119", "E1165", "I10", "Z0000"], ["M545", "J069", "R51"], ["F1120", "Z3009"]
LOINC_IN, LOINC_OUT = ["4548-4", "17856-6", "2093-3", "7917-8"], ["2345-7", "718-7", "6690-2"]
NDC_IN, NDC_OUT = ["00002751001", "00169413512", "00088222033"], ["00093015001", "00781107001"]
CVX_IN, CVX_OUT = ["03", "08", "10", "20", "94", "141"], ["88", "158"]
SYSTEMS = {"cpt": "http://www.ama-assn.org/go/cpt", "icd": "http://hl7.org/fhir/sid/icd-10-cm", "loinc": "http://loinc.org",
           "ndc": "http://hl7.org/fhir/sid/ndc", "cvx": "http://hl7.org/fhir/sid/cvx"}
SHARES = {"eligibility": 0.1, "medical_claims": 0.4, "pharmacy": 0.2, "lab_results": 0.2, "immunizations": 0.1}


def cin(n: int) -> str:
    return f"{30_000_000 + n:08d}{'ABCDEFGHJK'[n % 10]}"


def value_set() -> bytes:
    codes = [*(("cpt", c) for c in CPT_IN), *(("icd", c) for c in ICD_IN + ICD_SENSITIVE), *(("loinc", c) for c in LOINC_IN),
             *(("ndc", c) for c in NDC_IN), *(("cvx", c) for c in CVX_IN)]
    return json.dumps({"resourceType": "ValueSet", "url": "http://example.org/ValueSet/qip-bench", "version": "2025",
                       "name": "QipBench", "status": "active", "expansion": {
                           "timestamp": "2025-01-01T00:00:00Z",
                           "contains": [{"system": SYSTEMS[s], "code": c} for s, c in codes]}}).encode()


def feed_rows(kind: str, count: int, rng: random.Random) -> tuple[str, object]:
    """The header and a generator of CSV lines of one kind (dates from mid-2024 to mid-2026)."""
    start = date(2024, 7, 1).toordinal()

    def day() -> str:
        return date.fromordinal(start + rng.randrange(730)).isoformat()

    def member() -> str:
        return cin(rng.randrange(MEMBERS))

    def pick(inside: list[str], outside: list[str]) -> str:
        return rng.choice(inside) if rng.random() < 0.5 else rng.choice(outside)

    def lines() -> object:
        for n in range(count):
            if kind == "eligibility":
                yield f"{cin(n % MEMBERS)},{1940 + n % 80}-0{1 + n % 9}-1{n % 10},{'MF'[n % 2]},1H,2024-01-01\n"
            elif kind == "medical_claims":
                dx = pick(ICD_IN, ICD_OUT) if rng.random() > 0.01 else rng.choice(ICD_SENSITIVE)
                yield f"C{n},1,{member()},{day()},1234567893,{pick(CPT_IN, CPT_OUT)},{dx}\n"
            elif kind == "pharmacy":
                yield f"R{n},{member()},{day()},{pick(NDC_IN, NDC_OUT)},30,30\n"
            elif kind == "lab_results":
                yield f"L{n},{member()},{day()},{pick(LOINC_IN, LOINC_OUT)},{rng.randrange(40, 140) / 10},%\n"
            else:
                yield f"I{n},{member()},{day()},{pick(CVX_IN, CVX_OUT)}\n"

    headers = {"eligibility": "cin,birth_date,sex,aid_code,start_date",
               "medical_claims": "claim_id,line_number,cin,service_date,billing_npi,procedure_code,diagnosis_codes",
               "pharmacy": "claim_id,cin,fill_date,ndc,days_supply,quantity",
               "lab_results": "result_id,cin,collected_date,loinc,value,unit",
               "immunizations": "immunization_id,cin,administered_date,cvx"}
    return headers[kind] + "\n", lines()


def seed(app: QipShare) -> tuple[UUID, dict[str, float]]:
    timings: dict[str, float] = {}
    started = time.perf_counter()
    dph = app.register_entity("DPH", "Bench Medical Center", {"npi": DPH_NPI}, "1 Bench Way, San Jose CA", "sftp://b", [])
    app.register_entity("DMPH", "Other District Hospital", {"npi": OTHER_NPI}, "2 Other Rd, Gilroy CA", "sftp://o",
                        [{"name": "Partner Clinic", "address": "3 Main St, Gilroy CA", "endpoint": "sftp://p"}])
    app.publish_value_sets(from_fhir(value_set(), ""), "fhir", AT)
    app.define_requirement("QIP-BENCH", "bench", [], [], date(2025, 1, 1), date(2025, 12, 31), date(2026, 3, 31), "bench")
    batch: list[QipMember] = []
    for n in range(2 * ASSIGNED):  # members 0..ASSIGNED-1 to the DPH, the next ASSIGNED to the other entity
        member = QipMember(cin(n * (MEMBERS // (2 * ASSIGNED))))
        member.note_span(date(2025, 1, 1), DPH_NPI if n < ASSIGNED else OTHER_NPI, None, 2)
        if n < ASSIGNED and n % 10 == 0:
            member.note_span(date(2025, 7, 1), OTHER_NPI, None, 3)
        batch.append(member)
        if len(batch) == 500:
            app.save(*batch)
            batch = []
    app.save(*batch)
    timings["assignments"] = time.perf_counter() - started
    rng = random.Random(2025)
    for kind, share in SHARES.items():
        started = time.perf_counter()
        header, lines = feed_rows(kind, int(ROWS * share), rng)
        writer = app.files.writer("text/csv")
        writer.write(header.encode())
        buffer: list[str] = []
        for line in lines:  # type: ignore[attr-defined]
            buffer.append(line)
            if len(buffer) == 20_000:
                writer.write("".join(buffer).encode())
                buffer = []
        writer.write("".join(buffer).encode())
        stored = writer.close()
        stored_at = time.perf_counter()
        feed, _ = app.ingest_feed(kind, stored, "bench", AT)
        timings[kind] = time.perf_counter() - stored_at
        timings[f"{kind}:store"] = stored_at - started
        assert feed.accepted == int(ROWS * share), (kind, feed.rejects_by_reason)
    return dph.id, timings


def child(mode: str, store: str, ident: str) -> None:
    """Runs in its own process: prints one JSON line with its wall time and its own peak resident memory (VmHWM)."""
    app = QipShare(store)
    started = time.perf_counter()
    out: dict[str, object] = {}
    if mode == "deliver":
        delivery = app.deliver(app.delivery_request(UUID(ident), "QIP-BENCH", None, None), "bench", AT)
        out = {"delivery_id": str(delivery.id), "totals": delivery.totals, "members": delivery.members}
    elif mode == "reproduce":
        out = {"problems": app.reproduce(UUID(ident)).problems}
    else:
        import csv
        import io

        rows = 0
        for feed in app.feeds():
            with app.files.open(feed.sha256) as stream:
                rows += sum(1 for _ in csv.reader(io.TextIOWrapper(stream, encoding="utf-8", newline="")))
        out = {"rows": rows}
    out["seconds"] = time.perf_counter() - started
    out["peak_mb"] = vm_hwm_mb()
    app.close()
    print(json.dumps(out))


def run_child(mode: str, store: str, ident: str) -> dict[str, object]:
    done = subprocess.run([sys.executable, "-m", "benchmarks.qip", mode, store, ident], capture_output=True, text=True,
                          check=True, env=os.environ)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


async def main() -> None:
    os.environ.setdefault("DSI_PAYLOAD_KEY", base64.b64encode(os.urandom(32)).decode())
    store_for, drop, backend = store_factory()
    try:
        store = store_for("qip-share")
        app = QipShare(store)
        app.ensure_default_policy()
        started = time.perf_counter()
        entity_id, timings = seed(app)
        seeding = time.perf_counter() - started
        app.close()
        delivered = run_child("deliver", store, str(entity_id))
        reproduced = run_child("reproduce", store, str(delivered["delivery_id"]))
        raw = run_child("scan", store, "")
    finally:
        drop()
    totals: dict[str, dict[str, int]] = delivered["totals"]  # type: ignore[assignment]
    ingest_rate = ROWS / sum(v for k, v in timings.items() if k in SHARES)
    print(f"QIP delivery: {ASSIGNED:,} assigned lives of {MEMBERS:,} members, {ROWS:,} feed rows, store {backend}")
    print(f"  seeding (assignments {timings['assignments']:.0f} s, feeds stored + ingested): {seeding:8.1f} s "
          f"(ingest check {ingest_rate:,.0f} rows/s)")
    print(f"  delivery (wall)                      : {delivered['seconds']:8.1f} s, peak memory {delivered['peak_mb']:,.0f} MB")
    print(f"    records {totals['records']}")
    print(f"    withheld {totals['withheld']}; excluded {totals['excluded']}; {delivered['members']:,} disclosures")
    print(f"  reproduce (wall)                     : {reproduced['seconds']:8.1f} s, peak memory {reproduced['peak_mb']:,.0f} MB"
          f" ({'matches' if not reproduced['problems'] else reproduced['problems']})")
    print(f"  raw ceiling: decrypt + CSV-split all : {raw['seconds']:8.1f} s ({raw['rows']:,} rows, "
          f"peak {raw['peak_mb']:,.0f} MB); delivery = {float(raw['seconds']) / float(delivered['seconds']):.2f} × raw, "  # type: ignore[arg-type]
          f"reproduce = {float(raw['seconds']) / float(reproduced['seconds']):.2f} × raw")  # type: ignore[arg-type]

    report(f"QIP delivery, {ASSIGNED:,} lives / {ROWS:,} feed rows", f"{delivered['seconds']:.1f} s, "
           f"peak {delivered['peak_mb']:,.0f} MB", f"{float(raw['seconds']) / float(delivered['seconds']):.2f} × raw scan",  # type: ignore[arg-type]
           "≤ 30 s and ≤ 1 GiB (at 100k / 10M)")


if __name__ == "__main__":
    child(*sys.argv[1:4])
