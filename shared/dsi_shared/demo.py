"""The thin flow, driven from outside like a real client: HTTP for staff and the HIE, NATS for the contracts system.
Staff accept the three signed agreements in one action before Milestone 1 is paid; then the participant's plan
members arrive, the HIE forwards its files (one timely, a resend of it, one late, one incomplete) and staff close the
last quarter that ended, so the console has something worth looking at (issue 15). All member data is synthetic."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
from rich.console import Console

from dsi_shared.bus import Naming, connect_briefly
from dsi_shared.config import Settings, parse_grants
from dsi_shared.plantime import PLAN_ZONE
from dsi_shared.rulebook import calendar_of

DEMO_NPI = "1992837462"  # the demo participant's NPI: `make run`'s provider token is bound to it
DEMO_FACILITY = "SEASIDE"
# synthetic members (CIN shape 8 digits + a letter; 9000… is no issued range): the files below are about them
DEMO_MEMBERS = (("90000101B", "SHORE", "ALEX", "1941-02-03"), ("90000102C", "TIDE", "MORGAN", "1938-11-21"))


async def run_demo(run: dict[str, Any], console: Console) -> int:
    grants = parse_grants(run["tokens"])
    staff = {"Authorization": f"Bearer {next(t for t, g in grants.items() if g.role == 'program-staff')}"}
    # the HIE token that may forward the demo facility's files (`make run`'s is bound to any sender)
    hie_token = next((t for t, g in grants.items() if g.role == "hie" and g.may_submit_for({DEMO_FACILITY})), None)
    urls = run["urls"]
    async with httpx.AsyncClient(timeout=10) as http:
        form = {
            "legal_name": f"Seaside Skilled Nursing {uuid.uuid4().hex[:4]}", "npi": DEMO_NPI,
            "provider_type": "skilled_nursing", "counties": ["Monterey"], "ehr_product": "PointClickCare",
            "is_hospital": False, "umbrella_group": None, "manages_ehr": True, "sending_facilities": ["SEASIDE"],
            "contact_email": "dsi@seaside.example", "submitted_on": date(2024, 3, 4).isoformat(),
        }
        participant = (await http.post(f"{urls['enrollment']}/participants", json=form, headers=staff)).json()
        pid = participant["id"]
        console.print(f"registered participant {pid} ({form['legal_name']})")
        for agreement, signed_at in (("LOA", "2024-04-15T09:00:00-07:00"), ("DSA", "2024-05-02T14:30:00-07:00"),
                                     ("DSA", "2024-05-02T14:30:00-07:00")):
            response = await http.post(f"{urls['enrollment']}/participants/{pid}/agreements", headers=staff,
                                       json={"agreement": agreement, "signed_at": signed_at,
                                             "document_id": f"{agreement}-{pid[:8]}"})
            console.print(f"HTTP  {agreement} signed → {response.status_code} "
                          f"({'recorded' if response.json().get('recorded') else 'same signature, no change'})")
        settings = Settings("demo", 0, nats_url=run["nats_url"])
        # the contracts system's own NATS user on `make run`'s server (it may publish its inputs and nothing else)
        contracts = run.get("nats_users", {}).get("contracts")
        nc = await connect_briefly(settings.nats_url, "dsi-demo", "contracts" if contracts else settings.nats_user,
                                   contracts or settings.nats_password)
        subject = Naming(run.get("bus_prefix", "")).subject("dsi.in.agreement-signed")
        message = {"participant_id": pid, "agreement": "HIE", "signed_at": "2024-06-20T11:00:00-07:00",
                   "document_id": f"HIE-{pid[:8]}"}
        for _ in range(2):
            await nc.jetstream().publish(subject, json.dumps(message).encode())
        await nc.close()
        console.print("NATS  HIE signed, published twice on dsi.in.agreement-signed")
        # "Once all these documents have been signed and accepted": staff look at the three and accept them at once
        for _ in range(100):
            shown = (await http.get(f"{urls['enrollment']}/participants/{pid}", headers=staff)).json()
            if all((shown.get("agreements") or {}).get(kind) for kind in ("LOA", "DSA", "HIE")):
                break
            await asyncio.sleep(0.1)
        response = await http.post(f"{urls['enrollment']}/participants/{pid}/agreements/acceptance", headers=staff,
                                   json={"reason": "demo: signatures checked"})
        accepted = response.json().get("accepted", []) if response.status_code == 200 else []
        console.print(f"HTTP  staff accepted {', '.join(a['agreement'] for a in accepted) or 'nothing'} → "
                      f"{response.status_code}")
        statement: dict[str, Any] = {}
        for _ in range(100):
            response = await http.get(f"{urls['payments']}/participants/{pid}/payments", headers=staff)
            statement = response.json() if response.status_code == 200 else {}
            if statement.get("payments"):
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(1)  # let any duplicate arrive: the statement must still show one payment
        statement = (await http.get(f"{urls['payments']}/participants/{pid}/payments", headers=staff)).json()
        for payment in statement.get("payments", []):
            console.print(f"PAID  {payment['milestone']} {payment['amount']} in {payment['quarter']} "
                          f"(rule {payment['rule_version']}, payment {payment['id']})")
        console.print(f"total paid {statement.get('total_paid')}, remaining {statement.get('remaining')}")
        ok = [p["amount"] for p in statement.get("payments", [])] == ["10000.00"]
        console.print("[green]exactly one $10,000 Milestone 1 payment[/green]" if ok else "[red]unexpected payments[/red]")
        if ok and hie_token is not None:
            await _files_and_a_quarter(http, urls, staff, {"Authorization": f"Bearer {hie_token}"}, console)
        return 0 if ok else 1


def _hl7_time(moment: datetime) -> str:
    """An HL7 TS in the plan's local time (DOMAIN.md: times without an offset are America/Los_Angeles)."""
    return moment.astimezone(PLAN_ZONE).strftime("%Y%m%d%H%M%S")


