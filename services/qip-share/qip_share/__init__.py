"""The qip-share service (DOMAIN.md Part B): QIP reference data so far — entities, versioned value sets, the
sensitivity policy. Feeds, deliveries and the accounting of disclosures are still to come (issue 6)."""
