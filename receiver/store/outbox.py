"""The push outbox's SQL that both dialects share (written with SQLite's "?"; see rows.marked).

The dialects' outbox.py modules hold what differs: how a claim skips other instances' rows and
names its owner, and reads (synchronous on SQLite, coroutines on PostgreSQL). Which pushes may
go and in what order is decided here, once: only the oldest pending push of a message to an
endpoint is ever claimed, so change n+1 waits until change n is delivered or given up.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from receiver.engine import is_final
from receiver.push import payload
from receiver.store.base import PushAttempt, PushJob
from receiver.store.rows import marked

# The columns a push row is inserted with (rules.owe_push fills them).
PUSH_COLUMNS = (
    "webhook_id",
    "endpoint",
    "type",
    "message_pk",
    "provider",
    "message_id",
    "payload",
    "status",
    "created_at",
    "next_attempt_at",
)
_INSERT = (
    f"INSERT INTO pushes ({', '.join(PUSH_COLUMNS)}) VALUES ({', '.join('?' * len(PUSH_COLUMNS))})"
)

# A claimable push: pending, due, to an endpoint being served, not leased (or its lease
# over), and the oldest pending one of its message to that endpoint.
CLAIMABLE = (
    "p.status = 'pending' AND p.next_attempt_at <= ? AND p.endpoint IN ({endpoints}) "
    "AND (p.lease_owner IS NULL OR p.lease_until <= ?{stale}) "
    "AND NOT EXISTS (SELECT 1 FROM pushes q WHERE q.message_pk = p.message_pk "
    "AND q.endpoint = p.endpoint AND q.id < p.id AND q.status = 'pending')"
)
# A change's push (rules._owe_change) keeps the facts of the change in its own columns rather
# than its JSON body (payload ''): the body is built from them when it is read, byte for byte
# what it would have been at the change, so the write transaction of a callback only binds
# them (the app's metadata read by the INSERT itself). Other pushes keep their body as built.
CHANGE_COLUMNS = (
    "data_status",
    "data_previous_status",
    "data_provider_status",
    "data_error_code",
    "data_final_via",
    "data_to",
    "data_account",
    "data_sent_at",
    "data_final_at",
)
BODY_COLUMNS = "payload, type, created_at, provider, message_id, data_metadata, " + ", ".join(
    CHANGE_COLUMNS
)
_INSERT_CHANGE = (
    "INSERT INTO pushes (webhook_id, endpoint, type, message_pk, provider, message_id, payload, "
    f"status, created_at, next_attempt_at, {', '.join(CHANGE_COLUMNS)}, data_metadata) "
    f"VALUES (?, ?, ?, ?, ?, ?, '', 'pending', ?, ?, {', '.join('?' * len(CHANGE_COLUMNS))}, "
    "(SELECT metadata FROM messages WHERE id = ?))"
)
JOB_COLUMNS = "id, webhook_id, endpoint, attempts, retry_step, lease_owner, " + BODY_COLUMNS

# The columns the API shows of a push, and of an attempt.
PUBLIC_COLUMNS = (
    "id, webhook_id, endpoint, type, provider, message_id, status, attempts, created_at, "
    "next_attempt_at, last_attempt_at, last_result, delivered_at"
)
ATTEMPT_COLUMNS = "attempted_at, http_status, error, duration_ms, response"


def job(row: Sequence[Any]) -> PushJob:
    """A claimed push from a row of JOB_COLUMNS."""
    return PushJob(row[0], row[1], row[2], body(row[6:]), row[3], row[4], row[5])


def body(row: Sequence[Any]) -> str:
    """A push's JSON body from a row of BODY_COLUMNS: as kept, or built from a change's facts
    (as payload.body built it when it was kept whole)."""
    if row[0]:
        return str(row[0])
    kind, created_at, provider, message_id, metadata = row[1:6]
    status, previous, provider_status, error_code, final_via, to, account, sent_at, final_at = row[
        6:15
    ]
    found = json.loads(metadata) if metadata is not None else None
    return payload.body(
        kind,
        created_at,
        payload.message_data(
            provider=provider,
            message_id=message_id,
            status=status,
            previous_status=previous,
            provider_status=provider_status,
            error_code=error_code,
            final=is_final(status),
            final_via=final_via,
            to=to,
            account=account,
            metadata=found if isinstance(found, dict) else None,
            sent_at=sent_at,
            final_at=final_at,
        ),
    )


def public(row: Sequence[Any]) -> dict[str, Any]:
    """A push as the API answers it (`id` is its webhook-id; the row id is the cursor's)."""
    (_, webhook_id, endpoint, kind, provider, message_id, status, attempts) = row[:8]
    (created_at, next_attempt_at, last_attempt_at, last_result, delivered_at) = row[8:13]
    return {
        "id": webhook_id,
        "type": kind,
        "endpoint": endpoint,
        "provider": provider,
        "message_id": message_id,
        "status": status,
        "attempt_count": attempts,
        "created_at": created_at,
        "next_attempt_at": next_attempt_at,
        "last_attempt_at": last_attempt_at,
        "last_result": last_result,
        "delivered_at": delivered_at,
    }


def attempt(row: Sequence[Any]) -> dict[str, Any]:
    names = ("attempted_at", "http_status", "error", "duration_ms", "response")
    return dict(zip(names, row, strict=True))


def list_sql(
    status: str | None, since: str | None, before_id: int | None, limit: int
) -> tuple[str, list[Any]]:
    """Newest first, keyset on id (as the message list): one more than `limit`, to know
    whether there is a next page."""
    where: list[str] = []
    params: list[Any] = []
    for clause, value in (
        ("status = ?", status),
        ("created_at >= ?", since),
        ("id < ?", before_id),
    ):
        if value is not None:
            where.append(clause)
            params.append(value)
    sql = f"SELECT {PUBLIC_COLUMNS} FROM pushes"
    if where:
        sql += " WHERE " + " AND ".join(where)
    return sql + " ORDER BY id DESC LIMIT ?", [*params, limit + 1]


def page(rows: list[Any], limit: int) -> tuple[list[dict[str, Any]], int | None]:
    found = [public(row) for row in rows[:limit]]
    return found, (rows[limit - 1][0] if len(rows) > limit else None)


# -- writes, on the writer's connection -------------------------------------------------------


def insert_push(conn: Any, row: Mapping[str, Any], mark: str = "?") -> None:
    conn.execute(marked(_INSERT, mark), [row[c] for c in PUSH_COLUMNS])


def insert_change_pushes(
    conn: Any,
    rows: Sequence[tuple[Any, ...]],
    mark: str = "?",
) -> None:
    """Insert change pushes, each (webhook_id, endpoint, type, message_pk, provider,
    message_id, created_at, next_attempt_at, *CHANGE_COLUMNS, message_pk)."""
    sql = marked(_INSERT_CHANGE, mark)
    for row in rows:  # one per endpoint: usually one
        conn.execute(sql, row)


def message_metadata(conn: Any, pk: int, mark: str = "?") -> dict[str, Any] | None:
    found = conn.execute(marked("SELECT metadata FROM messages WHERE id = ?", mark), (pk,))
    row = found.fetchone()
    if row is None or row[0] is None:
        return None
    value = json.loads(row[0])
    return value if isinstance(value, dict) else None


def fail_disabled(conn: Any, now: str, mark: str = "?") -> set[str]:
    """Give up the pending pushes of endpoints a 410 disabled (kept, to recover later); the
    disabled endpoints."""
    disabled = [row[0] for row in conn.execute("SELECT url FROM push_endpoints").fetchall()]
    if disabled:
        conn.execute(
            marked(
                "UPDATE pushes SET status = 'failed', next_attempt_at = NULL, "
                "last_result = 'endpoint_disabled', lease_owner = NULL, lease_until = NULL "
                f"WHERE status = 'pending' AND endpoint IN ({', '.join('?' * len(disabled))})",
                mark,
            ),
            list(disabled),
        )
    return set(disabled)


def finish(conn: Any, push: PushJob, done: PushAttempt, mark: str = "?") -> None:
    """Record the attempt; move the push on if its lease is still this claimer's (one whose
    lease ran out and was claimed again is the new claimer's to settle)."""
    conn.execute(
        marked(
            f"INSERT INTO push_attempts (push_id, {ATTEMPT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
            mark,
        ),
        (push.pk, done.attempted_at, done.http_status, done.error, done.duration_ms, done.response),
    )
    conn.execute(
        marked(
            "UPDATE pushes SET attempts = attempts + 1, last_attempt_at = ?, last_result = ? "
            "WHERE id = ?",
            mark,
        ),
        (done.attempted_at, done.result, push.pk),
    )
    conn.execute(
        marked(
            "UPDATE pushes SET status = ?, next_attempt_at = ?, retry_step = retry_step + 1, "
            "delivered_at = ?, lease_owner = NULL, lease_until = NULL "
            "WHERE id = ? AND lease_owner = ? AND status = 'pending'",
            mark,
        ),
        (
            done.status,
            done.next_attempt_at if done.status == "pending" else None,
            done.attempted_at if done.status == "delivered" else None,
            push.pk,
            push.lease_owner,
        ),
    )


def disable_endpoint(conn: Any, url: str, now: str, reason: str, mark: str = "?") -> None:
    conn.execute(
        marked(
            "INSERT INTO push_endpoints (url, disabled_at, reason) VALUES (?, ?, ?) "
            "ON CONFLICT (url) DO UPDATE SET disabled_at = excluded.disabled_at, "
            "reason = excluded.reason",
            mark,
        ),
        (url, now, reason),
    )


_REQUEUE = (
    "UPDATE pushes SET status = 'pending', retry_step = 0, next_attempt_at = ?, "
    "delivered_at = NULL, lease_owner = NULL, lease_until = NULL "
)


def requeue(conn: Any, webhook_id: str, now: str, mark: str = "?") -> str | None:
    """Queue one push again (delivered or failed: it is sent again, with its webhook-id),
    re-enabling its endpoint; its status before (None: no such push)."""
    row = conn.execute(
        marked("SELECT status, endpoint FROM pushes WHERE webhook_id = ?", mark), (webhook_id,)
    ).fetchone()
    if row is None:
        return None
    status, endpoint = row[0], row[1]
    if status != "pending":
        conn.execute(marked(_REQUEUE + "WHERE webhook_id = ?", mark), (now, webhook_id))
        conn.execute(marked("DELETE FROM push_endpoints WHERE url = ?", mark), (endpoint,))
    return str(status)


def recover(conn: Any, since: str, now: str, mark: str = "?") -> int:
    """Queue again every push failed since `since` (their endpoints re-enabled); they go in
    order, each message's oldest first, as new ones do. How many."""
    endpoints = [
        row[0]
        for row in conn.execute(
            marked(
                "SELECT DISTINCT endpoint FROM pushes WHERE status = 'failed' AND created_at >= ?",
                mark,
            ),
            (since,),
        ).fetchall()
    ]
    if not endpoints:
        return 0
    conn.execute(
        marked(
            f"DELETE FROM push_endpoints WHERE url IN ({', '.join('?' * len(endpoints))})", mark
        ),
        endpoints,
    )
    found = conn.execute(
        marked("SELECT count(*) FROM pushes WHERE status = 'failed' AND created_at >= ?", mark),
        (since,),
    ).fetchone()
    conn.execute(
        marked(_REQUEUE + "WHERE status = 'failed' AND created_at >= ?", mark), (now, since)
    )
    return int(found[0]) if found else 0


def delete_delivered(conn: Any, message_pks: Sequence[int], mark: str = "?") -> int:
    """Delete the delivered pushes (and their attempts) of messages no longer kept: retention
    takes them with their messages. Pending and failed ones stay until sent or recovered."""
    if not message_pks:
        return 0
    marks = ", ".join("?" * len(message_pks))
    gone = [
        row[0]
        for row in conn.execute(
            marked(
                f"SELECT id FROM pushes WHERE message_pk IN ({marks}) AND status = 'delivered' "
                "AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.id = pushes.message_pk)",
                mark,
            ),
            list(message_pks),
        ).fetchall()
    ]
    if gone:
        marks = ", ".join("?" * len(gone))
        conn.execute(marked(f"DELETE FROM push_attempts WHERE push_id IN ({marks})", mark), gone)
        conn.execute(marked(f"DELETE FROM pushes WHERE id IN ({marks})", mark), gone)
    return len(gone)
