"""Server-rendered SVG charts (no script, no library): stacked bars (dollars paid per quarter by provider type; files
credited and rejected by reason per week) and coverage per PCP against its threshold. Each has a title and a
description for screen readers; the page shows the same figures as a table beside it, for them and for copying."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from html import escape

from markupsafe import Markup

COLOURS = ("#1b6ca8", "#e07b00", "#2a9d55", "#b83280", "#6b4fbb", "#7a7a7a")
WIDTH, HEIGHT, LEFT, BOTTOM, TOP = 640, 280, 80, 40, 20
MET, MISSED, THRESHOLD = "#2a9d55", "#a4161a", "#1a1a1a"
Number = Decimal | int


def dollars(value: Number) -> str:
    return f"${value:,.2f}"


def count(value: Number) -> str:
    return f"{value:,}"


def _open(key: str, title: str, description: str, height: float) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height:.0f}" role="img" '
            f'aria-labelledby="{key}-title {key}-desc" class="chart"><title id="{key}-title">{escape(title)}</title>'
            f'<desc id="{key}-desc">{escape(description)}</desc>')


def stacked_chart(series: Mapping[str, Mapping[str, Number]], key: str, title: str, empty: str,
                  label: Callable[[Number], str] = dollars, colour_of: Mapping[str, str] | None = None) -> Markup:
    """One bar per x (in the order given), stacked by kind (those `colour_of` names first, then by name), the
    largest total labelled."""
    named = list(colour_of or {})
    kinds = sorted({kind for by_kind in series.values() for kind in by_kind},
                   key=lambda k: (named.index(k) if k in named else len(named), k))
    if not series:
        return Markup(f"<p>{escape(empty)}</p>")
    colours = {kind: (colour_of or {}).get(kind) or COLOURS[j % len(COLOURS)] for j, kind in enumerate(kinds)}
    top = max(sum(by_kind.values(), Decimal(0)) for by_kind in series.values()) or Decimal(1)
    band = (WIDTH - LEFT) / len(series)
    bar = min(band * 0.6, 80)
    scale = (HEIGHT - BOTTOM - TOP) / float(top)
    parts = [_open(key, f"{title}; the largest is {label(top)}", "The table after the chart gives the same figures.",
                   HEIGHT + 20 * len(kinds)),
             f'<line x1="{LEFT}" y1="{HEIGHT - BOTTOM}" x2="{WIDTH}" y2="{HEIGHT - BOTTOM}" stroke="#333"/>',
             f'<text x="{LEFT - 8}" y="{TOP + 4}" text-anchor="end" font-size="12">{escape(label(top))}</text>',
             f'<text x="{LEFT - 8}" y="{HEIGHT - BOTTOM}" text-anchor="end" font-size="12">{escape(label(0))}</text>']
    for i, (x_label, by_kind) in enumerate(series.items()):
        x, y = LEFT + i * band + (band - bar) / 2, float(HEIGHT - BOTTOM)
        for kind in kinds:
            height = float(by_kind.get(kind, 0)) * scale
            if height:
                y -= height
                parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{height:.1f}" '
                             f'fill="{colours[kind]}"><title>{escape(x_label)} {escape(kind)}: '
                             f'{escape(label(by_kind[kind]))}</title></rect>')
        parts.append(f'<text x="{x + bar / 2:.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle" '
                     f'font-size="12">{escape(x_label)}</text>')
    for j, kind in enumerate(kinds):
        y = HEIGHT + 20 * j
        parts.append(f'<rect x="{LEFT}" y="{y - 10}" width="12" height="12" fill="{colours[kind]}"/>'
                     f'<text x="{LEFT + 18}" y="{y}" font-size="12">{escape(kind.replace("_", " "))}</text>')
    return Markup("".join([*parts, "</svg>"]))


def paid_chart(paid: Mapping[str, Mapping[str, Decimal]]) -> Markup:
    return stacked_chart(paid, "paid", "Dollars paid per quarter by provider type", "No payments yet.")


def files_chart(weeks: Mapping[str, Mapping[str, int]]) -> Markup:
    return stacked_chart(weeks, "files", "Files credited and rejected (by reason) per week", "No files judged yet.",
                         count, {"credited": MET})


@dataclass(frozen=True)
class Coverage:
    """One PCP's quarter: its coverage (percent of attributed members with a record) and the threshold it was held to
    (None: a quarter with no threshold, e.g. before data sharing)."""

    participant_id: str
    name: str
    coverage: Decimal
    threshold: int | None
    attributed: int
    with_record: int

    @property
    def met(self) -> bool:
        return self.threshold is not None and self.coverage >= self.threshold


def coverage_chart(rows: list[Coverage], quarter: str) -> Markup:
    """A horizontal bar per PCP (0–100 %), green when it met its threshold, with the threshold as a black tick."""
    if not rows:
        return Markup(f"<p>No PCP evaluation for {escape(quarter)}.</p>")
    row_height, left, right = 28, 200, WIDTH - 20
    span = right - left
    height = TOP + row_height * len(rows) + BOTTOM
    met = sum(r.met for r in rows)
    parts = [_open("coverage", f"Coverage per PCP against its threshold, {quarter}: {met} of {len(rows)} met",
                   "Bars are each PCP's coverage percent; the black tick is its threshold. The table after the chart "
                   "gives the same figures.", height)]
    for i, row in enumerate(rows):
        y = TOP + i * row_height
        width = span * float(min(row.coverage, Decimal(100))) / 100
        verdict = "met" if row.met else "no threshold" if row.threshold is None else "below"
        parts.append(f'<text x="{left - 8}" y="{y + 16}" text-anchor="end" font-size="12">{escape(row.name[:28])}</text>'
                     f'<rect x="{left}" y="{y + 4}" width="{width:.1f}" height="16" fill="{MET if row.met else MISSED}">'
                     f'<title>{escape(row.name)}: {row.coverage}% ({verdict})</title></rect>')
        if row.threshold is not None:
            tick = left + span * row.threshold / 100
            parts.append(f'<line x1="{tick:.1f}" y1="{y + 1}" x2="{tick:.1f}" y2="{y + 23}" stroke="{THRESHOLD}" '
                         f'stroke-width="3"><title>threshold {row.threshold}%</title></line>')
    axis = TOP + row_height * len(rows) + 4
    parts += [f'<line x1="{left}" y1="{axis}" x2="{right}" y2="{axis}" stroke="#333"/>',
              *(f'<text x="{left + span * p / 100:.1f}" y="{axis + 16}" text-anchor="middle" font-size="12">{p}%</text>'
                for p in (0, 25, 50, 75, 100))]
    return Markup("".join([*parts, "</svg>"]))
