"""Code systems and codes, normalised so that a value set and a feed row agree on `(system, code)`
(reference: standards-and-law.md §4). Pure functions."""

from __future__ import annotations

import re

CPT = "http://www.ama-assn.org/go/cpt"
HCPCS = "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
ICD10PCS = "http://www.cms.gov/Medicare/Coding/ICD10"
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
NDC = "http://hl7.org/fhir/sid/ndc"
CVX = "http://hl7.org/fhir/sid/cvx"
CDT = "http://www.ada.org/cdt"

# Every spelling a value set or a feed may use for a system → its FHIR URI.
_ALIASES: dict[str, str] = {}
for uri, names in {
    CPT: ("cpt", "cpt-4", "2.16.840.1.113883.6.12"),
    HCPCS: ("hcpcs", "hcpcs level ii", "hcpcs l-ii", "2.16.840.1.113883.6.285", "http://www.cms.gov/medicare/coding/hcpcsreleasecodesets"),
    ICD10CM: ("icd10cm", "icd-10-cm", "icd10", "2.16.840.1.113883.6.90"),
    ICD10PCS: ("icd10pcs", "icd-10-pcs", "2.16.840.1.113883.6.4"),
    LOINC: ("loinc", "2.16.840.1.113883.6.1"),
    SNOMED: ("snomed", "snomedct", "snomed ct", "snomed-ct", "2.16.840.1.113883.6.96"),
    RXNORM: ("rxnorm", "2.16.840.1.113883.6.88"),
    NDC: ("ndc", "2.16.840.1.113883.6.69"),
    CVX: ("cvx", "2.16.840.1.113883.12.292"),
    CDT: ("cdt", "2.16.840.1.113883.6.13"),
}.items():
    for name in (uri.lower(), *names):
        _ALIASES[name] = uri
        _ALIASES[f"urn:oid:{name}"] = uri
SYSTEMS = frozenset(_ALIASES.values())


class UnknownCodeSystem(ValueError):
    pass


def system_uri(name: str) -> str:
    found = _ALIASES.get(name.strip().lower())
    if found is None:
        raise UnknownCodeSystem("code system not recognised (use a FHIR URI, an OID or a name such as LOINC, CPT, NDC)")
    return found


_NDC_HYPHENATED = re.compile(r"^([0-9]{4,5})-([0-9]{3,4})-([0-9]{1,2})$")


def normalise(system: str, code: str) -> str:
    """ICD-10 without the dot, upper case; NDC as 11 digits (5-4-2, zero-padded from 4-4-2, 5-3-2, 5-4-1)."""
    code = code.strip()
    if system in (ICD10CM, ICD10PCS):
        return code.replace(".", "").upper()
    if system == NDC:
        match = _NDC_HYPHENATED.match(code)
        if match:
            labeler, product, package = match.groups()
            return labeler.zfill(5) + product.zfill(4) + package.zfill(2)
        return code.replace("-", "")
    if system in (CPT, HCPCS, CDT):
        return code.upper()
    return code
