"""Longitudinal records for primary care (DOMAIN.md A3): one member's summary of care, as a FHIR R4 Bundle (Patient +
at least one clinical resource about that Patient) or a C-CDA CCD with its six required sections.
Returns the member's CIN, how it was found, every problem found and every leniency taken (names of elements and
rules, never values).

Read as an interface engine would (issue 13): Synthea and most converters emit `transaction` or `batch` Bundles, and
their resources often miss a field the R4 model requires (a converted Observation without `status`); such a resource
still counts and the leniency is recorded. References are resolved inside the Bundle (`urn:uuid:` fullUrls, relative
`Patient/123`, absolute URLs, conditional `Patient?identifier=…`, logical identifier references).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any
from xml.etree.ElementTree import Element

from defusedxml import ElementTree
from defusedxml.common import DefusedXmlException
from dsi_shared import jsonsafe
from dsi_shared.errors import describe
from dsi_shared.jsonsafe import JsonTooDeep
from dsi_shared.members import cin_of, cin_of_fhir_identifiers
from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.bundle import Bundle
from pydantic import ValidationError

CLINICAL = {"Condition", "Observation", "MedicationRequest", "MedicationStatement", "AllergyIntolerance",
            "Immunization", "Procedure", "Encounter"}
BUNDLE_TYPES = ("document", "collection", "transaction", "batch", "searchset")
# No public NamingSystem exists for the CIN; this is the plan's, published to senders (README, submissions).
MAX_NOTES = 20  # a Synthea bundle may hold thousands of resources: the facts keep the first few leniencies

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
PAYERS_TEMPLATE, PAYERS_LOINC = "2.16.840.1.113883.10.20.22.2.18", "48768-6"
RECORD_TARGET = "recordTarget/patientRole/id"
PAYER_MEMBER = "Payers section (48768-6) covered party member id"
_TAIL = re.compile(r"(?:^|/)([A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?$")  # …/Type/id[/_history/v]

Resource = dict[str, Any]


@dataclass
class RecordFacts:
    kind: str  # fhir-bundle | ccda-ccd
    cin: str | None = None
    problems: list[str] = field(default_factory=list)
    resource_types: list[str] = field(default_factory=list)
    member_found_by: str | None = None  # the rule that found the CIN
    leniencies: list[str] = field(default_factory=list)  # what a strict reader would have refused
    bundle_type: str | None = None

    def recorded(self) -> dict[str, Any]:
        """What the submission's facts keep beyond the member and the resource types."""
        leniencies = self.leniencies[:MAX_NOTES] + (
            [f"… and {len(self.leniencies) - MAX_NOTES} more"] if len(self.leniencies) > MAX_NOTES else [])
        shown: dict[str, Any] = {"member_found_by": self.member_found_by, "leniencies": leniencies}
        return shown | ({"bundle_type": self.bundle_type} if self.bundle_type else {})


# -- FHIR -----------------------------------------------------------------------------------------------------------
def fhir_bundle(text: str) -> RecordFacts:
    facts = RecordFacts("fhir-bundle")
    try:
        raw = jsonsafe.loads(text, "the Bundle")
    except json.JSONDecodeError:
        facts.problems.append("not JSON")
        return facts
    except JsonTooDeep:
        facts.problems.append(f"not a valid FHIR R4 Bundle (nests deeper than {jsonsafe.MAX_JSON_DEPTH} levels)")
        return facts
    broken = _validate(raw, facts)
    if broken is not None:
        facts.problems.append(f"not a valid FHIR R4 Bundle ({broken})")
        return facts
    facts.bundle_type = raw["type"] if isinstance(raw.get("type"), str) else None
    if facts.bundle_type not in BUNDLE_TYPES:
        facts.problems.append("Bundle.type must be " + ", ".join(BUNDLE_TYPES[:-1]) + " or " + BUNDLE_TYPES[-1])
    bundle = _Index([e for e in raw.get("entry") or []
                     if isinstance(e.get("resource"), dict) and _known(str(e["resource"].get("resourceType")))])
    facts.resource_types = sorted({r["resourceType"] for r in bundle.resources})
    clinical = [r for r in bundle.resources if r["resourceType"] in CLINICAL]
    patient = _member_patient(bundle, clinical, facts)
    if patient is not None:
        found = _patient_cin(patient)
        if found is None:
            facts.problems.append("Patient.identifier has no Medi-Cal CIN")
        else:
            facts.cin, facts.member_found_by = found
    if not clinical:
        facts.problems.append("Bundle holds no clinical resource (" + ", ".join(sorted(CLINICAL)) + ")")
    elif patient is not None:
        _clinical_of(patient, clinical, bundle, facts)
    return facts


