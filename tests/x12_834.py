"""Builds X12 834 (005010X220A1) benefit enrollment files for tests and benchmarks."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date

ISA = ("ISA*00*          *00*          *ZZ*DHCS-MEDS      *ZZ*CCAH           *{d}*1200*^*00501*{ctl:09d}*0*P*:~")


@dataclass
class Enrollee:
    cin: str
    family: str = "DOE"
    given: str = "JANE"
    birth: str = "19800101"
    start: date | None = date(2024, 1, 1)
    end: date | None = None
    aid_code: str = "1H"
    maintenance: str = "021"
    ohc: bool = False
    medicare_id: str | None = None
    frozen: list[str] = field(default_factory=list)
    # Shapes seen in real senders (pyx12's test files: a family enrollment, a termination, Oregon MMIS):
    dependent: bool = False  # INS01 N, relationship 19 (child)
    eligibility_start: date | None = None  # DTP*356, member level (loop 2000)
    eligibility_end: date | None = None  # DTP*357
    coverage: bool = True  # an HD loop 2300 at all (dependents often have none)
    pcp_since: date | None = None  # a loop 2310 PCP with its own DTP*348 (not the member's date)
    reporting_category: bool = False  # a loop 2700 LS/LX/N1*75/DTP*007/LE block


def member_segments(e: Enrollee) -> Iterator[str]:
    yield f"INS*{'N*19' if e.dependent else 'Y*18'}*{e.maintenance}*XN*A***AC~"
    yield f"REF*0F*{e.cin}~"
    for frozen in e.frozen:
        yield f"REF*Q4*{frozen}~"
    if e.medicare_id:
        yield f"REF*F6*{e.medicare_id}~"
    if e.eligibility_start:
        yield f"DTP*356*D8*{e.eligibility_start:%Y%m%d}~"
    if e.eligibility_end:
        yield f"DTP*357*D8*{e.eligibility_end:%Y%m%d}~"
    yield f"NM1*IL*1*{e.family}*{e.given}~"
    yield "N3*100 MAIN ST~"
    yield "N4*SALINAS*CA*93901~"
    yield f"DMG*D8*{e.birth}*F~"
    if e.coverage:
        yield f"HD*{e.maintenance}**HLT*{e.aid_code}~"
        if e.start:
            yield f"DTP*348*D8*{e.start:%Y%m%d}~"
        if e.end:
            yield f"DTP*349*D8*{e.end:%Y%m%d}~"
        if e.pcp_since:
            yield "LX*1~"
            yield "NM1*P3*1*CLINIC*PAT****XX*1234567893*25~"
            yield f"DTP*348*D8*{e.pcp_since:%Y%m%d}~"
        if e.ohc:
            yield "COB*P*OTHERCARRIER*1~"
    if e.reporting_category:
        yield from ("LS*2700~", "LX*1~", "N1*75*PREVIOUS PMP END DATE~", "DTP*007*D8*20130615~", "LE*2700~")


def build_834(enrollees: Iterable[Enrollee], control: int = 1) -> str:
    body = ["ST*834*0001*005010X220A1~", "BGN*00*1*20240301*1200****2~", "N1*P5*CENTRAL CALIFORNIA ALLIANCE*FI*941234567~",
            "N1*IN*DHCS*FI*946000000~"]
    for enrollee in enrollees:
        body.extend(member_segments(enrollee))
    body.append(f"SE*{len(body) + 1}*0001~")
    head = [ISA.format(d="240301", ctl=control), f"GS*BE*DHCS-MEDS*CCAH*20240301*1200*{control}*X*005010X220A1~"]
    tail = [f"GE*1*{control}~", f"IEA*1*{control:09d}~"]
    return "\n".join(head + body + tail) + "\n"


def cin(n: int) -> str:
    return f"{90000000 + n:08d}{'ABCDEFGHJKLMNPRSTUVWXYZ'[n % 23]}"
