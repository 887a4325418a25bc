"""Enrollment: participants (interest form, agreements) — the plan's record of who takes part in DSI."""
