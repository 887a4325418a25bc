"""The qip-share service: QIP value-set extracts and disclosures (issue 6).
Wired to its store and the bus; no behaviour yet."""
