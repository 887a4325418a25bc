"""Longitudinal records for primary care (DOMAIN.md A3): one member's summary of care, as a FHIR R4 document or
collection Bundle (Patient + at least one clinical resource) or a C-CDA CCD with its six required sections.
Returns the member's CIN and every problem found (names of elements, never values)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from xml.etree.ElementTree import Element

from defusedxml import ElementTree
from defusedxml.common import DefusedXmlException
from dsi_shared import jsonsafe
from dsi_shared.errors import describe
from dsi_shared.jsonsafe import JsonTooDeep
from dsi_shared.members import CIN
from fhir.resources.R4B.bundle import Bundle
from pydantic import ValidationError

CLINICAL = {"Condition", "Observation", "MedicationRequest", "MedicationStatement", "AllergyIntolerance",
            "Immunization", "Procedure", "Encounter"}
HL7 = "{urn:hl7-org:v3}"
CCD_TEMPLATE = "2.16.840.1.113883.10.20.22.1.2"
CCD_SECTIONS = {  # C-CDA R2.1 section templates (entries required), and the v1.1 "entries optional" roots
    "allergies": ("2.16.840.1.113883.10.20.22.2.6.1", "2.16.840.1.113883.10.20.22.2.6"),
    "medications": ("2.16.840.1.113883.10.20.22.2.1.1", "2.16.840.1.113883.10.20.22.2.1"),
    "problems": ("2.16.840.1.113883.10.20.22.2.5.1", "2.16.840.1.113883.10.20.22.2.5"),
    "results": ("2.16.840.1.113883.10.20.22.2.3.1", "2.16.840.1.113883.10.20.22.2.3"),
    "social history": ("2.16.840.1.113883.10.20.22.2.17",),
    "vital signs": ("2.16.840.1.113883.10.20.22.2.4.1", "2.16.840.1.113883.10.20.22.2.4"),
}


@dataclass
class RecordFacts:
    kind: str  # fhir-bundle | ccda-ccd
    cin: str | None = None
    problems: list[str] = field(default_factory=list)
    resource_types: list[str] = field(default_factory=list)


def fhir_bundle(text: str) -> RecordFacts:
    facts = RecordFacts("fhir-bundle")
    try:
        raw = jsonsafe.loads(text, "the Bundle")
        bundle = Bundle.model_validate(raw)
    except json.JSONDecodeError:
        facts.problems.append("not JSON")
        return facts
    except JsonTooDeep:
        facts.problems.append(f"not a valid FHIR R4 Bundle (nests deeper than {jsonsafe.MAX_JSON_DEPTH} levels)")
        return facts
    except (ValidationError, ValueError, TypeError) as exc:
        facts.problems.append(f"not a valid FHIR R4 Bundle ({describe(exc) if isinstance(exc, ValidationError) else 'invalid'})")
        return facts
    if bundle.type not in {"document", "collection"}:
        facts.problems.append("Bundle.type must be document or collection")
    resources = [entry.resource for entry in bundle.entry or [] if entry.resource is not None]
    facts.resource_types = sorted({r.get_resource_type() for r in resources})
    patients = [r for r in resources if r.get_resource_type() == "Patient"]
    if len(patients) != 1:
        facts.problems.append("Bundle must hold exactly one Patient")
    else:
        facts.cin = _patient_cin(patients[0])
        if facts.cin is None:
            facts.problems.append("Patient.identifier has no Medi-Cal CIN")
    if not CLINICAL & set(facts.resource_types):
        facts.problems.append("Bundle holds no clinical resource (" + ", ".join(sorted(CLINICAL)) + ")")
    return facts


def _patient_cin(patient: Any) -> str | None:
    for identifier in patient.identifier or []:
        value = (identifier.value or "").strip().upper()
        codes = {c.code for c in (identifier.type.coding or [])} if identifier.type else set()
        if CIN.match(value) and ("MA" in codes or not codes):
            return value
    return None


def ccda_ccd(text: str) -> RecordFacts:
    facts = RecordFacts("ccda-ccd")
    try:
        root: Element = ElementTree.fromstring(text)
    except (ElementTree.ParseError, DefusedXmlException, ValueError):
        facts.problems.append("not well-formed (or unsafe) XML")
        return facts
    if root.tag != f"{HL7}ClinicalDocument":
        facts.problems.append("root element is not an HL7 v3 ClinicalDocument")
        return facts
    if CCD_TEMPLATE not in {t.get("root") for t in root.findall(f"{HL7}templateId")}:
        facts.problems.append("ClinicalDocument/templateId is not the CCD template")
    for element in root.findall(f"{HL7}recordTarget/{HL7}patientRole/{HL7}id"):
        value = (element.get("extension") or "").strip().upper()
        if CIN.match(value):
            facts.cin = value
            break
    if facts.cin is None:
        facts.problems.append("recordTarget/patientRole/id has no Medi-Cal CIN")
    present = {t.get("root") for t in root.iter(f"{HL7}templateId")}
    for name, roots in CCD_SECTIONS.items():
        if not present & set(roots):
            facts.problems.append(f"CCD section missing: {name}")
    return facts
