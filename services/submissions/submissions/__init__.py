"""The submissions service: HL7 v2, FHIR and C-CDA submissions and their verdicts (issue 4).
Wired to its store and the bus; no behaviour yet."""
