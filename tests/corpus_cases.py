"""The public-sample corpus (tests/corpus/, sources and licenses in its README): what each sample must produce, and
the run-time rewriting that lets a synthetic sample reach a credit.

Samples are kept byte for byte as received. They carry no Medi-Cal CIN, senders we do not know and dates years
away, so before sending the test rewrites only identifiers and clocks, never structure:
- HL7 v2: MSH-4 (when not blank) → SUNNY_SNF; a CIN repetition `<CIN>^^^CAMEDICAL^MA` is put first in PID-3
  (the sample's own identifiers stay); EVN-2, EVN-6, PV1-44 and PV1-45 (when not blank) → 2025-11-10 08:00.
  Bytes are handled as latin-1 so the encoding of everything else is untouched (BOM, Windows-1252, terminators).
- FHIR: one identifier `{type: <cin_type>, value: <CIN>}` is added to the (first) Patient.
- C-CDA: `<id extension="<CIN>"/>` is added first in recordTarget/patientRole, or `@CIN@` is replaced.
- X12 834: each REF*0F value → a CIN. ATR: each Patient gets a CIN identifier; the Group's NPI (9941339108, which
  fails the NPI check digit) → the registered primary care participant's NPI.

Expectations are what issue 13 requires, not what the code did when this was written.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import Element

from defusedxml import ElementTree

CORPUS = Path(__file__).parent / "corpus"
EVENT_TS = "20251110080000"  # plan-local 2025-11-10 08:00, after the SNF data sharing start
RECEIVED_AT = "2025-11-10T12:00:00-08:00"
GROUP_NPI = "9941339108"
PRACTITIONER_NPI = "9941339100"

AA = {"verdicts": ["credited"], "acks": ["AA"], "reasons": [[]]}


def _recorded(reason: str, acks: tuple[str, ...] = ("AA",)) -> dict[str, Any]:
    return {"verdicts": ["recorded"], "acks": list(acks), "reasons": [[reason]]}


# kind → sample name → expectation. HL7: per submission a verdict and its reasons (a reason ending in "*" is a
# prefix), per message an ACK code; `err3` the ERR-3 code of the first ACK; `each_message` posts the messages one
# by one (a cancel, then a resend). Records: verdict and reason substrings. 834/ATR/value sets: report figures.
HL7: dict[str, dict[str, Any]] = {
    "fhirconv-ADT-A01-02.hl7": AA,  # v2.8, visit in PV1-19
    "fhirconv-ADT-A02-02.hl7": AA,
    "fhirconv-ADT-A03-02.hl7": AA,
    "fhirconv-ADT-A11-02.hl7": _recorded("cancels_nothing_credited:A01"),
    "fhirconv-ADT-A13-02.hl7": _recorded("cancels_nothing_credited:A03"),
    "fhirconv-ADT01-23.hl7": AA,  # v2.3, UTF-8 BOM, trailing spaces after segments
    "fhirconv-ADT01-28.hl7": AA,  # v2.5.1, BOM, no PV1-19: the visit is PID-18
    "fhirconv-ADT04-23.hl7": _recorded("not_a_qualifying_event:A04"),
    "fhirconv-ADT04-251.hl7": {**_recorded("not_a_qualifying_event:A04", ("AE",)), "err3": "100"},  # EVN missing
    "fhirconv-LAB-ORU-1.hl7": {"verdicts": ["rejected"], "acks": ["AR"], "reasons": [["unknown_sending_facility"]],
                               "err3": "204"},  # an ORU alone with a blank MSH-4: no sender to credit
    "fhirconv-ORU-R01-RMGEAD.hl7": _recorded("no_qualifying_event"),  # v2.4, an ORU without its ADT
    "fhirconv-RDE-O11-02.hl7": _recorded("no_qualifying_event"),
    "fhirconv-PC1-Problem-Add-v2.3.1.hl7": {"verdicts": ["rejected"], "acks": ["AR"],
                                            "reasons": [["unknown_sending_facility"]], "err3": "204"},
    "python-hl7-sample_batch1.hl7": {"verdicts": ["recorded", "recorded"], "acks": ["AA", "AA"],  # BHS…BTS batch
                                     "reasons": [["not_a_qualifying_event:A04"]] * 2},
    "edge-windows-1252-no-msh18.hl7": AA,  # read as Windows-1252, answered with its own control id
    "edge-lf-terminators.hl7": AA,
    "edge-bom-crlf-trailing-whitespace.hl7": AA,
    "edge-visit-in-pid18-only.hl7": AA,
    "edge-visit-in-pv150-only.hl7": AA,
    "edge-no-visit-identifier.hl7": AA,  # the event key works without a visit
    "edge-hl7-v2.2.hl7": {"verdicts": ["rejected"], "acks": ["AR"], "reasons": [["unprocessable:unsupported HL7 version 2.2"]],
                          "err3": "203"},
    "edge-cancel-then-resend-a13.hl7": {"each_message": True, "verdicts": ["credited", "recorded", "credited"],
                                        "acks": ["AA", "AA", "AA"], "reasons": [[], ["cancels:*"], []]},
    "edge-cancel-then-resend-a11.hl7": {"each_message": True, "verdicts": ["credited", "recorded", "credited"],
                                        "acks": ["AA", "AA", "AA"], "reasons": [[], ["cancels:*"], []]},
    "edge-oru-with-blank-msh4.hl7": {"verdicts": ["credited"], "acks": ["AA", "AA"], "reasons": [[]]},
}

RECORDS: dict[str, dict[str, Any]] = {
    "ccda/ccda-examples-CCD-2.xml": {"verdict": "credited"},
    "ccda/edge-ccd-cin-in-payer-section.xml": {"verdict": "credited"},  # CIN only in the payers section
    "ccda/fhirconv-sample.ccda.xml": {"verdict": "rejected", "reasons": ["CCD template"]},  # not a CCD
    "ccda/fhirconv-Direct-Address-C-CDAR2.1.xml": {  # CCD template, none of the six sections: each named
        "verdict": "rejected", "reasons": ["allergies", "medications", "problems", "results", "social history",
                                           "vital signs"]},
    "fhir/synthea-sample_complete_patient-trimmed.json": {"verdict": "credited"},  # transaction, urn:uuid refs
    "fhir/edge-batch-relative-references.json": {"verdict": "credited"},
    "fhir/edge-searchset-identifier-type-mc.json": {"verdict": "credited", "cin_type": "MC"},
    "fhir/fhirconv-ObservationBundle.json": {"verdict": "rejected", "reasons": ["not a valid FHIR R4 Bundle"]},  # batch-response
}

X12: dict[str, dict[str, int]] = {
    "pyx12-example834_5010.txt": {"accepted": 1, "rejected": 0},  # member-level DTP*356 before NM1
    "pyx12-834_deident_new_enroll.txt": {"accepted": 1, "rejected": 0},
    "pyx12-834_deident_family.txt": {"accepted": 3, "rejected": 0},  # blank HD04; dependents with 356, no 348
    "pyx12-834_deident_term.txt": {"accepted": 0, "rejected": 0, "not_applied": 2},  # 024 with no span
    "pyx12-834_ls_le_ls.txt": {"accepted": 1, "rejected": 0},  # Oregon MMIS (state Medicaid), 356/357
}

# ATR: the Group (XML as received, read with fhir.resources) in a collection Bundle with the example Patients,
# Practitioner, PractitionerRole and Organization; per Patient the provider it must be attributed to on 2017-01-01
# ("group" = the Group's NPI, i.e. our participant).
ATR: dict[str, dict[str, Any]] = {
    # Patient/1's attributedProvider, Organization/2, has no NPI: rejected with that reason, never silently given
    # the Group's NPI (the fallback is for a member with no attributedProvider at all).
    "group-fullexample.xml": {"accepted": 2, "rejected": 1, "attributed": {"patient-2.json": PRACTITIONER_NPI,
                                                                           "patient-3.json": PRACTITIONER_NPI}},
    "davinci-patient-list-example.xml": {"accepted": 3, "rejected": 0, "attributed": {  # NPI only in the intended-recipient ext.
        "patient-1.json": "group", "patient-2.json": "group", "patient-3.json": "group"}},
}
ATR_RESOURCES = ("patient-1.json", "patient-2.json", "patient-3.json", "practitioner-1.json",
                 "practitionerrole-1.json", "organization-2.json")

VALUE_SETS: dict[str, dict[str, Any]] = {
    "synthea-vsac-2.16.840.1.113762.1.4.1.json": {"status": 422, "named": ["compose.include[0].concept[0]",
                                                                          "compose.include[0].concept[1]"]},
    "synthea-vsac-2.16.840.1.113762.1.4.1021.102.json": {"status": 422, "named": ["compose.include[0].concept[0]",
                                                                                 "compose.include[0].concept[1]"]},
    "edge-expansion-mixed-codes.json": {"status": 200, "codes": 2, "named": ["expansion.contains[2]",
                                                                            "expansion.contains[3]"]},
}


def adapt_hl7(raw: bytes, cin: str) -> bytes:
    """The sample with our sender, a CIN first in PID-3 and event times on 2025-11-10 (see the module doc)."""
    text = raw.decode("latin-1")  # a byte-preserving round trip whatever the sample's encoding
    parts = re.split(r"(\r\n|\r|\n)", text)
    component, repetition = "^", "~"
    for i, segment in enumerate(parts):
        body = segment.lstrip("ï»¿\x0b")
        lead = segment[: len(segment) - len(body)]
        name = body[:3]
        if name not in {"MSH", "PID", "EVN", "PV1"} or len(body) < 4:
            continue
        separator = body[3]
        fields = body.split(separator)
        if name == "MSH":
            component, repetition = fields[1][:1] or "^", fields[1][1:2] or "~"
            _set(fields, 3, "SUNNY_SNF", only_if_present=True)  # MSH-n is fields[n - 1]
        elif name == "PID":
            while len(fields) < 4:
                fields.append("")
            own = f"{cin}{component * 3}CAMEDICAL{component}MA"
            fields[3] = own + (repetition + fields[3] if fields[3] else "")
        elif name == "EVN":
            for n in (2, 6):
                _set(fields, n, EVENT_TS, only_if_present=True)
        else:
            for n in (44, 45):
                _set(fields, n, EVENT_TS, only_if_present=True)
        parts[i] = lead + separator.join(fields)
    return "".join(parts).encode("latin-1")


def _set(fields: list[str], index: int, value: str, only_if_present: bool) -> None:
    if index < len(fields) and (fields[index].strip() or not only_if_present):
        fields[index] = value


def split_messages(raw: bytes) -> list[bytes]:
    """The messages of a file, each from a segment starting `MSH|` ("MSH" also occurs inside field values)."""
    starts = [m.start(1) for m in re.finditer(rb"(?:^|[\r\n])(?:\xef\xbb\xbf)?(MSH\|)", raw)]
    return [raw[a:b] for a, b in zip(starts, [*starts[1:], len(raw)], strict=True)]


def adapt_record(path: str, raw: bytes, cin: str, cin_type: str = "MA") -> bytes:
    if path.endswith(".json"):
        bundle = json.loads(raw.decode("utf-8-sig"))
        patient = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
        patient.setdefault("identifier", []).append({"type": {"coding": [
            {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": cin_type}]}, "value": cin})
        return json.dumps(bundle).encode()
    text = raw.decode("utf-8")
    if "@CIN@" in text:
        return text.replace("@CIN@", cin).encode()
    return re.sub(r"(<patientRole[^>]*>)", rf'\1<id root="2.16.840.1.113883.3.1013" extension="{cin}"/>', text,
                  count=1).encode()


def adapt_834(raw: bytes, cins: list[str]) -> bytes:
    text = raw.decode("latin-1")
    element = text[3]
    pattern = re.compile(rf"(REF{re.escape(element)}0F{re.escape(element)})[^{re.escape(element)}~\n\\]*")
    numbered = iter(cins)
    return pattern.sub(lambda m: m.group(1) + next(numbered), text).encode("latin-1")


def ref_0f_count(raw: bytes) -> int:
    return len(re.findall(rb"REF.0F.", raw))


def atr_bundle(group_file: str, cins: dict[str, str], npi: str) -> dict[str, Any]:
    """A collection Bundle of the example Group (XML → JSON with fhir.resources) and its referenced resources."""
    group = fhir_xml_to_json(ElementTree.fromstring((CORPUS / "atr" / group_file).read_bytes()))
    text = json.dumps(group).replace(GROUP_NPI, npi)
    entries: list[dict[str, Any]] = [{"fullUrl": f"Group/{group['id']}", "resource": json.loads(text)}]
    for name in ATR_RESOURCES:
        resource = json.loads((CORPUS / "atr" / name).read_text())
        if name in cins:
            resource.setdefault("identifier", []).append({"type": {"coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MA"}]}, "value": cins[name]})
        entries.append({"fullUrl": f"{resource['resourceType']}/{resource['id']}", "resource": resource})
    return {"resourceType": "Bundle", "type": "collection", "entry": entries}


FHIR_NS = "{http://hl7.org/fhir}"
_LISTS = {"extension", "identifier", "member", "characteristic", "coding", "profile"}  # repeating in Group


def fhir_xml_to_json(element: Element) -> dict[str, Any]:
    """FHIR XML → JSON for the ATR Group examples, narrative left out (fhir.resources reads XML only with lxml,
    which is not pinned)."""
    out: dict[str, Any] = {} if element.tag != f"{FHIR_NS}Group" else {"resourceType": "Group"}
    if element.get("url"):
        out["url"] = element.get("url")
    for child in element:
        name = child.tag.removeprefix(FHIR_NS)
        if name == "text":  # the narrative (xhtml) carries nothing we read
            continue
        value: Any = child.get("value")
        if value is None:
            value = fhir_xml_to_json(child)
        elif value in ("true", "false"):
            value = value == "true"
        if name in _LISTS:
            out.setdefault(name, []).append(value)
        else:
            out[name] = value
    return out
