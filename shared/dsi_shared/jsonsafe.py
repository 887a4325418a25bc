"""JSON from outside, parsed with a nesting limit.

`json.loads` (and the pydantic/FHIR models after it) recurse once per level: a body nested 2,000 levels deep raised
`RecursionError`, a 500. Every document we accept (FHIR resources, CloudEvents, rules) is far shallower than
`MAX_JSON_DEPTH`, so a deeper one is refused as unprocessable before it is parsed.
"""

from __future__ import annotations

import json
import re
from typing import Any

from dsi_shared.errors import Unprocessable

MAX_JSON_DEPTH = 64  # FHIR resources nest about 10 levels
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)  # a JSON string (brackets inside it do not nest)
_NOT_BRACKET = re.compile(rb"[^\[\]{}]+")


class JsonTooDeep(Unprocessable, ValueError):
    """JSON nested deeper than the limit (HTTP 422; a consumed message holding it is dead-lettered)."""


def json_depth(data: bytes | str, limit: int | None = None) -> int:
    """How deeply arrays and objects nest in the text (0 for a scalar); stops counting past `limit`."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    brackets = _NOT_BRACKET.sub(b"", _STRING.sub(b"", raw))
    depth = deepest = 0
    for byte in brackets:
        if byte in b"[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if limit is not None and deepest > limit:
                    return deepest
        else:
            depth -= 1
    return deepest


def check_depth(data: bytes | str, what: str = "the JSON document", limit: int = MAX_JSON_DEPTH) -> None:
    if json_depth(data, limit) > limit:
        raise JsonTooDeep(f"{what} nests deeper than {limit} levels")


def loads(data: bytes | str, what: str = "the JSON document", limit: int = MAX_JSON_DEPTH) -> Any:
    """`json.loads` refusing documents nested deeper than `limit` (JsonTooDeep, a ValueError and Unprocessable)."""
    check_depth(data, what, limit)
    try:
        return json.loads(data)
    except RecursionError:  # pragma: no cover - the depth check comes first
        raise JsonTooDeep(f"{what} nests too deeply") from None
