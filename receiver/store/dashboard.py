"""The dashboard's reads, one copy of the SQL for both stores (placeholders aside): a window's
figures from the kept counts of migration 0011, the poll queue per provider, and the latest
messages of some statuses. The dialects (sqlite/dashboard.py, postgres/dashboard.py) run it.

A window starts at a 10-minute boundary (`bucket_of`): its figures are then sums of whole
buckets, exactly what /v1/stats counts with `since` set to that boundary.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Statuses whose error code the rollup keeps: a failure's code says why.
FAILED_STATUSES = ("undelivered", "failed", "rejected", "expired")
RECENT_SELECT = (
    "id, provider, message_id, status, provider_status, error_code, to_number, final_via, "
    "final_reason, created_at, final_at"
)


def bucket_of(since: str) -> str:
    """The rollup bucket a stored time falls in ("2026-12-03T10:10" for 10:13:45.123Z)."""
    return since[:15] + "0"


@dataclass
class WindowFigures:
    """The kept counts of one window (and provider, when one is chosen)."""

    by_status: dict[str, int] = field(default_factory=dict)
    final_via: dict[str, int] = field(default_factory=dict)
    # (chart bucket: a prefix of the rollup bucket, status, count), oldest first.
    over_time: list[tuple[str, str, int]] = field(default_factory=list)
    # (provider, error code, count), most frequent first; "" is a failure without a code.
    errors: list[tuple[str, str, int]] = field(default_factory=list)
    # (milliseconds to final, count), shortest first: the exact times /v1/stats ranks.
    final_times: list[tuple[int, int]] = field(default_factory=list)


def window_sql(provider: str | None, chart_chars: int, mark: str) -> list[str]:
    """The window's statements, each taking (since bucket[, provider])."""
    where = f"bucket >= {mark}" + (f" AND provider = {mark}" if provider is not None else "")
    failing = ", ".join(f"'{s}'" for s in FAILED_STATUSES)
    return [
        f"SELECT status, sum(n) FROM dashboard_rollup WHERE {where} GROUP BY status",
        f"SELECT final_via, sum(n) FROM dashboard_rollup WHERE {where} GROUP BY final_via",
        f"SELECT substr(bucket, 1, {int(chart_chars)}) AS b, status, sum(n) "
        f"FROM dashboard_rollup WHERE {where} GROUP BY b, status ORDER BY b",
        "SELECT provider, error_code, sum(n) AS total FROM dashboard_rollup "
        f"WHERE {where} AND status IN ({failing}) GROUP BY provider, error_code "
        "ORDER BY total DESC, provider, error_code",
        f"SELECT ms, sum(n) FROM dashboard_final_times WHERE {where} GROUP BY ms ORDER BY ms",
    ]


def window_figures(results: list[list[tuple[Any, ...]]]) -> WindowFigures:
    """The figures from window_sql's statements' rows, counts of zero left out (a change
    moves a message out of one kept row into another, leaving the first at zero)."""
    by_status, via, over_time, errors, times = results
    return WindowFigures(
        by_status={s: int(n) for s, n in by_status if n},
        final_via={v or "none": int(n) for v, n in via if n},
        over_time=[(b, s, int(n)) for b, s, n in over_time if n],
        errors=[(p, e, int(n)) for p, e, n in errors if n],
        final_times=[(int(ms), int(n)) for ms, n in times if n],
    )


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
    (status, id) index newest first, and stops at `limit`."""
    params: list[Any] = [status, since]
    sql = f"SELECT {RECENT_SELECT} FROM messages WHERE status = {mark} AND created_at >= {mark}"
    if provider is not None:
        sql += f" AND provider = {mark}"
        params.append(provider)
    return sql + f" ORDER BY id DESC LIMIT {mark}", [*params, limit]


def recent_rows(rows: list[tuple[Any, ...]], limit: int) -> list[dict[str, Any]]:
    """Several statuses' rows, newest first, at most `limit`, as dicts (id left out)."""
    names = [c.strip() for c in RECENT_SELECT.split(",")]
    rows = sorted(rows, key=lambda r: r[0], reverse=True)[:limit]
    return [dict(zip(names[1:], row[1:], strict=True)) for row in rows]
