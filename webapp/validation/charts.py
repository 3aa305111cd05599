"""The report's charts as inline SVG markup, drawn on the server (no script, no CDN).

Only numbers computed here go into the markup, so it is safe to insert unescaped.
"""

from __future__ import annotations

SIZE, PAD = 300, 40


def _xy(x: float, y: float) -> str:
    return f"{PAD + x * SIZE:.1f},{PAD + (1 - y) * SIZE:.1f}"


def _frame(title_id: str, text_id: str, x_label: str, y_label: str) -> list[str]:
    """The chart's box; `text_id` names its text equivalent (a screen reader reads one image: the dots'
    titles inside role="img" are not read), so the chart says where its numbers are."""
    width = SIZE + 2 * PAD
    parts = [
        f'<svg class="chart square" viewBox="0 0 {width} {width}" role="img" aria-labelledby="{title_id}"'
        f' aria-describedby="{text_id}">',
        f'<rect class="bar-bg" x="{PAD}" y="{PAD}" width="{SIZE}" height="{SIZE}"></rect>',
        f'<polyline class="diagonal" points="{_xy(0, 0)} {_xy(1, 1)}"></polyline>',
    ]
    for tick in (0.0, 0.5, 1.0):
        parts.append(f'<text class="tick" x="{PAD + tick * SIZE:.0f}" y="{PAD + SIZE + 15}">{tick:g}</text>')
        parts.append(f'<text class="tick" x="5" y="{PAD + (1 - tick) * SIZE + 4:.0f}">{tick:g}</text>')
    parts.append(f'<text class="tick" x="{PAD + SIZE / 2:.0f}" y="{width - 5}" text-anchor="middle">{x_label}</text>')
    parts.append(f'<text class="tick" x="{PAD}" y="{PAD - 10}">{y_label}</text>')
    return parts


def roc_svg(points: list[list[float]], operating: list[dict]) -> str:
    """ROC curve from (fpr, tpr) points, with the operating points marked."""
    parts = _frame("roc-title", "roc-text", "1 - specificity", "sensitivity")
    parts.append(f'<polyline class="curve" points="{" ".join(_xy(x, y) for x, y in points)}"></polyline>')
    for point in operating:
        if point["sensitivity"] is None or point["specificity"] is None:
            continue
        x, y = 1 - point["specificity"], point["sensitivity"]
        parts.append(
            f'<circle class="point" cx="{PAD + x * SIZE:.1f}" cy="{PAD + (1 - y) * SIZE:.1f}" r="4">'
            f"<title>{point['name']}: threshold {point['threshold']:.3f}</title></circle>"
        )
    parts.append("</svg>")
    return "".join(parts)


def reliability_svg(rows: list[dict]) -> str:
    """Observed frequency against mean predicted probability per bin; dot area follows the bin's count."""
    parts = _frame("reliability-title", "reliability-text", "predicted P(pneumonia)", "observed frequency")
    total = sum(row["n"] for row in rows) or 1
    parts.append(
        f'<polyline class="curve" points="{" ".join(_xy(r["predicted"], r["observed"]) for r in rows)}"></polyline>'
    )
    for row in rows:
        radius = 3 + 12 * (row["n"] / total) ** 0.5
        x, y = row["predicted"], row["observed"]
        parts.append(
            f'<circle class="point" cx="{PAD + x * SIZE:.1f}" cy="{PAD + (1 - y) * SIZE:.1f}" r="{radius:.1f}">'
            f"<title>{row['n']} films: predicted {x:.2f}, observed {y:.2f}</title></circle>"
        )
    parts.append("</svg>")
    return "".join(parts)
