"""QIP deliveries (DOMAIN.md Part B) on the qip-share store (SQLite): feeds checked row by row and stored once,
assigned lives only, value-set codes only, the data window, withholding exactly what law restricts (with counts and
reasons), participating entities only, a DMPH's community partners and each recipient's basis, a member reassigned
mid-period, two value-set versions, per-member disclosures and byte-for-byte reproduction — also of a delivery
recorded under the original rules and policy 2025.1."""

from __future__ import annotations

import base64
import io
import json
import os
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from uuid import NAMESPACE_URL, uuid5

import pytest
from dsi_shared.files import FileStore
from fhir.resources.R4B import get_fhir_model_class
from qip_share import feeds
from qip_share.application import Conflict, InvalidPeriod, QipShare
from qip_share.delivery import assigned_intervals
from qip_share.feeds import FEED_KINDS, FeedRecord, RowError, read_feed
from qip_share.handlers import SUBSCRIPTIONS
from qip_share.ledger import Delivery
from qip_share.policy import check_policy, shipped_policies
from qip_share.reference import PARTNER_BA_BASIS, PARTNER_COVERED_BASIS, QipEntity, SensitivityPolicy
from qip_share.valuesets import from_fhir

from tests.harness import deliver_event

LOADED = datetime(2026, 1, 10, tzinfo=UTC)
DELIVERED = datetime(2026, 1, 15, 18, tzinfo=UTC)
SALLY, NOT_OURS, ROVER, TEEN = "10000001A", "10000002B", "10000003C", "10000004D"
DPH_NPI, DMPH_NPI = "1111111112", "2222222224"


def value_set(version: str, codes: list[tuple[str, str]]) -> bytes:
    return json.dumps({"resourceType": "ValueSet", "url": "http://example.org/ValueSet/qip-measures", "version": version,
                       "name": "QipMeasures", "status": "active",
                       "expansion": {"timestamp": "2025-01-01T00:00:00Z",
                                     "contains": [{"system": s, "code": c} for s, c in codes]}}).encode()


V1 = value_set("2025", [("http://loinc.org", "4548-4"), ("http://loinc.org", "7917-8"),
                        ("http://www.ama-assn.org/go/cpt", "99213"), ("http://hl7.org/fhir/sid/cvx", "03"),
                        ("http://www.ama-assn.org/go/cpt", "90834"),
                        ("http://hl7.org/fhir/sid/ndc", "00002751001")])
V2 = value_set("2026", [("http://loinc.org", "4548-4"), ("http://hl7.org/fhir/sid/cvx", "03")])

ELIGIBILITY = f"""cin,birth_date,sex,aid_code,start_date,end_date,first_name
{SALLY},1980-02-03,F,1H,2024-01-01,,Sally
{NOT_OURS},1970-01-01,M,1H,2024-01-01,,Nobody
{ROVER},1990-05-06,M,M1,2025-01-01,2025-12-31,Rover
{TEEN},2012-07-08,F,3R,2025-01-01,,Teen
"""
LABS = f"""result_id,cin,collected_date,loinc,value,unit,security_labels
L1,{SALLY},2025-03-01,4548-4,6.9,%,
L2,{SALLY},2025-03-01,2345-7,99,mg/dL,
L3,{SALLY},2024-11-30,4548-4,7.4,%,
L4,{SALLY},2025-04-01,7917-8,negative,,
L5,{NOT_OURS},2025-03-01,4548-4,8.0,%,
L6,12345,2025-03-01,4548-4,8.0,%,
L7,{SALLY},2025-13-01,4548-4,8.0,%,
L8,{SALLY},2025-05-01,,8.0,%,
"""
CLAIMS = f"""claim_id,line_number,cin,service_date,billing_npi,procedure_code,diagnosis_codes,paid_amount,security_labels
C1,1,{SALLY},2025-02-10,1234567893,99213,E11.9,120.00,
C2,1,{SALLY},2025-06-10,1234567893,99213,F11.20,120.00,
C3,1,{TEEN},2025-06-11,1234567893,99213,Z30.09,80.00,SEX
C4,1,{TEEN},2025-06-12,1234567893,ABCDE,Z00.00,80.00,
C5,1,{SALLY},2025-06-20,1234567893,99213,F11.20,95.00,42CFRPart2
"""
SMH = f"""claim_id,line_number,cin,service_date,billing_npi,procedure_code,diagnosis_codes,security_labels
S1,1,{SALLY},2025-04-01,1234567893,90834,F32.1,PSY
"""
IMMUNIZATIONS = f"""immunization_id,cin,administered_date,cvx
I1,{ROVER},2025-03-15,03
"""
PHARMACY = f"""claim_id,cin,fill_date,ndc,days_supply,quantity
P1,{ROVER},2025-09-01,0002-7510-01,30,30
"""


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> QipShare:
    monkeypatch.setenv("DSI_PAYLOAD_KEY", base64.b64encode(os.urandom(32)).decode())
    application = QipShare(f"sqlite:///{tmp_path / 'qip.db'}")
    application.ensure_default_policy()
    return application


