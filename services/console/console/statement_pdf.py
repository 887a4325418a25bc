"""A provider's statement for one quarter as a PDF (issue 15 §3: "a printable statement per quarter … a PDF download
if a well-kept library serves it"): the rows of the printable page (`statement.html` for a quarter) — every file of
the quarter with its verdict and why in plain words, the quarter's evaluation, its payments, the total paid and the
headroom to the cap — laid out by reportlab's platypus. `rows` is pure; `render` only draws."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from io import BytesIO
from typing import Any
from xml.sax.saxutils import escape

from dsi_shared.plantime import QuarterCalendar
from reportlab.lib import colors
from reportlab.lib.pagesizes import LETTER
from reportlab.lib.styles import getSampleStyleSheet
from reportlab.lib.units import inch
from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

from console import plain

Row = tuple[str, ...]


@dataclass(frozen=True)
class Statement:
    title: str
    subtitle: str
    files: list[Row] = field(default_factory=list)  # received, event, verdict, why, amount
    quarters: list[Row] = field(default_factory=list)  # quarter, earned, state, figures
    payments: list[Row] = field(default_factory=list)  # for, quarter, amount, covered
    totals: str = ""


def _figures(figures: dict[str, Any]) -> str:
    shown = (f"{k.replace('_', ' ')}: {len(v) if isinstance(v, list | dict) else v}" for k, v in figures.items())
    return "; ".join(shown)


def _event(facts: dict[str, Any]) -> str:
    kind = str(facts.get("event_type") or "")
    return f"{plain.EVENTS.get(kind, kind or '—')} {facts.get('event_time') or ''}".strip()


def rows(shown: dict[str, Any], quarter: str, calendar: QuarterCalendar | None) -> Statement:
    """What the quarter's printable statement shows, as text rows (the participant page's reads: `reads.participant`)."""
    p, limit = shown["participant"], plain.limit_of(shown["participant"])
    files: list[Row] = [(s["received_at"], _event(s["facts"]), s["verdict"],
                         "; ".join(plain.reason_text(r, s, limit) for r in s["reasons"]) or "counts",
                         plain.money(s.get("amount")))
                        for s in shown["submissions"] if plain.quarter_of(s, calendar) == quarter]
    quarters: list[Row] = [(e["quarter"], plain.money(e["earned"]), e["state"].replace("_", " "),
                            _figures(e.get("figures") or {}))
                           for e in shown["progress"]["evaluations"] if e["quarter"] == quarter]
    statement, payments, totals = shown.get("statement"), list[Row](), "No payment yet."
    if statement:
        for pay in statement["payments"]:
            if pay.get("quarter") != quarter:
                continue
            covers = pay.get("covers") or []
            unit = "file" if covers and covers[0].startswith("submission:") else "item"
            amount = plain.money(pay["amount"]) + (f" (cut: {pay['cut_reason'].replace('_', ' ')})"
                                                   if pay.get("cut_reason") else "")
            payments.append(("Milestone 1" if pay["milestone"] == "M1" else pay["milestone"], pay.get("quarter") or "—",
                             amount, f"{len(covers)} {unit}{'' if len(covers) == 1 else 's'}"))
        totals = f"Paid in all {plain.money(statement['total_paid'])}"
        if statement.get("cap"):
            totals += (f"; the program pays at most {plain.money(statement['cap'])}, so "
                       f"{plain.money(statement['remaining'])} remains")
        totals += "."
    return Statement(title=f"{p['legal_name']}: statement for {quarter}",
                     subtitle=f"{p['provider_type'].replace('_', ' ')} · NPI {p.get('npi') or '—'} · participant {p['id']}",
                     files=files, quarters=quarters, payments=payments, totals=totals)


def render(statement: Statement, printed_at: datetime) -> bytes:
    """The statement as a letter-size PDF, its tables repeating their header row on every page."""
    styles = getSampleStyleSheet()
    cell = styles["BodyText"].clone("cell", fontSize=8, leading=10)

    def table(header: Row, body: list[Row], widths: list[float], empty: str) -> Table:
        data = [[Paragraph(f"<b>{escape(h)}</b>", cell) for h in header]]
        data += [[Paragraph(escape(text), cell) for text in row] for row in body] or \
            [[Paragraph(escape(empty), cell)] + [""] * (len(header) - 1)]
        shown = Table(data, colWidths=[w * inch for w in widths], repeatRows=1)
        shown.setStyle(TableStyle([("GRID", (0, 0), (-1, -1), 0.25, colors.grey), ("VALIGN", (0, 0), (-1, -1), "TOP"),
                                   ("BACKGROUND", (0, 0), (-1, 0), colors.whitesmoke)]))
        return shown

    out = BytesIO()
    document = SimpleDocTemplate(out, pagesize=LETTER, title=statement.title, author="Data Sharing Incentive program",
                                 leftMargin=0.6 * inch, rightMargin=0.6 * inch)
    document.build([
        Paragraph(escape(statement.title), styles["Title"]), Paragraph(escape(statement.subtitle), styles["Normal"]),
        Paragraph(f"Printed {escape(printed_at.isoformat(timespec='minutes'))}", styles["Normal"]), Spacer(1, 12),
        Paragraph("Files you sent", styles["Heading2"]),
        table(("Received", "Event", "Verdict", "Why", "Amount"), statement.files, [1.4, 1.6, 0.8, 2.6, 0.8],
              "No file in this quarter."),
        Paragraph("The quarter's evaluation", styles["Heading2"]),
        table(("Quarter", "Earned", "State", "Figures"), statement.quarters, [0.8, 1.0, 1.2, 4.2],
              "Not evaluated yet."),
        Paragraph("Payments", styles["Heading2"]),
        table(("For", "Quarter", "Amount", "Covered"), statement.payments, [1.4, 1.0, 2.6, 2.2], "No payment in this quarter."),
        Spacer(1, 8), Paragraph(escape(statement.totals), styles["Normal"]),
    ])
    return out.getvalue()
