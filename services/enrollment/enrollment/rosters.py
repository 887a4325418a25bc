"""Roster files → plain rows (adapters; no aggregate is touched here).

- the state's eligibility file: CSV (`ELIGIBILITY_COLUMNS`) or X12 834 5010 (parsed with pyx12);
- PCP attribution and QIP-entity assignment: CSV (`ATTRIBUTION_COLUMNS`) or a Da Vinci ATR list (`enrollment.atr`).

Each parser yields rows or `RowError(line, reason)`; a bad row never stops the good ones. Reasons name the
field and the problem, never the value (rows hold PHI).
"""

from __future__ import annotations

import csv
import gc
import importlib
import io
import os
import pickle
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, TypeVar

import pyx12.errors
import pyx12.x12file
from dsi_shared.errors import Unprocessable

from enrollment.members import PCP, QIP, InvalidMember, normalise_cin

ELIGIBILITY_COLUMNS = ("member_id", "last_name", "first_name", "birth_date", "eligibility_start", "eligibility_end",
                       "aid_code", "other_health_coverage", "dual_eligible")
OPTIONAL_ELIGIBILITY_COLUMNS = ("frozen_member_ids",)
ATTRIBUTION_COLUMNS = ("member_id", "kind", "assignee", "start", "end")
ATR_ATTRIBUTED_PROVIDER = "http://hl7.org/fhir/us/davinci-atr/StructureDefinition/ext-attributedProvider"
ATR_CHANGE_TYPE = "http://hl7.org/fhir/us/davinci-atr/StructureDefinition/ext-changeType"
NPI_SYSTEM = "http://hl7.org/fhir/sid/us-npi"


class UnreadableFile(Unprocessable):
    """The file as a whole cannot be read (wrong columns, not X12, not a Group)."""


R = TypeVar("R")
# A file this large is parsed in a process of its own (`parsed_apart`): starting one costs well under a second,
# parsing 100,000 members of an 834 takes tens of seconds.
PARSE_APART_FROM_CHARS = 1_000_000
APART_BATCH = 2000  # rows sent from the parsing process at a time


@dataclass(frozen=True)
class RowError:
    line: int
    reason: str


@dataclass(frozen=True)
class EligibilityRow:
    line: int
    cin: str
    family_name: str
    given_name: str
    birth_date: date | None
    start: date | None
    end: date | None
    aid_code: str | None  # None: unknown (an 834 with HD04 blank)
    other_health_coverage: bool
    dual_eligible: bool
    terminated: bool = False  # an 834 termination: close spans at `end`
    frozen_cins: tuple[str, ...] = field(default_factory=tuple)
    start_from: str | None = None  # the field that supplied `start` (834: "DTP*348" or "DTP*356")
    end_from: str | None = None
    notes: tuple[str, ...] = ()  # leniencies applied to this row, for the line report (field codes, never values)


@dataclass(frozen=True)
class AttributionRow:
    line: int
    cin: str
    kind: str  # pcp | qip
    assignee: str  # participant id or NPI (pcp); QIP entity id (qip)
    start: date
    end: date | None
    provider_from: str | None = field(default=None, compare=False)  # ATR pcp: "attributed_provider" | "group_npi"


class _Bad(Exception):
    """One field of one row is wrong: the reason, never the value."""


def _date(value: str | None, name: str, required: bool = True) -> date | None:
    text = (value or "").strip()
    if not text:
        if required:
            raise _Bad(f"{name}: missing")
        return None
    try:
        if len(text) == 8 and text.isascii() and text.isdigit():
            return datetime.strptime(text, "%Y%m%d").date()
        return date.fromisoformat(text)
    except ValueError:
        raise _Bad(f"{name}: not a valid date (YYYY-MM-DD or CCYYMMDD)") from None


def _flag(value: str | None, name: str) -> bool:
    text = (value or "").strip().casefold()
    if text in {"y", "yes", "true", "1"}:
        return True
    if text in {"n", "no", "false", "0", ""}:
        return False
    raise _Bad(f"{name}: not a yes/no flag")


def _cin(value: str | None, name: str = "member_id") -> str:
    try:
        return normalise_cin(value or "")
    except InvalidMember:
        raise _Bad(f"{name}: not a Medi-Cal CIN (8 digits then a letter)") from None


def _csv_rows(text: str, required: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in required if c not in header]
    if missing:
        raise UnreadableFile(f"CSV header must have the columns {', '.join(required)}; missing {', '.join(missing)}")
    reader.fieldnames = header
    for row in reader:
        yield reader.line_num, {k: (v or "") for k, v in row.items() if k is not None}


