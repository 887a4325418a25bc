"""One server-rendered SVG chart (no script, no library): dollars paid per quarter, stacked by provider type.
The page shows the same figures as a table beside it, for screen readers and for copying."""

from __future__ import annotations

from decimal import Decimal
from html import escape

from markupsafe import Markup

COLOURS = ("#1b6ca8", "#e07b00", "#2a9d55", "#b83280", "#6b4fbb", "#7a7a7a")
WIDTH, HEIGHT, LEFT, BOTTOM, TOP = 640, 280, 80, 40, 20


def paid_chart(paid: dict[str, dict[str, Decimal]]) -> Markup:
    types = sorted({t for by_type in paid.values() for t in by_type})
    if not paid:
        return Markup("<p>No payments yet.</p>")
    top = max(sum(by_type.values(), Decimal(0)) for by_type in paid.values()) or Decimal(1)
    band = (WIDTH - LEFT) / len(paid)
    bar = min(band * 0.6, 80)
    scale = (HEIGHT - BOTTOM - TOP) / float(top)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT + 20 * len(types)}" role="img" '
             f'aria-labelledby="paid-title" class="chart"><title id="paid-title">Dollars paid per quarter by provider '
             f'type; the largest quarter is ${top:,.2f}</title>',
             f'<line x1="{LEFT}" y1="{HEIGHT - BOTTOM}" x2="{WIDTH}" y2="{HEIGHT - BOTTOM}" stroke="#333"/>',
             f'<text x="{LEFT - 8}" y="{TOP + 4}" text-anchor="end" font-size="12">${top:,.0f}</text>',
             f'<text x="{LEFT - 8}" y="{HEIGHT - BOTTOM}" text-anchor="end" font-size="12">$0</text>']
    for i, (quarter, by_type) in enumerate(paid.items()):
        x, y = LEFT + i * band + (band - bar) / 2, float(HEIGHT - BOTTOM)
        for j, kind in enumerate(types):
            height = float(by_type.get(kind, Decimal(0))) * scale
            if height:
                y -= height
                parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{height:.1f}" '
                             f'fill="{COLOURS[j % len(COLOURS)]}"><title>{escape(quarter)} {escape(kind)}: '
                             f'${by_type[kind]:,.2f}</title></rect>')
        parts.append(f'<text x="{x + bar / 2:.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle" '
                     f'font-size="12">{escape(quarter)}</text>')
    for j, kind in enumerate(types):
        y = HEIGHT + 20 * j
        parts.append(f'<rect x="{LEFT}" y="{y - 10}" width="12" height="12" fill="{COLOURS[j % len(COLOURS)]}"/>'
                     f'<text x="{LEFT + 18}" y="{y}" font-size="12">{escape(kind.replace("_", " "))}</text>')
    return Markup("".join([*parts, "</svg>"]))
