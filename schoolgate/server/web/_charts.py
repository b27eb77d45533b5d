"""Charts as SVG drawn on the server: nothing fetched from elsewhere, nothing run in the
browser, and printable with the annual report.

Each function returns markup to put in a page as it is (``Markup``); every text in it (a
label, a title) passes through ``escape`` here, since a category's or group's label could
one day carry a name from the network.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from markupsafe import Markup

WIDTH: Final = 720
HEIGHT: Final = 220
_LEFT: Final = 56
_BOTTOM: Final = 28
_TOP: Final = 12


@dataclass(frozen=True)
class Bar:
    label: str  # under the bar
    total: int
    part: int  # drawn over the total, darker (blocked of queries, say)
    title: str  # the tooltip, read out by screen readers


def _nice_ceiling(value: int) -> int:
    """The smallest 1, 2 or 5 times a power of ten at or above ``value``."""
    if value <= 0:
        return 1
    step = 1
    while True:
        for multiple in (1, 2, 5):
            if step * multiple >= value:
                return step * multiple
        step *= 10


def _short(value: int) -> str:
    for size, suffix in ((1_000_000_000, "G"), (1_000_000, "M"), (1_000, "k")):
        if value >= size:
            return f"{value / size:g}{suffix}"
    return str(value)


def bars(items: Sequence[Bar], caption: str, empty: str) -> Markup:
    """A bar per item, the part drawn over the total, with a scale on the left."""
    if not items:
        return Markup('<p class="empty">{}</p>').format(empty)
    top = _nice_ceiling(max(i.total for i in items))
    plot_w = WIDTH - _LEFT - 8
    plot_h = HEIGHT - _BOTTOM - _TOP
    slot = plot_w / len(items)
    bar_w = max(2.0, slot * 0.7)
    parts = [
        Markup(
            '<svg class="chart" viewBox="0 0 {w} {h}" role="img" aria-label="{c}" '
            'xmlns="http://www.w3.org/2000/svg"><title>{c}</title>'
        ).format(w=WIDTH, h=HEIGHT, c=caption)
    ]
    for fraction in (0.0, 0.5, 1.0):
        y = _TOP + plot_h * (1 - fraction)
        parts.append(
            Markup(
                '<line class="grid" x1="{x1}" y1="{y:.1f}" x2="{x2}" y2="{y:.1f}"/>'
                '<text class="axis" x="{tx}" y="{ty:.1f}" text-anchor="end">{v}</text>'
            ).format(
                x1=_LEFT, x2=WIDTH - 8, y=y, tx=_LEFT - 6, ty=y + 4, v=_short(int(top * fraction))
            )
        )
    label_every = max(1, len(items) // 12)
    for index, item in enumerate(items):
        x = _LEFT + slot * index + (slot - bar_w) / 2
        total_h = plot_h * item.total / top
        part_h = plot_h * min(item.part, item.total) / top
        parts.append(
            Markup(
                "<g><title>{title}</title>"
                '<rect class="total" x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}"/>'
                '<rect class="part" x="{x:.1f}" y="{py:.1f}" width="{w:.1f}" height="{ph:.1f}"/>'
                "</g>"
            ).format(
                title=item.title,
                x=x,
                y=_TOP + plot_h - total_h,
                w=bar_w,
                h=total_h,
                py=_TOP + plot_h - part_h,
                ph=part_h,
            )
        )
        if index % label_every == 0:
            parts.append(
                Markup(
                    '<text class="axis" x="{x:.1f}" y="{y}" text-anchor="middle">{label}</text>'
                ).format(x=x + bar_w / 2, y=HEIGHT - 8, label=item.label)
            )
    parts.append(Markup("</svg>"))
    return Markup("").join(parts)


def meter(share: float, label: str) -> Markup:
    """A small horizontal bar for a share from 0 to 1, in a table cell."""
    share = min(1.0, max(0.0, share))
    return Markup(
        '<svg class="meter" viewBox="0 0 100 8" role="img" aria-label="{label}" '
        'xmlns="http://www.w3.org/2000/svg"><rect class="track" width="100" height="8"/>'
        '<rect class="fill" width="{w:.1f}" height="8"/></svg>'
    ).format(label=label, w=share * 100)