def _combined_file(trigger: str, cin: str, occurred: datetime, control: str, visit: str) -> str:
    """A combined ADT/ORU/RDE file for one event, as a facility's EHR sends it through the HIE (HL7 v2.5.1)."""
    at, fac = _hl7_time(occurred), DEMO_FACILITY
    structure = {"A01": "ADT_A01", "A02": "ADT_A02", "A03": "ADT_A03"}[trigger]
    patient = f"PID|1||{cin}^^^CAMEDICAL^MA||DEMO^PATIENT||19400101|F"
    pv1 = "|".join(["PV1", "1", "I", f"SNF^101^A^{fac}"] + [""] * 15 + [f"{visit}^^^{fac}^VN"] + [""] * 24
                   + [at if trigger == "A01" else "", at if trigger == "A03" else ""])
    header = f"MSH|^~\\&|PCC|{fac}^{DEMO_NPI}^NPI|HIO|SCHIO|{at}||"
    messages = [[f"{header}ADT^{trigger}^{structure}|{control}A|P|2.5.1", f"EVN|{trigger}|{at}||||{at}|{fac}", patient, pv1],
                [f"{header}ORU^R01^ORU_R01|{control}O|P|2.5.1", patient, pv1, f"OBR|1||{control}|2345-7^Glucose^LN|||{at}",
                 "OBX|1|NM|2345-7^Glucose^LN||95|mg/dL|||||F"],
                [f"{header}RDE^O11^RDE_O11|{control}R|P|2.5.1", patient, pv1, f"ORC|NW|{control}",
                 f"RXE|^^^{at}^^R|00093505601^Metformin 500mg^NDC|500||mg", "TQ1|1||BID", "RXR|PO"]]
    return "".join("\r".join(segments) + "\r" for segments in messages)


def _verdict(submission: dict[str, Any]) -> str:
    reasons = submission.get("reasons") or []
    return f"{submission.get('verdict')}{' (' + ', '.join(reasons) + ')' if reasons else ''}"


async def _files_and_a_quarter(http: httpx.AsyncClient, urls: dict[str, str], staff: dict[str, str],
                               hie: dict[str, str], console: Console) -> None:
    """The participant's members, four files from the HIE on the server's clock, and the last ended quarter closed."""
    roster = "member_id,last_name,first_name,birth_date,eligibility_start,eligibility_end,aid_code,other_health_coverage," \
             "dual_eligible\n" + "".join(f"{cin},{last},{first},{born},2024-01-01,,1H,N,N\n"
                                          for cin, last, first, born in DEMO_MEMBERS)
    response = await http.post(f"{urls['enrollment']}/members/import", content=roster.encode(), headers={
        **staff, "content-type": "text/csv"})
    report = response.json() if response.status_code == 200 else {}
    console.print(f"HTTP  members imported: {report.get('accepted', 0)} accepted → {response.status_code}")
    now = datetime.now(UTC)
    run = now.strftime("%H%M%S")  # control ids and visits of this run: a second `make demo` sends new events
    first, second = DEMO_MEMBERS[0][0], DEMO_MEMBERS[1][0]
    admitted, discharged, moved = now - timedelta(hours=3), now - timedelta(hours=80), now - timedelta(hours=5)
    stranger = "90000199Z"  # not on the roster: never a plan member
    files = (("timely admission", _combined_file("A01", first, admitted, f"D{run}1", f"V{run}1")),
             ("the same admission resent", _combined_file("A01", first, admitted, f"D{run}2", f"V{run}1")),
             ("late discharge", _combined_file("A03", second, discharged, f"D{run}3", f"V{run}3")),
             ("transfer of someone not a plan member", _combined_file("A02", stranger, moved, f"D{run}4", f"V{run}4")))
    waiting: list[tuple[str, str]] = []  # files judged before their member's eligibility reached submissions
    for label, text in files:
        response = await http.post(f"{urls['submissions']}/hl7", content=text.encode(), headers={
            **hie, "content-type": "x-application/hl7-v2+er7"})
        answer = response.json() if response.status_code == 200 else {}
        console.print(f"HL7   {label} → {response.status_code} "
                      f"{'; '.join(map(_verdict, answer.get('submissions', []))) or response.text[:200]}", soft_wrap=True)
        waiting += [(label, s["id"]) for s in answer.get("submissions", [])
                    if "not_a_member" in s["reasons"] and stranger not in text]
    for label, submission_id in waiting:  # judged again once the roster reaches submissions (DOMAIN.md A4)
        for _ in range(100):
            shown = (await http.get(f"{urls['submissions']}/submissions/{submission_id}", headers=staff)).json()
            if "not_a_member" not in shown.get("reasons", ["not_a_member"]):
                console.print(f"HL7   {label}, judged again when its member arrived → {_verdict(shown)}")
                break
            await asyncio.sleep(0.1)
    calendar = calendar_of((await http.get(f"{urls['enrollment']}/program-rules", headers=staff)).json())
    if calendar is None:
        console.print("no program rules published: no quarter to close")
        return
    ended = calendar.quarter_at(now).previous()
    response = await http.post(f"{urls['milestones']}/quarters/{ended}/close", headers=staff)
    closed = response.json() if response.status_code == 200 else {}
    console.print(f"HTTP  quarter {ended} closed → {response.status_code}: {closed.get('evaluations', 0)} evaluations "
                  f"to validate in the console{' (it was closed before)' if closed.get('already_closed') else ''}")
