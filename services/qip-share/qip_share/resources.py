"""Feed records → FHIR R4 resources carrying only the minimum necessary (DOMAIN.md Part B): what a QIP measure
needs to place a member in a denominator or numerator — who (CIN, birth date, sex), when (service dates), what
(the codes) and by whom (NPIs). No names, addresses, amounts, claim numbers or free text.

Fields per resource type, from the feed columns (`feeds.FEED_KINDS`):
- Patient: identifier (CIN, type MA), birthDate, gender — from the latest eligibility row.
- Coverage: period, Medi-Cal aid code or other coverage's carrier and type, dual status.
- ExplanationOfBenefit: claim type (professional, institutional, oral), billable period, billing/rendering NPI,
  ICD-10-CM diagnoses, ICD-10-PCS procedures, one item with its CPT/HCPCS/CDT code, modifiers, revenue code,
  place of service, type of bill, discharge status.
- MedicationDispense: NDC (and RxNorm), fill date, days supply, quantity, pharmacy NPI.
- Observation: LOINC, collection date, value and unit or coded result, interpretation.
- Immunization: CVX (and NDC), administration date, administering NPI.

Ids are derived from the feed record's key, so the same record keeps its id from one delivery to the next.
"""

from __future__ import annotations

import hashlib
from datetime import date
from typing import Any

from qip_share.codes import CVX, LOINC, NDC, RXNORM
from qip_share.feeds import FeedRecord

NPI = "http://hl7.org/fhir/sid/us-npi"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
COVERAGE_CLASS = "http://terminology.hl7.org/CodeSystem/coverage-class"
CLAIM_TYPE = "http://terminology.hl7.org/CodeSystem/claim-type"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
GENDER = {"M": "male", "F": "female", "X": "other", "U": "unknown"}
PLAN = {"display": "Medi-Cal managed care plan"}


def resource_id(*parts: str) -> str:
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


def patient_id(cin: str) -> str:
    return resource_id("Patient", cin)


def _subject(cin: str) -> dict[str, str]:
    return {"reference": f"Patient/{patient_id(cin)}"}


def _npi(value: str | None) -> dict[str, Any] | None:
    return {"identifier": {"system": NPI, "value": value}} if value else None


def _coding(system: str, code: str) -> dict[str, str]:
    return {"system": system, "code": code}


def _prune(resource: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in resource.items() if v not in (None, [], {})}


def patient(cin: str, demographics: dict[str, str] | None) -> dict[str, Any]:
    demographics = demographics or {}
    return _prune({"resourceType": "Patient", "id": patient_id(cin),
                   "identifier": [{"type": {"coding": [_coding(V2_0203, "MA")]}, "value": cin}],
                   "birthDate": demographics.get("birth_date"),
                   "gender": GENDER.get(demographics.get("sex", "").upper()[:1])})


def _period(start: date | None, end: date | None) -> dict[str, str]:
    return {k: v.isoformat() for k, v in (("start", start), ("end", end)) if v is not None}


def coverage(record: FeedRecord) -> dict[str, Any]:
    f = record.fields
    if record.kind == "eligibility":
        kind: dict[str, Any] = {"text": "Medi-Cal"}
        classes: list[dict[str, Any]] = [{"type": {"coding": [_coding(COVERAGE_CLASS, "plan")]},
                    "value": f["aid_code"], "name": "aid code"}]
        payor: list[dict[str, Any]] = [PLAN]
    else:
        kind, classes = {"text": f["coverage_type"]}, []
        payor = [{"identifier": {"value": f["carrier_code"]}}]
    extension = [{"url": "urn:dsi:dual-status", "valueString": f["dual_status"]}] if f.get("dual_status") else []
    return _prune({"resourceType": "Coverage", "id": resource_id(record.kind, record.key), "status": "active",
                   "type": kind, "beneficiary": _subject(record.cin), "period": _period(record.start, record.end),
                   "payor": payor, "class": classes, "extension": extension})


