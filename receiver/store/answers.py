"""The API's answers, one copy for both stores: a message or event row as the API's dict,
the stats summary, export rows, and the read SQL the dialects share (placeholders aside).

A dialect runs the SQL and hands its rows here: a dict by column name for the dicts (each
dialect's _dicts), a tuple in EXPORT_SELECT order for export rows.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any, Protocol

from receiver import engine
from receiver.engine import Status
from receiver.store.base import MessageFilter

# A multipart message's parts counted (receiver.store.parts); only read for one that has parts.
_FAILED = ", ".join(f"'{s.value}'" for s in engine.FAILED_STATUSES)
PARTS_SELECT = (
    "parts, CASE WHEN parts IS NULL THEN NULL ELSE (SELECT count(*) FROM message_parts p "
    "WHERE p.parent_pk = messages.id AND p.status = 'delivered') END AS parts_delivered, "
    "CASE WHEN parts IS NULL THEN NULL ELSE (SELECT count(*) FROM message_parts p "
    f"WHERE p.parent_pk = messages.id AND p.status IN ({_FAILED})) END AS parts_failed"
)
MESSAGE_SELECT = (
    "id, provider, message_id, account, status, provider_status, error_code, to_number, "
    "from_number, metadata, registered, is_final, final_via, created_at, updated_at, sent_at, "
    "final_at, final_reason, poll_attempts, last_polled_at, last_poll_result, next_poll_at, "
    "deadline_at, deadline_missed, " + PARTS_SELECT
)
EXPORT_SELECT = (
    "id, provider, message_id, status, provider_status, error_code, is_final, final_via, "
    "to_number, from_number, account, registered, metadata, created_at, updated_at, sent_at, "
    "final_at, final_reason"
)
EVENT_SELECT = (
    "id, source, provider_status, status, previous_status, outcome, error_code, event_time, "
    "received_at, resolved_at, dedupe_key, headers, body"
)


class Row(Protocol):
    def __getitem__(self, key: str, /) -> Any: ...


def message_dict(row: Row) -> dict[str, Any]:
    answer = {
        "provider": row["provider"],
        "message_id": row["message_id"],
        "status": row["status"],
        "provider_status": row["provider_status"],
        "error_code": row["error_code"],
        "final": bool(row["is_final"]),
        "final_via": row["final_via"],
        "to": row["to_number"],
        "from": row["from_number"],
        "account": row["account"],
        "registered": bool(row["registered"]),
        "metadata": json.loads(row["metadata"]) if row["metadata"] else None,
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "sent_at": row["sent_at"],
        "final_at": row["final_at"],
        "final_reason": row["final_reason"],
        "poll": {
            "attempts": row["poll_attempts"],
            "last_polled_at": row["last_polled_at"],
            "last_result": row["last_poll_result"],
            "next_poll_at": row["next_poll_at"],
        },
        # A registration's deadline (None: none given), and whether it passed undelivered.
        "deadline": row["deadline_at"],
        "deadline_missed": row["deadline_missed"] == 1,
    }
    if row["parts"]:
        answer["parts"] = parts_counts(row["parts"], row["parts_delivered"], row["parts_failed"])
    return answer


def parts_counts(total: int, delivered: int, failed: int) -> dict[str, int]:
    """A multipart message's `parts` (engine.parts_summary's shape)."""
    return {
        "total": total,
        "delivered": delivered,
        "failed": failed,
        "pending": total - delivered - failed,
    }


def event_dict(row: Row) -> dict[str, Any]:
    event = {
        "id": row["id"],
        "source": row["source"],
        "provider_status": row["provider_status"],
        "status": row["status"],
        "previous_status": row["previous_status"],
        "outcome": row["outcome"],
        "error_code": row["error_code"],
        "event_time": row["event_time"],
        "received_at": row["received_at"],
        "resolved_at": row["resolved_at"],
        "dedupe_key": row["dedupe_key"],
        "headers": json.loads(row["headers"]) if row["headers"] else {},
        "body": row["body"],
    }
    if row["part"] is not None:  # a part's event, in its multipart message's history
        event["part"] = row["part"]
    return event


def export_row(row: Sequence[Any]) -> tuple[Any, ...]:
    """An export row (id, *EXPORT_SELECT values), its flags as booleans."""
    return (*row[:6], bool(row[6]), *row[7:11], bool(row[11]), *row[12:])


def filter_sql(f: MessageFilter, mark: str = "?") -> tuple[list[str], list[Any]]:
    """The filter's WHERE terms and parameters; `mark` is the dialect's placeholder."""
    where: list[str] = []
    params: list[Any] = []
    for column, value in (
        ("status", f.status),
        ("provider", f.provider),
        ("to_number", f.to_number),
    ):
        if value is not None:
            where.append(f"{column} = {mark}")
            params.append(value)
    if f.since is not None:
        where.append(f"created_at >= {mark}")
        params.append(f.since)
    if f.until is not None:
        where.append(f"created_at < {mark}")
        params.append(f.until)
    return where, params


def messages_sql(message_id: str, provider: str | None, mark: str = "?") -> tuple[str, list[Any]]:
    """A message id's rows (one per provider), in no order: messages() puts them in order."""
    sql = f"SELECT {MESSAGE_SELECT} FROM messages WHERE message_id = {mark}"
    params: list[Any] = [message_id]
    if provider is not None:
        sql += f" AND provider = {mark}"
        params.append(provider)
    # No ORDER BY: SQLite would build a temporary b-tree on every lookup to sort the one row
    # nearly every lookup finds. The unique (message_id, provider) index: one row a provider.
    return sql + " LIMIT 10", params