def assign(app: QipShare, cin: str, assignee: str, start: str, end: str = "", version: int = 2) -> None:
    span = {"cin": cin, "kind": "qip", "assignee": assignee, "start": start, "end": end or None,
            "aggregate_id": str(uuid5(NAMESPACE_URL, cin)), "aggregate_version": version}
    app.save(*deliver_event(app, SUBSCRIPTIONS, "dsi.enrollment.attribution-recorded", span, f"enrollment:{version}",
                      "/dsi/enrollment"))


def load(app: QipShare, kind: str, text: str, at: datetime = LOADED) -> Any:
    stored = app.files.put(text.encode(), "text/csv")
    return app.ingest_feed(kind, stored, "program-staff#test", at)[0]


def ndjson(app: QipShare, delivery: Delivery, resource_type: str) -> list[dict[str, Any]]:
    entry = next((f for f in delivery.files if f["type"] == resource_type), None)
    return [] if entry is None else [json.loads(line) for line in app.files.read(entry["sha256"]).splitlines()]


@pytest.fixture
def world(app: QipShare) -> dict[str, Any]:
    return build_world(app)


def build_world(app: QipShare) -> dict[str, Any]:
    dph = app.register_entity("DPH", "County General", {"npi": DPH_NPI}, "1 County Way, Fresno CA", "sftp://dph", [])
    dmph = app.register_entity("DMPH", "Hill District Hospital", {"npi": DMPH_NPI}, "2 Hill Rd, Hollister CA",
                               "sftp://hill", [{"name": "Valley Clinic", "address": "1 Main St, Merced CA",
                                                "endpoint": "sftp://valley"}])
    app.publish_value_sets(from_fhir(V1, ""), "fhir", LOADED)
    app.define_requirement("QIP-PY2025", "PY2025 measures", [], [], date(2025, 1, 1), date(2025, 12, 31),
                           date(2026, 3, 31), "state letter")
    assign(app, SALLY, str(dph.id), "2025-01-01")  # by entity id
    assign(app, TEEN, DPH_NPI, "2025-01-01")  # by NPI
    assign(app, ROVER, DPH_NPI, "2025-01-01")
    assign(app, ROVER, DMPH_NPI, "2025-07-01", version=3)  # reassigned mid-period (the earlier span stays open)
    for kind, text in (("eligibility", ELIGIBILITY), ("lab_results", LABS), ("medical_claims", CLAIMS),
                       ("immunizations", IMMUNIZATIONS), ("pharmacy", PHARMACY), ("specialty_mental_health", SMH)):
        load(app, kind, text)
    return {"dph": dph, "dmph": dmph}


def deliver(app: QipShare, entity_id: Any, at: datetime = DELIVERED) -> Delivery:
    return app.deliver(app.delivery_request(entity_id, "QIP-PY2025", None, None), "program-staff#test", at)


