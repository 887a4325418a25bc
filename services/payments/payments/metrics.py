"""Payments' own metrics, from every event it records (`ServiceSpec.observe`)."""

from __future__ import annotations

from typing import Any

from dsi_shared.telemetry import PAID


def observe(domain_event: Any) -> None:
    if type(domain_event).__name__ == "PaymentIssued":
        PAID.add(float(domain_event.amount), {"milestone": str(domain_event.milestone).split(":", 1)[0]})
