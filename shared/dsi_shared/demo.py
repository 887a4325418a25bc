"""The thin flow, driven from outside like a real client: HTTP for staff, NATS for the contracts system. Staff
accept the three signed agreements in one action before Milestone 1 is paid."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import date
from typing import Any

import httpx
from rich.console import Console

from dsi_shared.bus import Naming, connect_briefly
from dsi_shared.config import Settings

DEMO_NPI = "1992837462"  # the demo participant's NPI: `make run`'s provider token is bound to it


async def run_demo(run: dict[str, Any], console: Console) -> int:
    tokens = {role: token for token, _, role in (t.rpartition(":") for t in run["tokens"].split(","))}
    staff = {"Authorization": f"Bearer {tokens['program-staff']}"}
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
        return 0 if ok else 1
