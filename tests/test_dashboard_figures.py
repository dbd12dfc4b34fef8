"""receiver.dashboard.figures and charts: windows on 10-minute boundaries, percentiles as
/v1/stats ranks them, the histogram's bins, rates as percentages. Plain function calls."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from receiver.dashboard import charts, figures
from receiver.store.answers import nearest_rank

NOW = datetime(2026, 12, 3, 10, 13, 45, 123000, tzinfo=UTC)


@pytest.mark.parametrize(
    ("window", "since"),
    [
        ("1h", "2026-12-03T09:10:00.000Z"),
        ("24h", "2026-12-02T10:10:00.000Z"),
        ("7d", "2026-11-26T10:10:00.000Z"),
        ("30d", "2026-11-03T10:10:00.000Z"),
    ],
)
def test_a_window_starts_on_a_ten_minute_boundary(window: str, since: str) -> None:
    assert figures.window_start(figures.WINDOWS[window], NOW) == since


def test_chart_bars_cover_the_window_empty_ones_included() -> None:
    day = figures.WINDOWS["24h"]
    bars = figures.chart_buckets(day, figures.window_start(day, NOW), NOW)
    assert bars[0] == "2026-12-02T10" and bars[-1] == "2026-12-03T10" and len(bars) == 25
    hour = figures.WINDOWS["1h"]
    bars = figures.chart_buckets(hour, figures.window_start(hour, NOW), NOW)
    assert bars == [f"2026-12-03T09:{m}0" for m in range(1, 6)] + [
        "2026-12-03T10:00",
        "2026-12-03T10:10",
    ]


@pytest.mark.parametrize(
    "values", [[5], [1, 2, 3, 4], [0, 0, 7, 7, 7, 9, 120_000], list(range(101))]
)
def test_percentiles_are_the_nearest_rank_of_the_sorted_times(values: list[int]) -> None:
    counted: dict[int, int] = {}
    for v in values:
        counted[v] = counted.get(v, 0) + 1
    kept = sorted(counted.items())
    ordered = sorted(values)
    for p in (0.5, 0.95):
        assert figures.percentile(kept, p) == round(ordered[nearest_rank(p, len(values))] / 1000, 3)
    assert figures.percentile([], 0.5) is None


def test_the_histogram_puts_each_time_in_one_bin() -> None:
    bins = figures.histogram([(-5, 1), (0, 2), (999, 1), (1000, 4), (59_999, 1), (10**9, 3)])
    assert sum(n for _, _, n in bins) == 12
    assert bins[0] == ("under 1s", "<1s", 4)
    assert bins[1] == ("1s to 5s", "<5s", 4)
    assert bins[-1] == ("6h or more", ">6h", 3)


@pytest.mark.parametrize(
    ("value", "shown"), [(0.8333, "83.3%"), (1.0, "100.0%"), (0.0, "0.0%"), (None, "\u2013")]
)
def test_rates_are_percentages(value: float | None, shown: str) -> None:
    assert figures.rate(value) == shown


def test_charts_escape_their_labels() -> None:
    svg = charts.stacked_bars([("<b>", {"delivered": 3})], ["delivered"])
    assert "<b>" not in svg and "&lt;b&gt;" in svg
    assert str(charts.histogram(figures.histogram([(10, 1)]))).startswith("<svg")
