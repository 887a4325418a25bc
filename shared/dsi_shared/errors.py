"""Errors shared by adapters, and PHI-free descriptions of any error."""

from __future__ import annotations

from pydantic import ValidationError


class PermanentError(Exception):
    """An input that no retry can fix (unknown participant, invalid event). Its message must be PHI-free."""


class Unprocessable(PermanentError):
    """Well-formed but wrong input (an unknown code, an impossible combination): HTTP 422."""


class InvalidMessage(Unprocessable):
    """A message that is not a well-formed event (not JSON, not an object, a broken CloudEvent)."""


class NotFound(PermanentError):
    """The named aggregate does not exist."""


def describe(exc: BaseException) -> str:
    """A reason fit for logs, dead letters and problem JSON: field names and error kinds, never values."""
    if isinstance(exc, ValidationError):
        fields = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['type']}" for e in exc.errors())
        return f"invalid fields: {fields}"
    if isinstance(exc, PermanentError):  # our own errors: their messages are written PHI-free
        return f"{type(exc).__name__}: {exc}"
    return type(exc).__name__
