"""Payments: one account per participant, the $40,000 ledger."""
