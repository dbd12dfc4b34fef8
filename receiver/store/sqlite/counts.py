"""The kept counts on SQLite (/metrics' status counts, a send's summary, the dashboard's
rollups), brought level once per write batch rather than row by row.

A trigger per row doing the counts' six upserts (eight to ten for a status change) cost more
than the row itself: 120 of a callback-created message's 155 us, 80 of a status change's 100.
Since migration 0016 the counts hold every message up to the id in `counted_through`, as it
was when `pending_counts` last noted it: a trigger notes a message's counted columns when it
is first changed or deleted after a fold (and nothing for an insert: its id is above the
mark). `fold` reads, in one statement, the noted messages as the counts hold them (-1) and
those and every newer message as they are now (+1), each with its keys in every count (the
triggers' own expressions, in SQL); adds them up by key; and writes only the keys that moved.
Then it empties the notes and moves the mark.

The store's writer folds before every COMMIT (STORE_TRANSACTIONS), so a committed state's
counts are level; a job that reads counts mid-batch folds first. A write from outside the
writer (a test editing a row by hand) is counted by the next batch.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from receiver.store.sqlite.connection import TRANSACTIONS
from receiver.store.sqlite.schema import BIN, COUNTED, ROLLUP_ERROR, ROLLUP_KEY, TIMED, TIMED_MS
from receiver.store.writer import Transactions

_C = ", ".join(COUNTED)
# The rows to count, `d` their sign. CROSS JOIN keeps the notes the outer loop: the planner,
# with no statistics, would rather scan every message and look each up in the notes.
_CHANGED = (
    f"SELECT {_C}, -1 AS d FROM pending_counts WHERE id <= ?1 "
    f"UNION ALL SELECT {_C}, 1 FROM messages WHERE id > ?1 "
    f"UNION ALL SELECT {', '.join(f'm.{c}' for c in COUNTED)}, 1 "
    "FROM pending_counts AS p CROSS JOIN messages AS m ON m.id = p.id WHERE p.id <= ?1"
)
_R = "r"
# Each row's keys: status; its send (me-sms recipients "<uuid>:<msisdn>", as 0010's
# triggers); the dashboard's bucket, day, provider, final_via and error code (0011's
# schema._rollup_sql); and, for a final message with both times, its time to final and bin.
# MATERIALIZED: each row's time is worked out once, not at each of the bin's uses of it.
_KEYED = (
    f"WITH {_R} AS MATERIALIZED ({{rows}}), keyed AS MATERIALIZED (SELECT d, status, "
    "CASE WHEN provider = 'mesms' AND instr(message_id, ':') > 1 "
    "THEN substr(message_id, 1, instr(message_id, ':') - 1) END AS uuid, "
    f"{ROLLUP_KEY.format(r=_R)} AS bucket, substr(created_at, 1, 10) AS day, provider, "
    f"coalesce(final_via, '') AS final_via, {ROLLUP_ERROR.format(r=_R)} AS error_code, "
    f"CASE WHEN {TIMED.format(r=_R)} THEN {TIMED_MS.format(r=_R)} END AS ms FROM {_R}) "
    "SELECT d, status, uuid, bucket, day, provider, final_via, error_code, ms, "
    f"CASE WHEN ms IS NOT NULL THEN {BIN.format(ms='ms')} END FROM keyed"
)
_UPSERTS = (
    "INSERT INTO message_status_counts (status, n) VALUES (?, ?) "
    "ON CONFLICT (status) DO UPDATE SET n = n + excluded.n",
    "INSERT INTO send_status_counts (uuid, status, n) VALUES (?, ?, ?) "
    "ON CONFLICT (uuid, status) DO UPDATE SET n = n + excluded.n",
    "INSERT INTO dashboard_rollup (bucket, provider, status, final_via, error_code, n) "
    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET n = n + excluded.n",
    "INSERT INTO dashboard_rollup_days (day, provider, status, final_via, error_code, n) "
    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET n = n + excluded.n",
    "INSERT INTO dashboard_final_times (bucket, provider, ms, bin, n) "
    "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET n = n + excluded.n",
    "INSERT INTO dashboard_final_days (day, provider, bin, n) "
    "VALUES (?, ?, ?, ?) ON CONFLICT DO UPDATE SET n = n + excluded.n",
)
TABLES = (
    "message_status_counts",
    "send_status_counts",
    "dashboard_rollup",
    "dashboard_rollup_days",
    "dashboard_final_times",
    "dashboard_final_days",
)


def _add(conn: sqlite3.Connection, rows: Iterable[Sequence[Any]]) -> None:
    """Add each row's sign to its key in every count; write the keys whose sum is not 0."""
    sums: tuple[Counter[tuple[Any, ...]], ...] = tuple(Counter() for _ in _UPSERTS)
    status, sends, rollup, days, times, final_days = sums
    for d, st, uuid, bucket, day, provider, via, error, ms, bin_ in rows:
        status[(st,)] += d
        if uuid is not None:
            sends[(uuid, st)] += d
        rollup[(bucket, provider, st, via, error)] += d
        days[(day, provider, st, via, error)] += d
        if ms is not None:
            times[(bucket, provider, ms, bin_)] += d
            final_days[(day, provider, bin_)] += d
    for sql, sum_ in zip(_UPSERTS, sums, strict=True):
        moved = [(*key, n) for key, n in sum_.items() if n]
        if moved:
            conn.executemany(sql, moved)


def fold(conn: sqlite3.Connection) -> None:
    """Bring the kept counts level with the messages: those noted, and those above the mark."""
    through, last, noted = conn.execute(
        "SELECT coalesce((SELECT id FROM counted_through), 0), "
        "coalesce((SELECT max(id) FROM messages), 0), EXISTS (SELECT 1 FROM pending_counts)"
    ).fetchone()
    if not noted and last <= through:
        return
    _add(conn, conn.execute(_KEYED.format(rows=_CHANGED), (through,)))
    conn.execute("DELETE FROM pending_counts")
    conn.execute("UPDATE counted_through SET id = ?", (last,))


class _Folding(Transactions):
    def before_commit(self, conn: sqlite3.Connection) -> None:
        fold(conn)


# The store's writer batches (connection.TRANSACTIONS, the counts folded before each COMMIT).
STORE_TRANSACTIONS = _Folding(
    begin=TRANSACTIONS.begin, error=TRANSACTIONS.error, on_loop=TRANSACTIONS.on_loop
)


def recount(conn: sqlite3.Connection) -> None:
    """Count every kept count afresh from the messages (a database filled or rewritten while
    the counts were not kept: bench/fill.py, bench/dashboard.py)."""
    for table in TABLES:
        conn.execute(f"DELETE FROM {table}")
    conn.execute("DELETE FROM pending_counts")
    conn.execute("UPDATE counted_through SET id = 0")
    fold(conn)
