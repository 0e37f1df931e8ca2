"""The validation curve an admin picks a hospital's alert threshold from, drawn server-side.

    point = read_off(points, 0.03)          # expected sensitivity, specificity, alert share there
    rows = choices(points, marks)           # the table to pick from: curve points around marks[0]
    chart = curve_svg(points, marks, "…")   # inline SVG (Markup): no script, no plotting library

``points`` are a bundle's ``operating_curve["points"]`` (``dermscreen.bundle.Bundle.operating_curve``):
``{threshold, sensitivity, specificity, alert_share}`` by rising threshold, measured on its
validation images; ``alert_share`` is the share of all those images at or above the threshold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from markupsafe import Markup, escape

MEASURES = ("sensitivity", "specificity", "alert_share")
CHOICE_ROWS = 13  # rows in the table to pick from (the middle one a mark's) ...
CHOICE_STEP = 0.025  # ... this much alert share apart
WIDTH, HEIGHT = 760, 360
LEFT, RIGHT, TOP, BOTTOM = 48, 20, 62, 46  # the marks' labels sit in the top margin
FLOOR = 1e-4  # a log axis has no 0: lower thresholds are drawn at its left end


@dataclass(frozen=True)
class Mark:
    """A threshold drawn as a vertical line; ``kind`` (shipped, review, hospital) styles it."""

    label: str
    threshold: float
    kind: str


def read_off(points: list[dict], threshold: float) -> dict:
    """The curve at ``threshold``: linear between the two points around it, the end point's
    values beyond either end."""
    above = next((i for i, point in enumerate(points) if point["threshold"] >= threshold), len(points) - 1)
    high = points[above]
    if above == 0 or high["threshold"] <= threshold:
        return {**high, "threshold": threshold}
    low = points[above - 1]
    part = (threshold - low["threshold"]) / (high["threshold"] - low["threshold"])
    return {"threshold": threshold,
            **{key: low[key] + part * (high[key] - low[key]) for key in MEASURES}}


def choices(points: list[dict], marks: list[Mark], rows: int = CHOICE_ROWS,
            step: float = CHOICE_STEP) -> list[dict]:
    """The rows an admin picks from, by rising threshold: the curve points nearest to alert
    shares ``step`` apart on either side of the first mark's (which takes the middle row), and
    every mark's own threshold read off the curve. Each row holds ``marks``: those at its
    threshold."""
    centre = read_off(points, marks[0].threshold)["alert_share"]
    picked = {}
    for offset in (offset for offset in range(-(rows // 2), rows // 2 + 1) if offset):
        nearest = min(points, key=lambda point: abs(point["alert_share"] - (centre + offset * step)))
        picked[nearest["threshold"]] = {**nearest, "marks": []}
    for mark in marks:
        row = picked.setdefault(mark.threshold, {**read_off(points, mark.threshold), "marks": []})
        row["marks"].append(mark)
    return [picked[threshold] for threshold in sorted(picked)]


def curve_svg(points: list[dict], marks: list[Mark], title: str) -> Markup:
    """Expected sensitivity and share of images alerted against the alert threshold (log
    scale), each mark a labelled vertical line with its two values."""
    lowest = min((point["threshold"] for point in points if point["threshold"] > 0), default=FLOOR)
    low = math.floor(math.log10(min(max(lowest, FLOOR), 0.1)))  # the axis starts at 10 ** low
    plot_width, plot_height = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(threshold: float) -> float:
        return LEFT + plot_width * (math.log10(max(threshold, 10 ** low)) - low) / -low

    def y(share: float) -> float:
        return TOP + plot_height * (1 - share)

    parts = [f'<svg class="curve" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
             f'aria-labelledby="curve-title" data-testid="threshold-curve">',
             f'<title id="curve-title">{escape(title)}</title>']
    for share in (0, 0.25, 0.5, 0.75, 1):
        level = y(share)
        parts.append(f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{level:.1f}" y2="{level:.1f}"/>'
                     f'<text class="tick" x="{LEFT - 6}" y="{level + 4:.1f}" text-anchor="end">{share:.0%}</text>')
    for power in range(low, 1):
        at = x(10 ** power)
        parts.append(f'<line class="grid" x1="{at:.1f}" x2="{at:.1f}" y1="{TOP}" y2="{TOP + plot_height}"/>'
                     f'<text class="tick" x="{at:.1f}" y="{TOP + plot_height + 16}" '
                     f'text-anchor="middle">{10 ** power:g}</text>')
    parts.append(f'<text class="tick" x="{LEFT + plot_width / 2:.1f}" y="{HEIGHT - 8}" '
                 f'text-anchor="middle">alert threshold: melanoma probability at or above which an '
                 f'image alerts (log scale)</text>')
    for key, label, row in (("sensitivity", "expected melanoma sensitivity", 0),
                            ("alert_share", "expected share of images alerted", 1)):
        line = " ".join(f"{x(point['threshold']):.1f},{y(point[key]):.1f}" for point in points)
        legend_y = TOP + plot_height - 34 + 18 * row  # bottom left: low thresholds alert most images
        parts.append(f'<polyline class="line {key}" points="{line}"/>'
                     f'<line class="line {key}" x1="{LEFT + 12}" x2="{LEFT + 40}" '
                     f'y1="{legend_y - 4}" y2="{legend_y - 4}"/>'
                     f'<text class="legend {key}" x="{LEFT + 46}" y="{legend_y}">{label}</text>')
    for row, mark in enumerate(marks):
        at, left = read_off(points, mark.threshold), x(mark.threshold)
        text = (f"{mark.label} {mark.threshold:.4f}: sensitivity {at['sensitivity']:.1%}, "
                f"{at['alert_share']:.1%} alerted")
        anchor = "start" if left < LEFT + plot_width / 2 else "end"
        parts.append(f'<g class="mark {mark.kind}" data-threshold="{mark.threshold!r}">'
                     f'<line x1="{left:.1f}" x2="{left:.1f}" y1="{14 + 16 * row}" y2="{TOP + plot_height}"/>'
                     f'<text x="{left + (4 if anchor == "start" else -4):.1f}" y="{12 + 16 * row}" '
                     f'text-anchor="{anchor}">{escape(text)}</text>'
                     + "".join(f'<circle cx="{left:.1f}" cy="{y(at[key]):.1f}" r="4"/>'
                               for key in ("sensitivity", "alert_share"))
                     + "</g>")
    parts.append("</svg>")
    return Markup("".join(parts))