def eligibility_csv(text: str) -> Iterator[EligibilityRow | RowError]:
    for line, row in _csv_rows(text, ELIGIBILITY_COLUMNS):
        try:
            start = _date(row["eligibility_start"], "eligibility_start")
            end = _date(row["eligibility_end"], "eligibility_end", required=False)
            if start and end and end < start:
                raise _Bad("eligibility_end: before eligibility_start")
            if not row["aid_code"].strip():
                raise _Bad("aid_code: missing")
            frozen = tuple(_cin(c, "frozen_member_ids") for c in row.get("frozen_member_ids", "").split(";") if c.strip())
            yield EligibilityRow(line, _cin(row["member_id"]), row["last_name"].strip(), row["first_name"].strip(),
                                 _date(row["birth_date"], "birth_date", required=False), start, end,
                                 row["aid_code"].strip().upper(), _flag(row["other_health_coverage"], "other_health_coverage"),
                                 _flag(row["dual_eligible"], "dual_eligible"), frozen_cins=frozen)
        except _Bad as bad:
            yield RowError(line, str(bad))


# -- parsing in a process of its own ------------------------------------------------------------------------------
# Parsing and applying are both Python: in one process they take turns on the GIL, so an import took as long as the
# parse plus the apply. A large file is parsed in a child process while this one applies and saves the rows already
# parsed, in file order; a file-level error still surfaces before the first row, so before anything is written.

def parse_apart_when_large(parse: Callable[[str], Iterator[R]], text: str) -> Iterator[R]:
    """`parse(text)`'s rows: parsed in a process of its own (`parsed_apart`) when the file is large."""
    return parsed_apart(parse, text) if len(text) >= PARSE_APART_FROM_CHARS else parse(text)


def parsed_apart(parse: Callable[[str], Iterator[R]], text: str) -> Iterator[R]:
    """The rows `parse(text)` yields, in order, parsed by a child interpreter (`parse` must be a module-level
    function). A plain subprocess, not multiprocessing: spawning would import the parent's main module again, forking
    would copy a process running threads (NATS, HTTP, savers). UnreadableFile is raised here as it was there; any
    other failure of the child is reported by its type or exit code only (rows hold PHI). Closing the iterator early
    stops the child."""
    child = subprocess.Popen([sys.executable, "-c", f"from {__name__} import _parse_stdin; _parse_stdin()",
                              parse.__module__, parse.__qualname__],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)})
    assert child.stdin is not None and child.stdout is not None
    try:
        try:
            with child.stdin:
                child.stdin.write(text.encode())
        except BrokenPipeError:
            pass  # the child ended before reading it all: reported below, by its exit code
        while True:
            try:
                kind, payload = pickle.load(child.stdout)  # our own child's output: trusted
            except EOFError:
                raise RuntimeError(f"the roster parsing process ended unexpectedly (exit code {child.wait()})") from None
            if kind == "rows":
                yield from payload
            elif kind == "unreadable":
                raise UnreadableFile(payload)
            elif kind == "failed":
                raise RuntimeError(f"parsing the roster failed ({payload})")
            else:
                return
    finally:
        child.stdout.close()
        if child.poll() is None:
            child.kill()
        child.wait()


def _parse_stdin() -> None:
    """In the child: the file from stdin; to stdout the rows in pickled batches, then ("done", None); or the
    file-level error (its message names no value), or the type of anything else that went wrong."""
    # A one-shot process whose heap only grows (the parser keeps every segment of the file, and makes no reference
    # cycles): the cyclic collector would scan it again and again for nothing, a quarter of the parse and more.
    gc.disable()
    module, name = sys.argv[1:3]
    parse = getattr(importlib.import_module(module), name)
    out = sys.stdout.buffer

    def send(message: tuple[str, Any]) -> None:
        pickle.dump(message, out, protocol=pickle.HIGHEST_PROTOCOL)
        out.flush()

    try:
        batch: list[Any] = []
        for row in parse(sys.stdin.buffer.read().decode()):
            batch.append(row)
            if len(batch) >= APART_BATCH:
                send(("rows", batch))
                batch = []
        if batch:
            send(("rows", batch))
        send(("done", None))
    except UnreadableFile as unreadable:
        send(("unreadable", str(unreadable)))
    except BrokenPipeError:
        pass  # the importing side stopped reading
    except Exception as exc:  # noqa: BLE001 - reported by type only: a message could quote a row
        send(("failed", type(exc).__name__))


# -- X12 834 (005010X220A1) -------------------------------------------------------------------------------------
# Mapping, loop 2000 per member: INS (INS01 Y subscriber / N dependent; INS03 maintenance type: 021 add, 001 change,
# 024 termination, 025 reinstate, 030 audit), REF*0F subscriber identifier = CIN, REF*Q4 prior identifier = a frozen
# CIN, NM1*IL name, DMG*D8 birth date, DTP*356/357 member eligibility begin/end; loop 2300 HD (HD04 plan coverage
# description = the Medi-Cal aid code) with DTP*348/349 benefit begin/end; loop 2320 COB = other health coverage;
# REF*F6 (Medicare beneficiary id) = dual eligible. Benefit dates win over eligibility dates, each end on its own:
# state files (and dependents) often carry only 356/357. DTPs of loops 2310 (a PCP's own 348/349), 2320 and 2700
# are not the member's dates.