def _validate(raw: Any, facts: RecordFacts) -> str | None:
    """Why `raw` is not a Bundle at all, or None. A resource the R4 model refuses (a required field missing, a type
    R4 does not know) is only a leniency: the record is read from the JSON itself."""
    if not isinstance(raw, dict) or raw.get("resourceType") != "Bundle":
        return "resourceType is not Bundle"
    envelope = dict(raw)
    if isinstance(raw.get("entry"), list):
        envelope["entry"] = []
        for number, entry in enumerate(raw["entry"]):
            resource = entry.get("resource") if isinstance(entry, dict) else None
            kind = resource.get("resourceType") if isinstance(resource, dict) else None
            if isinstance(kind, str) and not _known(kind):
                facts.leniencies.append(f"entry {number}: resourceType not in FHIR R4, ignored")
                entry = {k: v for k, v in entry.items() if k != "resource"}
            elif resource is not None and not isinstance(kind, str):
                return f"entry {number}: resource has no resourceType"
            envelope["entry"].append(entry)
    try:
        Bundle.model_validate(envelope)
    except ValidationError as exc:
        inside = [e for e in exc.errors() if len(e["loc"]) > 3 and e["loc"][0] == "entry" and e["loc"][2] == "resource"]
        if len(inside) < len(exc.errors()):
            return describe(exc)
        for error in inside:
            number = int(error["loc"][1])
            kind = raw["entry"][number]["resource"]["resourceType"]
            where = ".".join(map(str, error["loc"][3:]))
            facts.leniencies.append(f"entry {number} ({kind}) not valid R4, read anyway: {where}: {error['type']}")
    except (ValueError, TypeError, KeyError):
        return "invalid"
    return None


def _known(resource_type: str) -> bool:
    try:
        get_fhir_model_class(resource_type)
    except (ValueError, KeyError):
        return False
    return True


class _Index:
    """The Bundle's resources by every name a reference inside it may use."""

    def __init__(self, entries: list[dict[str, Any]]) -> None:
        self.resources: list[Resource] = []
        self.by_key: dict[str, Resource] = {}
        for entry in entries:
            resource: Resource = entry["resource"]
            if not isinstance(resource.get("resourceType"), str):
                continue
            self.resources.append(resource)
            request = entry["request"] if isinstance(entry.get("request"), dict) else {}
            keys = [entry.get("fullUrl"), request.get("url") if request.get("method") == "PUT" else None]
            if isinstance(resource.get("id"), str):
                keys.append(f"{resource['resourceType']}/{resource['id']}")
            for key in filter(None, keys):
                if isinstance(key, str):
                    self.by_key.setdefault(key, resource)
                    tail = _TAIL.search(key)
                    if tail:
                        self.by_key.setdefault(tail.group(1), resource)

    def resolve(self, reference: Any) -> Resource | None:
        if not isinstance(reference, dict):
            return None
        target = reference.get("reference")
        if isinstance(target, str):
            if target in self.by_key:
                return self.by_key[target]
            if "?" in target:  # conditional reference, as a transaction may carry: Patient?identifier=system|value
                kind, _, query = target.partition("?")
                wanted = dict(p.partition("=")[::2] for p in query.split("&")).get("identifier", "")
                system, _, value = wanted.rpartition("|")
                return self._by_identifier(kind, {"system": system or None, "value": value})
            tail = _TAIL.search(target)
            return self.by_key.get(tail.group(1)) if tail else None
        if isinstance(reference.get("identifier"), dict):  # a logical reference
            return self._by_identifier(reference.get("type") or "Patient", reference["identifier"])
        return None

    def _by_identifier(self, kind: str, wanted: dict[str, Any]) -> Resource | None:
        for resource in self.resources:
            if resource["resourceType"] != kind:
                continue
            for identifier in _listed(resource.get("identifier")):
                if isinstance(identifier, dict) and identifier.get("value") == wanted.get("value") and (
                        not wanted.get("system") or identifier.get("system") == wanted["system"]):
                    return resource
        return None


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _subject(resource: Resource) -> Any:
    return resource.get("subject") or resource.get("patient")  # AllergyIntolerance, Immunization: `patient`


