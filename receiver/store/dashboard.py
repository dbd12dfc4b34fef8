"""The dashboard's reads, one copy of the SQL for both stores (placeholders aside): a window's
figures from the kept counts of migration 0011, the poll queue per provider, and the latest
messages of some statuses. The dialects (sqlite/dashboard.py, postgres/dashboard.py) run it.

A window starts at a 10-minute boundary (`bucket_of`): its figures are then sums of whole
buckets, exactly what /v1/stats counts with `since` set to that boundary.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from receiver.store.answers import nearest_rank
from receiver.store.base import WindowFigures

__all__ = ["WindowFigures"]  # defined beside the Store interface; with the helpers below

# Statuses whose error code the rollup keeps: a failure's code says why.
FAILED_STATUSES = ("undelivered", "failed", "rejected", "expired")
RECENT_SELECT = (
    "id, provider, message_id, status, provider_status, error_code, to_number, final_via, "
    "final_reason, created_at, final_at"
)


def bucket_of(since: str) -> str:
    """The rollup bucket a stored time falls in ("2026-12-03T10:10" for 10:13:45.123Z)."""
    return since[:15] + "0"


def bin_range(b: int) -> tuple[int | None, int]:
    """The milliseconds [low, high) of a time bin (migration 0011's BIN: two significant
    digits; bin 0 holds every time under 1 ms, negative ones included)."""
    if b == 0:
        return None, 1
    digits, lead = divmod(b, 100)
    if digits == 1:
        return lead, lead + 1
    scale = 10 ** (digits - 2)
    return lead * scale, (lead + 1) * scale


@dataclass(frozen=True)
class WindowQuery:
    """The statements of one window, for a dialect to run in one snapshot: first
    `statements()`, then `fine()` for each bin `wanted()` names."""

    since: str
    provider: str | None
    chart_chars: int
    mark: str

    def _where(self, column: str = "bucket", op: str = ">=") -> str:
        m = self.mark
        return f"{column} {op} {m}" + (f" AND provider = {m}" if self.provider else "")

    def _params(self, *first: Any) -> list[Any]:
        return [*first, *([self.provider] if self.provider else [])]

    def statements(self) -> list[tuple[str, list[Any]]]:
        """The window's kept counts: the first day's (or, for a chart by hour or 10 minutes,
        the whole window's) from the buckets, the following whole days' from the days."""
        bucket = bucket_of(self.since)
        day = self.since[:10]
        by_day = self.chart_chars <= len(day)
        upper = (date.fromisoformat(day) + timedelta(days=1)).isoformat() if by_day else "~"
        columns = "provider, status, final_via, error_code, sum(n)"
        rollup = [
            (
                f"SELECT substr(bucket, 1, {int(self.chart_chars)}), {columns} "
                f"FROM dashboard_rollup WHERE bucket >= {self.mark} "
                f"AND {self._where('bucket', '<')} GROUP BY 1, 2, 3, 4, 5",
                [bucket, *self._params(upper)],
            )
        ]
        if by_day:
            rollup.append(
                (
                    f"SELECT day, {columns} FROM dashboard_rollup_days "
                    f"WHERE {self._where('day', '>')} GROUP BY 1, 2, 3, 4, 5",
                    self._params(day),
                )
            )
        next_day = (date.fromisoformat(day) + timedelta(days=1)).isoformat()
        return [
            *rollup,
            # The time bins: the whole days after the first from the daily counts, the first
            # day's buckets from the exact times (at most a day of them).
            (
                "SELECT bin, sum(n) FROM dashboard_final_days "
                f"WHERE {self._where('day', '>')} GROUP BY bin",
                self._params(day),
            ),
            (
                "SELECT bin, sum(n) FROM dashboard_final_times WHERE bucket >= "
                f"{self.mark} AND {self._where('bucket', '<')} GROUP BY bin",
                [bucket, *self._params(next_day)],
            ),
        ]

    def figures(self, results: list[list[tuple[Any, ...]]]) -> WindowFigures:
        """The figures from the statements' rows, the percentiles still to find; counts of
        zero left out (a change moves a message out of one kept row into another)."""
        *rollups, final_days, first_day = results
        figures = WindowFigures()
        bars: dict[tuple[str, str], int] = {}
        errors: dict[tuple[str, str], int] = {}
        for bar, provider, status, via, code, n in [row for rows in rollups for row in rows]:
            n = int(n)
            if not n:
                continue
            figures.by_status[status] = figures.by_status.get(status, 0) + n
            via = via or "none"
            figures.final_via[via] = figures.final_via.get(via, 0) + n
            bars[(bar, status)] = bars.get((bar, status), 0) + n
            if status in FAILED_STATUSES:
                errors[(provider, code)] = errors.get((provider, code), 0) + n
        figures.over_time = sorted((b, s, n) for (b, s), n in bars.items() if n)
        figures.errors = sorted(
            ((p, c, n) for (p, c), n in errors.items() if n), key=lambda e: (-e[2], e[0], e[1])
        )
        bins: dict[int, int] = {}
        for b, n in [*final_days, *first_day]:
            bins[int(b)] = bins.get(int(b), 0) + int(n)
        figures.final_bins = sorted((b, n) for b, n in bins.items() if n)
        figures.timed = sum(n for _, n in figures.final_bins)
        return figures

    def wanted(self, figures: WindowFigures) -> dict[str, tuple[int, int]]:
        """Where each percentile is: {"median"|"p95": (its bin, its offset within the bin)},
        the nearest rank over the sorted times, as /v1/stats ranks them."""
        found: dict[str, tuple[int, int]] = {}
        for name, p in (("median", 0.5), ("p95", 0.95)):
            if not figures.timed:
                continue
            offset = nearest_rank(p, figures.timed)
            for b, n in figures.final_bins:
                if offset < n:
                    found[name] = (b, offset)
                    break
                offset -= n
        return found

    def fine(self, b: int) -> tuple[str, list[Any]]:
        """One bin's exact times in the window, shortest first: (ms, count)."""
        return (
            "SELECT ms, sum(n) FROM dashboard_final_times "
            f"WHERE bin = {self.mark} AND {self._where()} GROUP BY ms ORDER BY ms",
            [b, *self._params(bucket_of(self.since))],
        )

    @staticmethod
    def pick(rows: list[tuple[Any, ...]], offset: int) -> float:
        """The time at `offset` among a bin's (ms, count) rows, in seconds as /v1/stats
        gives it."""
        for ms, n in rows:
            if offset < int(n):
                return round(int(ms) / 1000, 3)
            offset -= int(n)
        raise AssertionError("the kept times of a bin add up to its count")


def queue_sql(mark: str) -> str:
    """Per provider with messages waiting for a poll: waiting, due at `now`, the soonest due."""
    return (
        f"SELECT provider, count(*), sum(CASE WHEN next_poll_at <= {mark} THEN 1 ELSE 0 END), "
        "min(next_poll_at) FROM messages WHERE next_poll_at IS NOT NULL "
        "GROUP BY provider ORDER BY provider"
    )


def recent_sql(
    status: str, provider: str | None, since: str, limit: int, mark: str
) -> tuple[str, list[Any]]:
    """The latest messages of one status created since `since`: each status walks its own
    (status, id) index newest first, from the first message of the window (ids grow with
    created_at), and stops at `limit`, however many older messages have that status."""
    params: list[Any] = [status, since, since]
    sql = (
        f"SELECT {RECENT_SELECT} FROM messages WHERE status = {mark} AND created_at >= {mark} "
        f"AND id >= coalesce((SELECT id FROM messages WHERE created_at >= {mark} "
        f"ORDER BY created_at LIMIT 1), {2**63 - 1})"
    )
    if provider is not None:
        # Not through the (provider, id) index: for a status with few or no messages in the
        # window it would walk all the provider's messages.
        sql += f" AND provider || '' = {mark}"
        params.append(provider)
    return sql + f" ORDER BY id DESC LIMIT {mark}", [*params, limit]


def recent_rows(rows: list[tuple[Any, ...]], limit: int) -> list[dict[str, Any]]:
    """Several statuses' rows, newest first, at most `limit`, as dicts (id left out)."""
    names = [c.strip() for c in RECENT_SELECT.split(",")]
    rows = sorted(rows, key=lambda r: r[0], reverse=True)[:limit]
    return [dict(zip(names[1:], row[1:], strict=True)) for row in rows]