MAINTENANCE_TERMINATION = "024"
DATE_LOOP = {"356": "2000", "357": "2000", "348": "2300", "349": "2300"}  # a DTP counts only in its own loop
BEGIN, END = ("DTP*348", "DTP*356"), ("DTP*349", "DTP*357")  # by preference
AID_CODE_UNKNOWN = "HD04: aid code blank or absent, recorded as unknown"


def eligibility_834(text: str) -> Iterator[EligibilityRow | RowError]:
    try:
        reader = pyx12.x12file.X12Reader(io.StringIO(text))
        segments = list(reader)
    except (pyx12.errors.X12Error, pyx12.errors.EngineError, ValueError, IndexError) as exc:
        raise UnreadableFile(f"not a readable X12 file ({type(exc).__name__})") from None
    member: dict[str, Any] | None = None
    for number, segment in enumerate(segments, start=1):
        seg_id = segment.get_seg_id()
        if seg_id in {"INS", "SE"} and member is not None:
            yield _member_834(member)
            member = None
        if seg_id == "INS":
            member = {"line": number, "maintenance": _v(segment, "03"), "frozen": [], "ohc": False, "dual": False,
                      "loop": "2000"}
        elif member is None:
            continue
        elif seg_id == "REF":
            qualifier, value = _v(segment, "01"), _v(segment, "02")
            if qualifier == "0F":
                member["cin"] = value
            elif qualifier == "Q4":
                member["frozen"].append(value)
            elif qualifier == "F6":
                member["dual"] = True
        elif seg_id == "NM1" and _v(segment, "01") == "IL":
            member["family"], member["given"] = _v(segment, "03"), _v(segment, "04")
        elif seg_id == "DMG" and _v(segment, "01") == "D8":
            member["birth"] = _v(segment, "02")
        elif seg_id == "HD":
            member["aid_code"], member["loop"] = _v(segment, "04"), "2300"
        elif seg_id == "DTP":
            qualifier = _v(segment, "01")
            if DATE_LOOP.get(qualifier) == member["loop"]:
                member["DTP*" + qualifier] = _v(segment, "03")
        elif seg_id in {"LX", "COB", "LS"}:  # loops 2310 (provider), 2320 (coordination of benefits), 2700
            member["loop"] = seg_id
            member["ohc"] = member["ohc"] or seg_id == "COB"
    if member is not None:
        yield _member_834(member)


def _v(segment: Any, position: str) -> str:
    try:
        return str(segment.get_value(position) or "").strip()
    except pyx12.errors.EngineError:
        return ""


def _pick(m: dict[str, Any], qualifiers: tuple[str, str]) -> str | None:
    """The preferred qualifier the member loop carries, if any."""
    return next((q for q in qualifiers if m.get(q)), None)


def _member_834(m: dict[str, Any]) -> EligibilityRow | RowError:
    line = int(m["line"])
    try:
        if m["maintenance"] not in {"021", "001", "024", "025", "030"}:
            raise _Bad("INS03: unknown maintenance type code")
        cin = _cin(m.get("cin"), "REF*0F")
        terminated = m["maintenance"] == MAINTENANCE_TERMINATION
        start_from, end_from = _pick(m, BEGIN), _pick(m, END)
        start = _date(m.get(start_from or ""), start_from or "DTP*348 or DTP*356", required=not terminated)
        end = _date(m.get(end_from or ""), end_from or "DTP*349 or DTP*357", required=terminated)
        if start and end and end < start:
            raise _Bad(f"{end_from}: before {start_from}")
        aid_code = str(m.get("aid_code") or "").upper() or None
        notes = (AID_CODE_UNKNOWN,) if aid_code is None and not terminated else ()
        return EligibilityRow(line, cin, m.get("family", ""), m.get("given", ""),
                              _date(m.get("birth"), "DMG02", required=False), start, end, aid_code, bool(m["ohc"]),
                              bool(m["dual"]), terminated, tuple(_cin(c, "REF*Q4") for c in m["frozen"]),
                              start_from if start else None, end_from if end else None, notes)
    except _Bad as bad:
        return RowError(line, str(bad))


# -- attributions ------------------------------------------------------------------------------------------------

def attribution_csv(text: str) -> Iterator[AttributionRow | RowError]:
    for line, row in _csv_rows(text, ATTRIBUTION_COLUMNS):
        try:
            kind = row["kind"].strip().lower()
            if kind not in {PCP, QIP}:
                raise _Bad("kind: must be pcp or qip")
            if not row["assignee"].strip():
                raise _Bad("assignee: missing")
            start = _date(row["start"], "start")
            end = _date(row["end"], "end", required=False)
            assert start is not None
            if end and end < start:
                raise _Bad("end: before start")
            yield AttributionRow(line, _cin(row["member_id"]), kind, row["assignee"].strip(), start, end)
        except _Bad as bad:
            yield RowError(line, str(bad))


def attribution_atr(text: str, kind: str) -> Iterator[AttributionRow | RowError]:
    """A Da Vinci ATR Group, Bundle or bulk-export NDJSON: see `enrollment.atr`."""
    from enrollment.atr import group_rows  # atr builds on this module's rows (a top-level import would be circular)

    return group_rows(text, kind)


def _as_date(value: Any) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])