def test_bad_feed_rows_are_reported_by_line_and_good_rows_kept(app: QipShare) -> None:
    feed = load(app, "lab_results", LABS)
    assert (feed.rows, feed.accepted, feed.rejected) == (8, 5, 3)
    assert feed.rejects == [{"line": 7, "reason": "cin: not a Medi-Cal CIN (8 digits then a letter)"},
                            {"line": 8, "reason": "collected_date: not a date (YYYY-MM-DD)"},
                            {"line": 9, "reason": "loinc: required"}]
    assert "12345" not in json.dumps(feed.rejects)  # reasons name columns, never values
    claims = load(app, "medical_claims", CLAIMS)
    assert claims.rejects == [{"line": 5, "reason": "procedure_code: not a CPT or HCPCS code"}]
    assert claims.ignored_columns == ["paid_amount"]  # never read: not needed by any measure
    again = app.ingest_feed("lab_results", app.files.put(LABS.encode(), "text/csv"), "x", LOADED)
    assert (again[0].id, again[1]) == (feed.id, False)  # stored once, ingested once
    headless = load(app, "pharmacy", "claim_id,cin\nP1,10000001A\n")
    assert headless.file_problem == "missing required column(s) for pharmacy: fill_date, ndc" and headless.rows == 0


def test_a_feed_is_read_as_a_stream_in_stored_chunks(app: QipShare, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("dsi_shared.files.CHUNK_BYTES", 64)
    store: FileStore = app.files
    writer = store.writer("text/csv")
    for piece in (LABS[:10], LABS[10:100], LABS[100:]):
        writer.write(piece.encode())
    stored = writer.close()
    assert len(stored.chunks) == (len(LABS.encode()) + 63) // 64 and store.read(stored.sha256) == LABS.encode()
    raw = app.blobs.get(f"chunk:{stored.chunks[0]}")
    assert raw is not None and LABS.encode()[:64] not in raw.data  # encrypted at rest
    with store.open(stored.sha256) as stream:
        parsed = list(read_feed(FEED_KINDS["lab_results"], stream))
    assert [type(p).__name__ for p in parsed].count("FeedRecord") == 5


def test_rows_of_members_not_wanted_are_skipped_before_they_are_checked() -> None:
    wanted = {SALLY}.__contains__
    parsed = list(read_feed(FEED_KINDS["lab_results"], io.BytesIO(LABS.encode()), wanted))
    assert all(p.cin == SALLY for p in parsed if isinstance(p, FeedRecord))
    assert [p.line for p in parsed if isinstance(p, RowError)] == [8, 9]  # line 7's CIN is not wanted


def test_a_reassignment_splits_the_period_between_the_entities() -> None:
    spans = [(date(2025, 1, 1), None, "A"), (date(2025, 7, 1), None, "B"), (date(2025, 10, 1), date(2025, 10, 31), "A")]
    period = (date(2025, 1, 1), date(2025, 12, 31))
    assert assigned_intervals(spans, frozenset({"A"}), *period) == [
        (date(2025, 1, 1), date(2025, 6, 30)), (date(2025, 10, 1), date(2025, 10, 31))]
    assert assigned_intervals(spans, frozenset({"B"}), *period) == [
        (date(2025, 7, 1), date(2025, 9, 30)), (date(2025, 11, 1), date(2025, 12, 31))]


def test_a_delivery_selects_assigned_lives_value_set_codes_and_the_data_window_and_withholds_what_law_restricts(
        app: QipShare, world: dict[str, Any]) -> None:
    """Letter 002: "all the data the Plan has for each QIP entity's assigned lives that aligns with the QIP Value
    Sets … regardless of whether the data comes from the Plan's provider network, from DHCS … or any other source"."""
    delivery = deliver(app, world["dph"].id)
    assert delivery.on_time is True and delivery.disclosures_recorded == 3 and delivery.policy_version == "2026.1"
    assert delivery.totals["records"] == {"Coverage": 3, "ExplanationOfBenefit": 4, "Immunization": 1,
                                          "MedicationDispense": 1, "Observation": 1, "Patient": 3}
    assert delivery.totals["withheld"] == {"hiv_test_results": 1, "sud_42cfr2": 1}
    assert delivery.totals["excluded"] == {"not_in_value_sets": 1, "outside_data_window": 1}
    [observation] = ndjson(app, delivery, "Observation")
    assert observation["code"]["coding"] == [{"system": "http://loinc.org", "code": "4548-4"}]
    assert observation["valueQuantity"] == {"value": 6.9, "unit": "%"}
    patients = ndjson(app, delivery, "Patient")
    assert sorted(p["identifier"][0]["value"] for p in patients) == [SALLY, ROVER, TEEN]
    assert NOT_OURS not in json.dumps([ndjson(app, delivery, f["type"]) for f in delivery.files])
    everything = json.dumps([ndjson(app, delivery, f["type"]) for f in delivery.files])
    assert "Sally" not in everything and "120.00" not in everything  # minimum necessary: no names, no amounts
    for entry in delivery.files:  # every line is a valid FHIR R4 resource
        for resource in ndjson(app, delivery, entry["type"]):
            get_fhir_model_class(resource["resourceType"]).model_validate(resource)
    manifest = json.loads(app.files.read(delivery.manifest["sha256"]))
    assert [(o["type"], o["count"]) for o in manifest["output"]] == [(f["type"], f["count"]) for f in delivery.files]
    assert manifest["extension"]["value_sets"] == {"http://example.org/ValueSet/qip-measures": "2025"}
    assert manifest["extension"]["rules_version"] == delivery.rules_version == "2026.1"
    assert manifest["extension"]["data_window"] == {"start": "2025-01-01", "end": "2025-12-31"}


def test_specialty_mental_health_claims_are_shared_and_a_psychotherapy_code_on_a_claim_is_not_a_note(
        app: QipShare, world: dict[str, Any]) -> None:
    """Letter 002: "Examples of data … that should be shared with QIP entities include Specialty Mental Health data,
    Pharmacy data, Dental data, and Fee-for-Service data". Psychotherapy *notes* (45 CFR 164.501) stay withheld:
    "a claim is not a note — so a psychotherapy CPT code on a claim is shared"; PSY labels are "recorded (counted in
    the delivery as labels seen), not a reason to withhold"."""
    delivery = deliver(app, world["dph"].id)
    claims = ndjson(app, delivery, "ExplanationOfBenefit")
    [smh] = [c for c in claims if c["meta"]["source"] == "#specialty_mental_health"]
    assert smh["item"][0]["productOrService"]["coding"] == [{"system": "http://www.ama-assn.org/go/cpt", "code": "90834"}]
    assert "psychotherapy_lps" not in delivery.totals["withheld"]
    assert delivery.totals["security_labels_seen"] == {"42CFRPART2": 1, "PSY": 1, "SEX": 1}
    manifest = json.loads(app.files.read(delivery.manifest["sha256"]))
    assert manifest["extension"]["security_labels_seen"] == {"42CFRPART2": 1, "PSY": 1, "SEX": 1}
    [sally] = app.disclosures_of(SALLY)
    assert "specialty_mental_health" in sally.categories


def test_only_part2_program_records_hiv_results_and_psychotherapy_notes_are_withheld_minors_services_are_shared(
        app: QipShare, world: dict[str, Any]) -> None:
    """Withheld by default is "exactly what law restricts beyond this letter": "42 CFR Part 2 SUD records (from
    Part 2 programs) without consent; HIV test results (California HSC §120975 ff.) …; psychotherapy *notes*".
    "Minors' sensitive services are **shared**: the Family Code §§6920–6929 protections govern consent and parental
    access, not disclosure to a QIP entity for quality measures". "Every withholding is counted by reason"."""
    delivery = deliver(app, world["dph"].id)
    claims = {c["id"]: c for c in ndjson(app, delivery, "ExplanationOfBenefit")}
    diagnoses = sorted(d["diagnosisCodeableConcept"]["coding"][0]["code"] for c in claims.values() for d in c["diagnosis"])
    assert diagnoses == ["E119", "F1120", "F321", "Z3009"]  # an SUD diagnosis from a non-Part 2 provider; a teen's
    teen = app.disclosures_of(TEEN)
    assert [(d.records, d.withheld) for d in teen] == [({"Coverage": 1, "ExplanationOfBenefit": 1, "Patient": 1}, {})]
    [sally] = app.disclosures_of(SALLY)
    assert sally.withheld == {"hiv_test_results": 1, "sud_42cfr2": 1}  # C5 (42CFRPart2 label), L4 (HIV LOINC)
    note = (f"claim_id,line_number,cin,service_date,billing_npi,procedure_code,record_type\n"
            f"N1,1,{SALLY},2025-05-01,1234567893,90834,psychotherapy_note\n")
    load(app, "specialty_mental_health", note)
    assert deliver(app, world["dph"].id).totals["withheld"] == {"hiv_test_results": 1, "psychotherapy_notes": 1,
                                                                "sud_42cfr2": 1}


def test_a_member_assigned_at_any_time_in_the_period_brings_all_their_in_window_records(
        app: QipShare, world: dict[str, Any]) -> None:
    """Issue 11 / DOMAIN.md Part B: "the members assigned to it at any time in the requirement's period. For them,
    every value-set record the plan holds inside the requirement's data window … is shared, whatever day the
    assignment started" — no longer routed day by day to whoever held the member that day."""
    to_dph, to_dmph = deliver(app, world["dph"].id), deliver(app, world["dmph"].id)
    for delivery in (to_dph, to_dmph):  # Rover: DPH from January, DMPH from July — both get March and September
        assert [i["occurrenceDateTime"] for i in ndjson(app, delivery, "Immunization")] == ["2025-03-15"]
        [dispense] = ndjson(app, delivery, "MedicationDispense")
        assert dispense["medicationCodeableConcept"]["coding"] == [{"system": "http://hl7.org/fhir/sid/ndc",
                                                                    "code": "00002751001"}]
    assert to_dmph.totals["records"] == {"Coverage": 1, "Immunization": 1, "MedicationDispense": 1, "Patient": 1}
    assert [r["role"] for r in to_dmph.recipients] == ["DMPH", "community_partner"]

    accounting = app.disclosures_of(ROVER)
    assert [(d.recipients[0]["name"], d.records) for d in accounting] == [
        ("County General", {"Coverage": 1, "Immunization": 1, "MedicationDispense": 1, "Patient": 1}),
        ("Hill District Hospital", {"Coverage": 1, "Immunization": 1, "MedicationDispense": 1, "Patient": 1})]
    assert [r["name"] for r in accounting[1].recipients] == ["Hill District Hospital", "Valley Clinic"]
    assert accounting[1].legal_basis.startswith("45 CFR 164.506(c)(4)") and accounting[1].categories == [
        "eligibility", "immunizations", "pharmacy"]
    assert app.disclosures_of(NOT_OURS) == []

    # A member assigned only on the period's last day still brings the whole period's records.
    assign(app, SALLY, DMPH_NPI, "2025-12-31", version=5)
    late = deliver(app, world["dmph"].id)
    assert late.totals["records"]["Observation"] == 1 and late.totals["records"]["ExplanationOfBenefit"] == 3


def test_a_requirement_may_set_its_own_data_window(app: QipShare, world: dict[str, Any]) -> None:
    """"A requirement may set its own data window (a measure's lookback …) — default: its period." Sally's
    HbA1c of 2024-11-30 is outside PY2025 but inside a window that looks back to 2024."""
    app.define_requirement("QIP-PY2025-LB", "PY2025 with a lookback", ["lab_results"], [], date(2025, 1, 1),
                           date(2025, 12, 31), date(2026, 3, 31), "state letter", data_window_start=date(2024, 1, 1))
    delivery = app.deliver(app.delivery_request(world["dph"].id, "QIP-PY2025-LB", None, None), "program-staff#t",
                           DELIVERED)
    assert sorted(o["effectiveDateTime"] for o in ndjson(app, delivery, "Observation")) == ["2024-11-30", "2025-03-01"]
    assert (delivery.data_window_start, delivery.data_window_end) == (date(2024, 1, 1), date(2025, 12, 31))
    assert "outside_data_window" not in delivery.totals["excluded"]
    assert app.reproduce(delivery.id).problems == []
    with pytest.raises(InvalidPeriod, match="data window"):
        app.define_requirement("QIP-BAD-WINDOW", "bad", [], [], date(2025, 1, 1), date(2025, 12, 31),
                               date(2026, 3, 31), "", data_window_start=date(2026, 1, 1))


def test_only_participating_entities_receive_data_and_a_refusal_is_recorded_nowhere(
        app: QipShare, world: dict[str, Any]) -> None:
    """Letter 002: the plan shares with "participating DPH and DMPH systems": "an entity not marked participating …
    gets a 409/422 problem on POST /deliveries, recorded nowhere"."""
    outsider = app.register_entity("DPH", "Not In The Program", {"npi": "3333333336"}, "3 Elm St, Fresno CA",
                                   "sftp://x", [], participating=False)
    assign(app, SALLY, "3333333336", "2025-02-01", version=7)
    position = app.recorder.max_notification_id()
    with pytest.raises(Conflict, match="not a participating"):
        app.delivery_request(outsider.id, "QIP-PY2025", None, None)
    assert app.recorder.max_notification_id() == position and app.deliveries() == []
    app.record_participation(world["dph"].id, False, "left the program (state list 2026-01)", "program-staff#t", LOADED)
    with pytest.raises(Conflict):
        app.delivery_request(world["dph"].id, "QIP-PY2025", None, None)
    entity, changed = app.record_participation(world["dph"].id, True, "rejoined", "program-staff#t", LOADED)
    assert changed and entity.participating and [p["participating"] for p in entity.participation] == [False, True]
    assert deliver(app, world["dph"].id).members == 3


def test_each_recipient_is_recorded_with_its_legal_basis(app: QipShare, world: dict[str, Any]) -> None:
    """DOMAIN.md Part B: "for a DMPH community partner that is not itself a covered entity, through the DMPH as its
    business associate. Each delivery records the basis per recipient."
    """
    covered = app.register_entity("DMPH", "Bay District Hospital", {"npi": "4444444448"}, "4 Bay Rd, Monterey CA",
                                  "sftp://bay", [{"name": "Bay Clinic", "address": "5 Bay Rd, Monterey CA",
                                                  "endpoint": "sftp://bay-clinic", "covered_entity": True}])
    assert covered.recipients[1]["legal_basis"] == PARTNER_COVERED_BASIS
    delivery = deliver(app, world["dmph"].id)
    assert [r["legal_basis"].split(":")[0] for r in delivery.recipients] == [
        "45 CFR 164.506(c)(4)", "through the DMPH, as its business associate (45 CFR 164.502(e), 164.504(e))"]
    assert delivery.recipients[1]["legal_basis"] == PARTNER_BA_BASIS
    manifest = json.loads(app.files.read(delivery.manifest["sha256"]))
    assert [r["legal_basis"] for r in manifest["extension"]["recipients"]] == [r["legal_basis"] for r in delivery.recipients]
    [rover] = app.disclosures_of(ROVER)
    assert rover.recipients[1]["legal_basis"] == PARTNER_BA_BASIS


def test_a_legal_basis_lifts_its_category_for_that_member_only(app: QipShare, world: dict[str, Any]) -> None:
    with pytest.raises(Conflict):
        app.record_legal_basis(SALLY, "because", date(2025, 1, 1), None, "doc-1", "program-staff#t", LOADED)
    app.record_legal_basis(SALLY, "part2_consent", date(2025, 1, 1), None, "consent form 2025-17", "program-staff#t",
                           LOADED)
    delivery = deliver(app, world["dph"].id)
    assert delivery.totals["withheld"] == {"hiv_test_results": 1}
    assert delivery.totals["records"]["ExplanationOfBenefit"] == 5


def test_a_past_delivery_is_reproduced_byte_for_byte_whatever_changed_since(app: QipShare, world: dict[str, Any]) -> None:
    first = deliver(app, world["dph"].id)
    assert deliver(app, world["dph"].id).id != first.id  # the log moved on (the first delivery itself): a new one
    request = app.delivery_request(world["dph"].id, "QIP-PY2025", None, None)
    assert app.deliver(request, "x", DELIVERED).id == request.delivery_id == app.deliver(request, "y", DELIVERED).id

    # Everything a delivery depends on changes: a new value-set version, a later feed, a reassignment, a consent.
    app.publish_value_sets(from_fhir(V2, ""), "fhir", LOADED)
    load(app, "lab_results", f"result_id,cin,collected_date,loinc,value,unit\nL9,{SALLY},2025-08-01,4548-4,6.1,%\n")
    assign(app, TEEN, DMPH_NPI, "2025-01-01", version=9)
    app.record_legal_basis(SALLY, "part2_consent", date(2025, 1, 1), None, "consent", "program-staff#t", LOADED)
    later = deliver(app, world["dph"].id)
    assert later.value_sets == {"http://example.org/ValueSet/qip-measures": "2026"}
    assert later.totals["records"] != first.totals["records"]

    reproduction = app.reproduce(first.id)
    assert reproduction.problems == [] and reproduction.manifest_sha256 == first.manifest["sha256"]
    assert all(f["recorded"] == f["rebuilt"] for f in reproduction.files)


def test_a_reproduction_names_what_no_longer_matches(app: QipShare, world: dict[str, Any],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    delivery = deliver(app, world["dph"].id)
    # A changed selection rule (here: the value-set filter ignoring LOINC) must show as a difference.
    original = feeds.record_of

    def without_loinc(*args: Any) -> FeedRecord:
        record = original(*args)
        return FeedRecord(**{**vars(record), "codes": tuple(c for c in record.codes if c[0] != "http://loinc.org")})

    monkeypatch.setattr(feeds, "record_of", without_loinc)
    problems = app.reproduce(delivery.id).problems
    assert any(p.startswith("Observation.ndjson") for p in problems) and any("manifest" in p for p in problems)


def test_a_delivery_interrupted_before_its_disclosures_completes_them_at_start(
        app: QipShare, world: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(QipShare, "_record_disclosures", lambda *_: None)
    delivery = deliver(app, world["dph"].id)
    assert app.disclosures_of(SALLY) == [] and app.delivery(delivery.id).disclosures_recorded is None
    monkeypatch.undo()
    assert app.complete_interrupted_deliveries() == 1
    assert app.delivery(delivery.id).disclosures_recorded == 3 and len(app.disclosures_of(SALLY)) == 1
    assert app.complete_interrupted_deliveries() == 0


def test_requirements_are_defined_once_and_late_deliveries_say_so(app: QipShare, world: dict[str, Any]) -> None:
    with pytest.raises(Conflict):
        app.define_requirement("QIP-PY2025", "other title", [], [], date(2025, 1, 1), date(2025, 12, 31),
                               date(2026, 3, 31), "")
    with pytest.raises(Conflict):
        app.define_requirement("QIP-X", "bad kinds", ["faxes"], [], date(2025, 1, 1), date(2025, 12, 31),
                               date(2026, 3, 31), "")
    late = deliver(app, world["dph"].id, at=datetime(2026, 4, 1, 8, tzinfo=UTC))
    assert late.on_time is False and late.due_date == date(2026, 3, 31)


def test_a_record_sent_again_in_a_later_file_is_delivered_once_as_last_sent(app: QipShare, world: dict[str, Any]) -> None:
    load(app, "lab_results", f"result_id,cin,collected_date,loinc,value,unit\nL1,{SALLY},2025-03-01,4548-4,7.1,%\n")
    delivery = deliver(app, world["dph"].id)
    [observation] = ndjson(app, delivery, "Observation")
    assert observation["valueQuantity"]["value"] == 7.1
    assert delivery.totals["excluded"]["superseded_by_a_later_file"] == 1


def test_immunizations_and_lab_results_may_come_as_fhir_ndjson(app: QipShare, world: dict[str, Any]) -> None:
    lines = [
        {"resourceType": "Immunization", "id": "cair-1", "status": "completed", "occurrenceDateTime": "2025-04-02",
         "patient": {"identifier": {"value": SALLY}},
         "vaccineCode": {"coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": "03"}]}},
        {"resourceType": "Immunization", "id": "cair-2", "status": "completed", "occurrenceDateTime": "2025-04-02",
         "patient": {"reference": f"Patient/{SALLY}"}, "vaccineCode": "03"},
        {"resourceType": "Patient", "id": "x"},
        {"resourceType": "Immunization", "id": "cair-3", "status": "completed", "occurrenceDateTime": "2025-04-03",
         "patient": {"reference": f"Patient/{SALLY}"}, "vaccineCode": {"text": "flu"}},
    ]
    text = "\n".join(json.dumps(line) for line in lines) + "\nnot json\n"
    feed = load(app, "immunizations", text)
    assert (feed.accepted, feed.rejected) == (1, 4)
    assert [r["line"] for r in feed.rejects] == [2, 3, 4, 5]
    assert feed.rejects[0]["reason"].startswith("not a valid FHIR R4 Immunization (invalid fields: vaccineCode")
    assert feed.rejects[1:] == [{"line": 3, "reason": "not a FHIR Immunization"},
                                {"line": 4, "reason": "cvx: required"}, {"line": 5, "reason": "not a JSON object"}]
    assert load(app, "pharmacy", json.dumps(lines[0]) + "\n").file_problem == (
        "pharmacy is taken as CSV only (FHIR NDJSON: immunizations, lab_results)")
    delivery = deliver(app, world["dph"].id)
    assert sorted(i["occurrenceDateTime"] for i in ndjson(app, delivery, "Immunization")) == ["2025-03-15", "2025-04-02"]


def test_two_replicas_building_the_same_delivery_record_it_once(app: QipShare, world: dict[str, Any]) -> None:
    request = app.delivery_request(world["dph"].id, "QIP-PY2025", None, None)
    other = QipShare(f"sqlite:///{app.env['SQLITE_DBNAME']}")  # a second replica on the same store
    original_find = QipShare.find
    calls = {"n": 0}

    def blind_once(self: QipShare, aggregate_id: Any, kind: Any) -> Any:
        if kind is Delivery and calls["n"] == 0:  # the first replica looks before the second has recorded it
            calls["n"] += 1
            return None
        return original_find(self, aggregate_id, kind)

    first = other.deliver(request, "replica-a", DELIVERED)
    QipShare.find = blind_once  # type: ignore[method-assign]
    try:
        second = app.deliver(request, "replica-b", DELIVERED)
    finally:
        QipShare.find = original_find  # type: ignore[method-assign]
    assert second.id == first.id and second.requested_by == "replica-a" and second.disclosures_recorded == 3
    assert len(app.disclosures_of(SALLY)) == 1 and len(app.deliveries()) == 1
    other.close()


def store_as_the_previous_release_left_it(app: QipShare) -> None:
    """Policy 2025.1 current, as the previous release stored it (labels as written)."""
    first = shipped_policies()[0]
    stored = check_policy(first)
    for name, category in stored["categories"].items():
        category["security_labels"] = first["categories"][name]["security_labels"]
    aggregate = SensitivityPolicy()
    aggregate.publish("2025.1", stored, "default policy (DOMAIN.md Part B)")
    app.save(aggregate)


def test_a_delivery_recorded_under_the_original_rules_and_policy_2025_1_still_reproduces(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """"old deliveries recorded under the old policy version must still reproduce under the policy version they
    recorded": a delivery recorded before rules were versioned (day-by-day routing, minors' services and the specialty
    mental health feed withheld by 2025.1) is rebuilt byte for byte after the store gains 2026.1."""
    monkeypatch.setenv("DSI_PAYLOAD_KEY", base64.b64encode(os.urandom(32)).decode())
    app = QipShare(f"sqlite:///{tmp_path / 'old.db'}")
    store_as_the_previous_release_left_it(app)
    with monkeypatch.context() as old:  # the previous release: no rules version, recipients without a basis
        old.setattr("qip_share.application.RULES_VERSION", None)
        old.setattr(QipEntity, "recipients", property(lambda self: [
            {"name": self.name, "address": self.address, "endpoint": self.endpoint, "role": self.kind},
            *({**p, "role": "community_partner"} for p in self.community_partners)]))
        people = build_world(app)
        before = deliver(app, people["dph"].id)
    assert before.policy_version == "2025.1" and before.rules_version is None
    assert before.totals["withheld"] == {"hiv_test_results": 1, "minor_sensitive_services": 1,
                                         "psychotherapy_lps": 1, "sud_42cfr2": 2}
    assert "MedicationDispense" not in before.totals["records"]  # Rover's September fill went to the DMPH
    manifest = json.loads(app.files.read(before.manifest["sha256"]))
    assert "rules_version" not in manifest["extension"] and "legal_basis" not in manifest["extension"]["recipients"][0]

    assert app.ensure_default_policy() == ["2026.1"]  # the new release starts on the old store
    after = deliver(app, people["dph"].id)
    assert after.policy_version == "2026.1" and after.totals["records"]["MedicationDispense"] == 1
    reproduction = app.reproduce(before.id)
    assert reproduction.problems == [] and reproduction.manifest_sha256 == before.manifest["sha256"]
    assert app.reproduce(after.id).problems == []
