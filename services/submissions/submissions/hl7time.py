"""HL7 v2 timestamps (TS/DTM) as real instants (DOMAIN.md A3 "Timely").

`YYYY[MM[DD[HH[MM[SS[.S...]]]]]][+/-ZZZZ]`, ASCII digits only, years 2000–2100 (the plan's range; anything else is
a data type error). Without an offset the time is local time in America/Los_Angeles, DST included: a wall time
that occurs twice (fall back) is taken at its first occurrence; one that never occurs (spring forward) is shifted
forward by the gap, as a clock that skipped the hour would read.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

from dsi_shared.plantime import EARLIEST_YEAR, LATEST_YEAR, PLAN_ZONE

_TS = re.compile(r"^([0-9]{4})([0-9]{2})?([0-9]{2})?([0-9]{2})?([0-9]{2})?([0-9]{2})?(?:\.([0-9]{1,4}))?([+-][0-9]{4})?$")


class BadTimestamp(ValueError):
    pass


def parse_ts(raw: str) -> datetime:
    match = _TS.match(raw.strip())
    if not match:
        raise BadTimestamp("not an HL7 timestamp")
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    if not EARLIEST_YEAR <= int(year) <= LATEST_YEAR:  # 9999…-1400 would overflow on conversion to UTC
        raise BadTimestamp(f"year outside {EARLIEST_YEAR}-{LATEST_YEAR}")
    try:
        naive = datetime(int(year), int(month or 1), int(day or 1), int(hour or 0), int(minute or 0),
                         int(second or 0), int((fraction or "0").ljust(6, "0")[:6]))
    except ValueError:
        raise BadTimestamp("impossible date or time") from None
    if offset:
        sign = 1 if offset[0] == "+" else -1
        delta = timedelta(hours=int(offset[1:3]), minutes=int(offset[3:5]))
        if delta >= timedelta(hours=24):
            raise BadTimestamp("impossible UTC offset")
        return naive.replace(tzinfo=timezone(sign * delta))
    local = naive.replace(tzinfo=PLAN_ZONE, fold=0)
    if local.astimezone(UTC).astimezone(PLAN_ZONE).replace(tzinfo=None) != naive:
        # a wall time inside the spring-forward gap: move it forward by the gap
        local = (naive + timedelta(hours=1)).replace(tzinfo=PLAN_ZONE)
    return local
