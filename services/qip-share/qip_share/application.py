"""The qip-share Application: its own event store, empty until its behaviour is built."""

from __future__ import annotations

from dsi_shared.store import ServiceApplication


class QipShare(ServiceApplication):
    name = "qipshare"
