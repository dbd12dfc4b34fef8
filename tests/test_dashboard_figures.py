"""receiver.dashboard.figures and charts, and receiver.store.dashboard's pure parts: windows on
10-minute boundaries, time bins, percentiles as /v1/stats ranks them, the histogram, rates as
percentages. Plain function calls."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime

import pytest

from receiver.dashboard import charts, figures
from receiver.store.answers import nearest_rank
from receiver.store.dashboard import WindowFigures, WindowQuery, bin_range
from receiver.store.sqlite import schema

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


def bin_of(ms: int) -> int:
    """Migration 0011's BIN, in Python."""
    return 0 if ms < 1 else len(str(ms)) * 100 + int(str(ms)[:2])


SAMPLES = [-3000, -1, 0, 1, 7, 9, 10, 99, 100, 109, 110, 999, 1000, 1099, 34_567, 599_999, 10**9]


def test_a_time_bin_holds_its_times_and_sqlites_bin_is_pythons() -> None:
    conn = sqlite3.connect(":memory:")
    for ms in SAMPLES:
        b = bin_of(ms)
        low, high = bin_range(b)
        assert (low is None or low <= ms) and ms < high, (ms, b)
        found = conn.execute(
            f"SELECT {schema.BIN.format(ms='t.ms')} FROM (SELECT ? AS ms) t", (ms,)
        )
        assert found.fetchone()[0] == b
    conn.close()
    assert [bin_of(ms) for ms in sorted(SAMPLES)] == sorted(bin_of(ms) for ms in SAMPLES)


@pytest.mark.parametrize(
    "values", [[5], [1, 2, 3, 4], [0, 0, 7, 7, 7, 9, 120_000], SAMPLES, list(range(0, 5000, 7))]
)
def test_percentiles_are_the_nearest_rank_of_the_sorted_times(values: list[int]) -> None:
    by_bin: dict[int, dict[int, int]] = {}
    for ms in values:
        times = by_bin.setdefault(bin_of(ms), {})
        times[ms] = times.get(ms, 0) + 1
    kept = WindowFigures(
        final_bins=sorted((b, sum(t.values())) for b, t in by_bin.items()), timed=len(values)
    )
    query = WindowQuery("2026-12-03T10:10:00.000Z", None, 13, "?")
    ordered = sorted(values)
    for name, p in (("median", 0.5), ("p95", 0.95)):
        b, offset = query.wanted(kept)[name]
        value = query.pick(sorted(by_bin[b].items()), offset)
        assert value == round(ordered[nearest_rank(p, len(values))] / 1000, 3)
    assert query.wanted(WindowFigures()) == {}


def test_the_histogram_puts_each_time_in_one_bin() -> None:
    times = [(-5, 1), (0, 2), (999, 1), (1000, 4), (59_999, 1), (10**9, 3)]
    bins = figures.histogram([(bin_of(ms), n) for ms, n in times])
    assert sum(n for _, _, n in bins) == 12
    assert bins[0] == ("under 1s", "<1s", 4)
    assert bins[1] == ("1s to 5s", "<5s", 4)
    assert bins[-1] == ("10h or more", ">10h", 3)
    for edge in figures.HISTOGRAM_EDGES:  # each edge is where a kept bin starts
        assert bin_range(bin_of(edge * 1000))[0] == edge * 1000


@pytest.mark.parametrize(
    ("value", "shown"), [(0.8333, "83.3%"), (1.0, "100.0%"), (0.0, "0.0%"), (None, "\u2013")]
)
def test_rates_are_percentages(value: float | None, shown: str) -> None:
    assert figures.rate(value) == shown


def test_charts_escape_their_labels() -> None:
    svg = charts.stacked_bars([("<b>", {"delivered": 3})], ["delivered"])
    assert "<b>" not in svg and "&lt;b&gt;" in svg
    assert str(charts.histogram(figures.histogram([(210, 1)]))).startswith("<svg")
