"""Small charts drawn on the server as inline SVG: a stacked bar of statuses over time and a
histogram. They illustrate; every number they draw is also on the page as text."""

from __future__ import annotations

from markupsafe import Markup, escape

# One colour per status, darker for worse; the legend and the tables name them.
COLOURS = {
    "delivered": "#2e7d32",
    "sent": "#90caf9",
    "sending": "#bbdefb",
    "queued": "#e3f2fd",
    "registered": "#eceff1",
    "unconfirmed": "#ffb300",
    "undelivered": "#e65100",
    "failed": "#c62828",
    "rejected": "#6a1b9a",
    "expired": "#8d6e63",
    "canceled": "#9e9e9e",
}
WIDTH, HEIGHT, PAD = 420, 190, 20


def colour(status: str) -> str:
    return COLOURS.get(status, "#607d8b")


def stacked_bars(bars: list[tuple[str, dict[str, int]]], statuses: list[str]) -> Markup:
    """One bar per period, its statuses stacked in `statuses` order (bottom first)."""
    top = max((sum(counts.values()) for _, counts in bars), default=0) or 1
    width = (WIDTH - 2 * PAD) / max(len(bars), 1)
    parts = []
    for i, (bar, counts) in enumerate(bars):
        x = PAD + i * width
        y: float = HEIGHT - PAD
        for status in statuses:
            n = counts.get(status, 0)
            if not n:
                continue
            h = (HEIGHT - 2 * PAD) * n / top
            y -= h
            parts.append(
                f'<rect x="{x + 1:.1f}" y="{y:.1f}" width="{max(width - 2, 1):.1f}" '
                f'height="{h:.1f}" fill="{colour(status)}"><title>{escape(bar)} '
                f"{escape(status)}: {n}</title></rect>"
            )
    if bars:
        parts.append(_label(PAD, HEIGHT - 4, bars[0][0], "start"))
        parts.append(_label(WIDTH - PAD, HEIGHT - 4, bars[-1][0], "end"))
    parts.append(_label(PAD, 12, f"max {top}", "start"))
    return _svg("Messages by status over time", parts)


def histogram(bins: list[tuple[str, str, int]]) -> Markup:
    """One bar per bin (label, short label, count), its count above it."""
    top = max((n for _, _, n in bins), default=0) or 1
    width = (WIDTH - 2 * PAD) / max(len(bins), 1)
    parts = []
    for i, (label, short, n) in enumerate(bins):
        x = PAD + i * width
        h = (HEIGHT - 3 * PAD) * n / top
        y = HEIGHT - 2 * PAD - h
        parts.append(
            f'<rect x="{x + 2:.1f}" y="{y:.1f}" width="{max(width - 4, 1):.1f}" '
            f'height="{h:.1f}" fill="#1565c0"><title>{escape(label)}: {n}</title></rect>'
        )
        parts.append(_label(x + width / 2, y - 3, str(n), "middle"))
        parts.append(_label(x + width / 2, HEIGHT - PAD, short, "middle", size=9))
    return _svg("Time to a final status", parts)


def _label(x: float, y: float, text: str, anchor: str, size: int = 10) -> str:
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-size="{size}">'
        f"{escape(text)}</text>"
    )


def _svg(title: str, parts: list[str]) -> Markup:
    return Markup(
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">'
        f"<title>{escape(title)}</title>{''.join(parts)}</svg>"
    )
