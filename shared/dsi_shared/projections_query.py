"""Pages of a read model: filters, one sort key, keyset pagination behind an opaque cursor (issue 15 §1).

Order is stable: the sort column, then the row's `id`. The cursor carries the sort it was made under and the last
row's (sort value, id), base64url-encoded JSON; it is opaque to clients and refused (422) under another sort.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from fastapi import HTTPException, Query
from sqlalchemy.engine import Engine, Row

MAX_LIMIT = 200
DEFAULT_LIMIT = 50
LIMIT = Query(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT, description=f"rows per page (at most {MAX_LIMIT})")
CURSOR = Query(None, max_length=500, description="`next_cursor` of the previous page (opaque)")
MAX_DOLLARS = 10**12  # a filter bound: far above any program cap, and its cents fit a SQL BIGINT


def dollars_query(description: str) -> Any:
    """An optional dollar amount to filter on (a bound of a range; its cents compared with a `*_cents` column)."""
    return Query(None, ge=0, le=MAX_DOLLARS, description=description)


def cents(amount: Decimal) -> int:
    return int(amount * 100)


def sort_query(choices: Sequence[str], default: str) -> Any:
    keys = ", ".join(f"{c}, -{c}" for c in choices)
    return Query(default, pattern="^-?(" + "|".join(choices) + ")$", description=f"one of {keys} (- descending)")


@dataclass(frozen=True)
class Page:
    rows: list[Row[Any]]
    count: int  # every row matching the filters
    next_cursor: str | None


def page(engine: Engine, table: sa.Table, where: Sequence[sa.ColumnElement[bool]], sort: str,
         sortable: Mapping[str, sa.ColumnElement[Any]], limit: int, cursor: str | None) -> Page:
    """One page of `table` rows matching `where`, ordered by `sort` (a key of `sortable`, `-key` descending)."""
    descending, key = sort.startswith("-"), sort.lstrip("-")
    column, tiebreak = sortable[key], table.c.id
    conditions = list(where)
    count_query = sa.select(sa.func.count()).select_from(table).where(*conditions)
    if cursor is not None:
        value, last_id = decode_cursor(cursor, sort)
        after = (sa.tuple_(column, tiebreak) < sa.tuple_(sa.literal(value), sa.literal(last_id)) if descending
                 else sa.tuple_(column, tiebreak) > sa.tuple_(sa.literal(value), sa.literal(last_id)))
        conditions.append(after)
    order = [column.desc(), tiebreak.desc()] if descending else [column.asc(), tiebreak.asc()]
    query = sa.select(table, column.label("_sort")).where(*conditions).order_by(*order).limit(limit + 1)
    with engine.connect() as conn:
        rows = list(conn.execute(query))
        count = int(conn.execute(count_query).scalar() or 0)
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = encode_cursor(sort, rows[-1]._mapping["_sort"], rows[-1].id) if more and rows else None
    return Page(rows, count, next_cursor)


def bodies(found: Page) -> list[Any]:
    """The stored JSON views of a page's rows, in order."""
    return [json.loads(row.body) for row in found.rows]


def encode_cursor(sort: str, value: Any, last_id: str) -> str:
    raw = json.dumps([sort, value, last_id], default=str, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, sort: str) -> tuple[Any, str]:
    try:
        made_under, value, last_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error, TypeError):
        raise HTTPException(422, "cursor is not one this endpoint gave") from None
    if not isinstance(last_id, str) or not isinstance(value, str | int) or isinstance(value, bool):
        raise HTTPException(422, "cursor is not one this endpoint gave")
    if made_under != sort:
        raise HTTPException(422, "cursor was made under another sort: start again without it")
    return value, last_id
