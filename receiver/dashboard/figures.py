"""The dashboard's figures from the store's kept counts: the window, the summary /v1/stats
would give for it, the time-to-final histogram, the chart's buckets. Pure functions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Any

from receiver.engine import format_time, parse_time
from receiver.push.config import redact_url
from receiver.store.answers import summary
from receiver.store.dashboard import WindowFigures, bin_range, bucket_of


@dataclass(frozen=True)
class Window:
    name: str  # as in the query string: 1h, 24h, 7d, 30d
    label: str
    seconds: int
    chart_chars: int  # how much of a stored time names a chart bar (16: 10 min, 13: hour, ...)
    step: timedelta  # one chart bar


WINDOWS = {
    w.name: w
    for w in (
        Window("1h", "last hour", 3600, 16, timedelta(minutes=10)),
        Window("24h", "last 24 h", 86400, 13, timedelta(hours=1)),
        Window("7d", "last 7 days", 7 * 86400, 10, timedelta(days=1)),
        Window("30d", "last 30 days", 30 * 86400, 10, timedelta(days=1)),
    )
}
DEFAULT_WINDOW = "24h"
NONE = "\N{EN DASH}"  # a figure with nothing to show


def window_start(window: Window, now: datetime) -> str:
    """Where the window starts, as stored: its length ago, back to a 10-minute boundary, so its
    counts are whole kept buckets (and /v1/stats?since=<this> counts the same messages)."""
    return bucket_of(format_time(now - timedelta(seconds=window.seconds))) + ":00.000Z"


def chart_buckets(window: Window, since: str, now: datetime) -> list[str]:
    """Every bar of the window's chart, oldest first, empty ones included."""
    at = datetime.fromisoformat(since)
    if window.step >= timedelta(days=1):
        at = at.replace(hour=0, minute=0)
    elif window.step >= timedelta(hours=1):
        at = at.replace(minute=0)
    keys: list[str] = []
    while at <= now and len(keys) < 1000:
        text = format_time(at)
        keys.append(text[:15] + "0" if window.chart_chars == 16 else text[: window.chart_chars])
        at += window.step
    return keys


def stats(figures: WindowFigures) -> dict[str, Any]:
    """The /v1/stats answer for the window, from the kept counts."""
    return summary(figures.by_status, figures.timed, figures.median, figures.p95)


def rate(value: float | None) -> str:
    """A rate as the page shows it: 0.8333 -> 83.3%."""
    return NONE if value is None else f"{value * 100:.1f}%"


def seconds(value: float | None) -> str:
    """A duration in seconds, short: 0.5 s, 42 s, 3 min 20 s, 2 h 5 min."""
    if value is None:
        return NONE
    if abs(value) < 10:
        return f"{value:.1f} s"
    whole = round(value)
    if whole < 60:
        return f"{whole} s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


# Upper edges of the time-to-final histogram's bins, in seconds (the last is open); each is
# an edge of the kept time bins (receiver.store.dashboard.bin_range), so a kept bin falls in
# one histogram bin whole.
HISTOGRAM_EDGES = (1, 5, 10, 30, 60, 300, 900, 3600, 36000)


def histogram(final_bins: list[tuple[int, int]]) -> list[tuple[str, str, int]]:
    """(bin label, the chart's short label, count) of the times to final, shortest bin first,
    every bin shown."""
    counts = [0] * (len(HISTOGRAM_EDGES) + 1)
    for b, n in final_bins:
        low = bin_range(b)[0] or 0
        i = 0
        while i < len(HISTOGRAM_EDGES) and low >= HISTOGRAM_EDGES[i] * 1000:
            i += 1
        counts[i] += n
    labels = [f"under {_short(HISTOGRAM_EDGES[0])}"]
    labels += [f"{_short(lo)} to {_short(hi)}" for lo, hi in pairwise(HISTOGRAM_EDGES)]
    labels.append(f"{_short(HISTOGRAM_EDGES[-1])} or more")
    shorts = [f"<{_short(e)}" for e in HISTOGRAM_EDGES] + [f">{_short(HISTOGRAM_EDGES[-1])}"]
    return list(zip(labels, shorts, counts, strict=True))


def _short(edge: int) -> str:
    """A bin edge in seconds, shortest: 30s, 5m, 6h."""
    for unit, size in (("h", 3600), ("m", 60)):
        if edge >= size and edge % size == 0:
            return f"{edge // size}{unit}"
    return f"{edge}s"


def over_time(figures: WindowFigures, buckets: list[str]) -> list[tuple[str, dict[str, int]]]:
    """(bar, count per status) for every bar of the chart."""
    by_bar: dict[str, dict[str, int]] = {b: {} for b in buckets}
    for bar, status, n in figures.over_time:
        by_bar.setdefault(bar, {})[status] = by_bar.get(bar, {}).get(status, 0) + n
    return sorted(by_bar.items())


def top_errors(figures: WindowFigures, per_provider: int = 5) -> dict[str, list[tuple[str, int]]]:
    """The most frequent error codes of failed messages, per provider."""
    found: dict[str, list[tuple[str, int]]] = {}
    for provider, code, n in figures.errors:
        codes = found.setdefault(provider, [])
        if len(codes) < per_provider:
            codes.append((code, n))
    return found


def push_figures(
    stats: dict[str, Any], endpoints: tuple[str, ...], failed: str, now: datetime
) -> dict[str, Any]:
    """The Pushes section from the store's push_stats(): the backlog, the failed pushes (a
    count, capped by the caller), the oldest pending push's age, the disabled endpoints (as
    configured, their URLs without a query; the reason a 410 gave)."""
    oldest = stats.get("oldest_created_at")
    age = None if oldest is None else (now - parse_time(oldest)).total_seconds()
    disabled = stats.get("disabled") or {}
    return {
        "backlog": int(stats.get("backlog") or 0),
        "failed": failed,
        "oldest": oldest,
        "oldest_age": None if age is None else max(age, 0.0),
        "disabled": [
            (redact_url(url), info.get("disabled_at"), info.get("reason") or "disabled")
            for url, info in disabled.items()
            if url in endpoints
        ],
        "endpoints": len(endpoints),
    }
