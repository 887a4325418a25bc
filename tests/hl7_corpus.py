"""HL7 v2.5.1 test messages built from the message structures (ADT_A01/A02/A03/A08/A11/A13, ORU_R01, RDE_O11)."""

from __future__ import annotations

import itertools

_ids = itertools.count(1)
FACILITY = "SUNNY_SNF"


def msh(kind: str, facility: str = FACILITY, control_id: str | None = None, version: str = "2.5.1",
        sent: str = "20251101120000", acks: str = "") -> str:
    """`acks`: MSH-15|MSH-16 (enhanced mode, e.g. "AL|NE"); empty: original mode."""
    control = control_id or f"MSG{next(_ids):07d}"
    return f"MSH|^~\\&|PCC|{facility}^1234567890^NPI|HIO|SCHIO|{sent}||{kind}|{control}|P|{version}" + (
        f"|||{acks}" if acks else "")


def pid(cin: str) -> str:
    return f"PID|1||{cin}^^^CAMEDICAL^MA~MRN556^^^SUNNY_SNF^MR||DOE^JANE^Q||19450612|F|||123 MAIN ST^^SALINAS^CA^93901"


def pv1(visit: str | None, admitted: str = "", discharged: str = "", facility: str = FACILITY) -> str:
    fields = ["PV1", "1", "I", f"SNF^101^A^{facility}", "", "", "", "1234567893^SMITH^JOHN^^^^MD"] + [""] * 11
    fields.append(f"{visit}^^^{facility}^VN" if visit else "")  # PV1-19
    fields += [""] * 24  # PV1-20 .. PV1-43
    fields += [admitted, discharged]  # PV1-44, PV1-45
    return "|".join(fields)


def adt(trigger: str, cin: str, visit: str | None = "V0001", occurred: str = "20251101080000",
        recorded: str = "20251101081000", facility: str = FACILITY, control_id: str | None = None,
        version: str = "2.5.1", evn_occurred: bool = True) -> str:
    structure = {"A01": "ADT_A01", "A02": "ADT_A02", "A03": "ADT_A03", "A04": "ADT_A01", "A08": "ADT_A01",
                 "A11": "ADT_A09", "A12": "ADT_A12", "A13": "ADT_A01"}[trigger]
    evn = f"EVN|{trigger}|{recorded}||||{occurred if evn_occurred else ''}|{facility}"
    admitted = occurred if trigger == "A01" else ""
    discharged = occurred if trigger == "A03" else ""
    return "\r".join([msh(f"ADT^{trigger}^{structure}", facility, control_id, version), evn, pid(cin),
                      pv1(visit, admitted, discharged, facility)])


def oru(cin: str, visit: str = "V0001", facility: str = FACILITY) -> str:
    return "\r".join([msh("ORU^R01^ORU_R01", facility), pid(cin), pv1(visit, facility=facility),
                      "OBR|1||F0001|2345-7^Glucose^LN|||20251101070000", "OBX|1|NM|2345-7^Glucose^LN||95|mg/dL|||||F"])


def rde(cin: str, visit: str = "V0001", facility: str = FACILITY) -> str:
    return "\r".join([msh("RDE^O11^RDE_O11", facility), pid(cin), pv1(visit, facility=facility),
                      "ORC|NW|P0001", "RXE|^^^20251101080000^^R|00093505601^Metformin 500mg^NDC|500||mg",
                      "TQ1|1||BID", "RXR|PO"])


def combined(trigger: str, cin: str, **kwargs: str) -> str:
    """A combined ADT/RDE/ORU file for one event."""
    visit = kwargs.get("visit", "V0001")
    return "\r".join([adt(trigger, cin, **kwargs), oru(cin, visit), rde(cin, visit)]) + "\r"


def batch(*messages: str) -> str:
    body = "\r".join(m.rstrip("\r") for m in messages)
    return (f"FHS|^~\\&|PCC|{FACILITY}\rBHS|^~\\&|PCC|{FACILITY}\r{body}\rBTS|{len(messages)}\rFTS|1\r")