def _member_patient(bundle: _Index, clinical: list[Resource], facts: RecordFacts) -> Resource | None:
    """The Patient the record is about: the only one, or of several the one the clinical resources point at."""
    patients = [r for r in bundle.resources if r["resourceType"] == "Patient"]
    if len(patients) <= 1:
        if not patients:
            facts.problems.append("Bundle holds no Patient")
        return patients[0] if patients else None
    ids = {id(p) for p in patients}
    named = {id(p): p for r in clinical if id(p := bundle.resolve(_subject(r))) in ids}
    if len(named) != 1:
        facts.problems.append("Bundle holds more than one Patient and its clinical resources do not point at one")
        return None
    facts.leniencies.append(f"Bundle holds {len(patients)} Patients: the one its clinical resources point at is read")
    return next(iter(named.values()))


def _clinical_of(patient: Resource, clinical: list[Resource], bundle: _Index, facts: RecordFacts) -> None:
    """At least one clinical resource must be about the member: pointing at the Patient, or (leniently) at nobody."""
    about, unresolved, unnamed = 0, 0, 0
    for resource in clinical:
        reference = _subject(resource)
        target = bundle.resolve(reference) if reference is not None else None
        about += target is patient or reference is None
        unresolved += reference is not None and target is None
        unnamed += reference is None
    if unnamed:
        facts.leniencies.append(f"{unnamed} clinical resources name no subject: read as the Patient's")
    if unresolved:
        facts.leniencies.append(f"{unresolved} clinical resources point at a subject not in the Bundle: not counted")
    if not about:
        facts.problems.append("no clinical resource in the Bundle is about its Patient")


def _patient_cin(patient: Resource) -> tuple[str, str] | None:
    """The CIN of the Patient and the rule that found it (`dsi_shared.members.cin_of_fhir_identifiers`)."""
    found = cin_of_fhir_identifiers(patient.get("identifier"))
    return (found[0], f"Patient.{found[1]}") if found else None


# -- C-CDA ----------------------------------------------------------------------------------------------------------
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
    for rule, ids in ((RECORD_TARGET, root.findall(f"{HL7}recordTarget/{HL7}patientRole/{HL7}id")),
                      (PAYER_MEMBER, _payer_member_ids(root))):
        facts.cin = next(filter(None, (cin_of(i.get("extension")) for i in ids)), None)
        if facts.cin is not None:
            facts.member_found_by = rule
            break
    else:
        facts.problems.append(f"no Medi-Cal CIN in {RECORD_TARGET} or the {PAYER_MEMBER}")
    present = {t.get("root") for t in root.iter(f"{HL7}templateId")}
    for name, roots in CCD_SECTIONS.items():
        if not present & set(roots):
            facts.problems.append(f"CCD section missing: {name}")
    return facts


def _payer_member_ids(root: Element) -> list[Element]:
    """Payers section: act/entryRelationship/act/participant[@typeCode='COV']/participantRole/id (the member id)."""
    ids: list[Element] = []
    for section in root.iter(f"{HL7}section"):
        code = section.find(f"{HL7}code")
        if PAYERS_TEMPLATE in {t.get("root") for t in section.findall(f"{HL7}templateId")} or (
                code is not None and code.get("code") == PAYERS_LOINC):
            ids += section.findall(f".//{HL7}participant[@typeCode='COV']/{HL7}participantRole/{HL7}id")
    return ids