def messages(rows: Sequence[Row]) -> list[dict[str, Any]]:
    """The rows of messages_sql as the API's dicts, in insertion order."""
    if len(rows) > 1:
        rows = sorted(rows, key=lambda r: r["id"])
    return [message_dict(r) for r in rows]


def events_sql(mark: str = "?") -> str:
    """A message's events, oldest first; parameters (provider, message_id)."""
    # A part's events (receiver.store.parts) carry the part's id: `part` names it.
    columns = ", ".join("e." + c for c in EVENT_SELECT.split(", "))
    return (
        f"SELECT {columns}, CASE WHEN e.is_part = 1 THEN e.message_id "
        "ELSE nullif(e.message_id, m.message_id) END AS part FROM events e "
        f"JOIN messages m ON m.id = e.message_pk "
        f"WHERE m.provider = {mark} AND m.message_id = {mark} ORDER BY e.id"
    )


def page_sql(f: MessageFilter, mark: str = "?") -> tuple[str, list[Any]]:
    """One page of the list, newest first, keyset-paginated on id (so inserts never shift a
    page); it asks for one row more than the page, which tells whether another follows."""
    where, params = filter_sql(f, mark)
    if f.before_id is not None:
        where.append(f"id < {mark}")
        params.append(f.before_id)
    sql = f"SELECT {MESSAGE_SELECT} FROM messages"
    if where:
        sql += " WHERE " + " AND ".join(where)
    params.append(f.limit + 1)
    return sql + f" ORDER BY id DESC LIMIT {mark}", params


def page(rows: Sequence[Row], f: MessageFilter) -> tuple[list[dict[str, Any]], int | None]:
    """The page's messages and the cursor of the next page (None: this is the last)."""
    more = len(rows) > f.limit
    rows = rows[: f.limit]
    next_id = rows[-1]["id"] if more and rows else None
    return [message_dict(r) for r in rows], next_id


def export_sql(
    where: list[str], params: list[Any], before: int | None, size: int, mark: str = "?"
) -> tuple[str, list[Any]]:
    """Up to `size` export rows older than id `before`, newest first."""
    where = [*where, f"id < {mark}"] if before is not None else where
    params = [*params, before] if before is not None else params
    sql = f"SELECT {EXPORT_SELECT} FROM messages"
    if where:
        sql += " WHERE " + " AND ".join(where)
    return sql + f" ORDER BY id DESC LIMIT {mark}", [*params, size]


def nearest_rank(p: float, count: int) -> int:
    """The offset of the p-th percentile among `count` sorted values (nearest rank)."""
    return max(0, math.ceil(p * count) - 1)


def summary(
    by_status: dict[str, int], timed: int, median: float | None, p95: float | None
) -> dict[str, Any]:
    """The stats answer from the count per status and the time-to-final percentiles."""
    counts = {s.value: 0 for s in Status}
    counts.update(by_status)
    final = sum(n for s, n in counts.items() if engine.is_final(s))
    delivered = sum(n for s, n in counts.items() if s in engine.DELIVERED_STATUSES)
    return {
        "total": sum(counts.values()),
        "by_status": counts,
        "final": final,
        "delivered": delivered,
        "delivery_rate": round(delivered / final, 4) if final else None,
        "time_to_final_seconds": {"count": timed, "median": median, "p95": p95},
    }