def explanation_of_benefit(record: FeedRecord) -> dict[str, Any]:
    f = record.fields
    form = "oral" if record.kind == "dental" else (
        "institutional" if f.get("claim_form", "").lower().startswith("i") else "professional")
    diagnoses = [{"sequence": i, "diagnosisCodeableConcept": {"coding": [_coding(system, code)]}}
                 for i, (system, code) in enumerate(
                     ((s, c) for s, c in record.codes if s.endswith("icd-10-cm")), start=1)]
    procedures = [{"sequence": i, "procedureCodeableConcept": {"coding": [_coding(system, code)]}}
                  for i, (system, code) in enumerate(
                      ((s, c) for s, c in record.codes if s.endswith("Coding/ICD10")), start=1)]
    item_codes = [_coding(s, c) for s, c in record.codes if not s.endswith(("icd-10-cm", "Coding/ICD10"))]
    served = record.day.isoformat() if record.day else None
    item = _prune({"sequence": 1, "servicedDate": served,
                   "productOrService": {"coding": item_codes} if item_codes else {"text": "not coded"},
                   "modifier": [{"coding": [_coding("http://www.ama-assn.org/go/cpt", m)]}
                                for m in f.get("modifiers", "").split("|") if m],
                   "revenue": {"coding": [_coding("https://www.nubc.org/CodeSystem/RevenueCodes", f["revenue_code"])]}
                   if f.get("revenue_code") else None,
                   "locationCodeableConcept": {"coding": [_coding(
                       "https://www.cms.gov/Medicare/Coding/place-of-service-codes/Place_of_Service_Code_Set",
                       f["place_of_service"])]} if f.get("place_of_service") else None})
    supporting = [{"sequence": 1, "category": {"text": key.replace("_", " ")}, "code": {"text": f[key]}}
                  for key in ("type_of_bill", "discharge_status") if f.get(key)]
    for i, info in enumerate(supporting, start=1):
        info["sequence"] = i
    rendering = _npi(f.get("rendering_npi"))
    return _prune({"resourceType": "ExplanationOfBenefit", "id": resource_id(record.kind, record.key),
                   "meta": {"source": f"#{record.kind}"}, "status": "active",
                   "type": {"coding": [_coding(CLAIM_TYPE, form)]}, "use": "claim", "patient": _subject(record.cin),
                   "billablePeriod": _period(record.day, date.fromisoformat(f["service_end_date"])
                                             if f.get("service_end_date") else record.day),
                   "created": served, "insurer": PLAN, "provider": _npi(f.get("billing_npi")), "outcome": "complete",
                   "careTeam": [{"sequence": 1, "provider": rendering}] if rendering else [],
                   "supportingInfo": supporting, "diagnosis": diagnoses, "procedure": procedures,
                   "insurance": [{"focal": True, "coverage": {"display": "Medi-Cal"}}], "item": [item]})


def medication_dispense(record: FeedRecord) -> dict[str, Any]:
    f = record.fields
    codings = [_coding(s, c) for s, c in record.codes if s in (NDC, RXNORM)]
    pharmacy = _npi(f.get("pharmacy_npi"))
    return _prune({"resourceType": "MedicationDispense", "id": resource_id(record.kind, record.key),
                   "status": "completed", "medicationCodeableConcept": {"coding": codings},
                   "subject": _subject(record.cin), "whenHandedOver": record.day.isoformat() if record.day else None,
                   "daysSupply": _quantity(f.get("days_supply"), None),
                   "quantity": _quantity(f.get("quantity"), None),
                   "performer": [{"actor": pharmacy}] if pharmacy else []})


def observation(record: FeedRecord) -> dict[str, Any]:
    f = record.fields
    loinc = [_coding(s, c) for s, c in record.codes if s == LOINC]
    coded = [_coding(s, c) for s, c in record.codes if s != LOINC]
    value: dict[str, Any] = {}
    if f.get("value") is not None:
        quantity = _quantity(f["value"], f.get("unit"))
        value = {"valueQuantity": quantity} if quantity else {"valueString": f["value"]}
    elif coded:
        value = {"valueCodeableConcept": {"coding": coded}}
    return _prune({"resourceType": "Observation", "id": resource_id(record.kind, record.key), "status": "final",
                   "category": [{"coding": [_coding(OBSERVATION_CATEGORY, "laboratory")]}],
                   "code": {"coding": loinc}, "subject": _subject(record.cin),
                   "effectiveDateTime": record.day.isoformat() if record.day else None, **value,
                   "interpretation": [{"text": f["interpretation"]}] if f.get("interpretation") else []})


def immunization(record: FeedRecord) -> dict[str, Any]:
    f = record.fields
    codes = [_coding(s, c) for s, c in record.codes if s in (CVX, NDC)]
    administered = _npi(f.get("administering_npi"))
    return _prune({"resourceType": "Immunization", "id": resource_id(record.kind, record.key), "status": "completed",
                   "vaccineCode": {"coding": codes}, "patient": _subject(record.cin),
                   "occurrenceDateTime": record.day.isoformat() if record.day else None,
                   "performer": [{"actor": administered}] if administered else []})


def _quantity(value: str | None, unit: str | None) -> dict[str, Any] | None:
    if not value:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    shown: int | float = int(number) if number.is_integer() else number
    return {"value": shown, **({"unit": unit} if unit else {})}


BUILDERS = {"Coverage": coverage, "ExplanationOfBenefit": explanation_of_benefit,
            "MedicationDispense": medication_dispense, "Observation": observation, "Immunization": immunization}


def resource_of(record: FeedRecord, resource_type: str) -> dict[str, Any]:
    return BUILDERS[resource_type](record)
