"""Registered messages inserted in bulk (rules.RowAccess.insert_registered): one statement for
a batch, its counts kept once for the batch rather than by a trigger per row.

While `bulk_insert` holds its row (only inside this module's statements, in the writer's own
transaction, so no other connection ever sees it), the insert triggers that keep counts
(migration 0012) leave the rows to `count_in`, which adds exactly what they would have added
row by row: the same expressions, grouped. A registered message is no change (the change log's
insert trigger only logs a message a callback created), so nothing goes to the log.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

from receiver.store.sqlite.schema import BIN, ROLLUP_ERROR, ROLLUP_KEY, TIMED, TIMED_MS

# The rows counted: those this batch inserted, by id (a JSON array of ids).
_BATCH = "WITH batch AS (SELECT * FROM messages WHERE id IN (SELECT value FROM json_each(?))) "
_B = "batch"
_COUNTS = (
    "INSERT INTO message_status_counts (status, n) SELECT status, count(*) FROM batch "
    "WHERE true GROUP BY status ON CONFLICT (status) DO UPDATE SET n = n + excluded.n",
    # me-sms recipients ("<uuid>:<msisdn>") per send, as 0010's sends_counted_in.
    "INSERT INTO send_status_counts (uuid, status, n) "
    "SELECT substr(message_id, 1, instr(message_id, ':') - 1), status, count(*) FROM batch "
    "WHERE provider = 'mesms' AND instr(message_id, ':') > 1 GROUP BY 1, 2 "
    "ON CONFLICT (uuid, status) DO UPDATE SET n = n + excluded.n",
    # The dashboard's, as 0011's dashboard_counted_in (schema._rollup_sql).
    "INSERT INTO dashboard_rollup (bucket, provider, status, final_via, error_code, n) "
    f"SELECT {ROLLUP_KEY.format(r=_B)}, provider, status, coalesce(final_via, ''), "
    f"{ROLLUP_ERROR.format(r=_B)}, count(*) FROM batch WHERE true GROUP BY 1, 2, 3, 4, 5 "
    "ON CONFLICT DO UPDATE SET n = n + excluded.n",
    "INSERT INTO dashboard_rollup_days (day, provider, status, final_via, error_code, n) "
    "SELECT substr(created_at, 1, 10), provider, status, coalesce(final_via, ''), "
    f"{ROLLUP_ERROR.format(r=_B)}, count(*) FROM batch WHERE true GROUP BY 1, 2, 3, 4, 5 "
    "ON CONFLICT DO UPDATE SET n = n + excluded.n",
    "INSERT INTO dashboard_final_times (bucket, provider, ms, bin, n) "
    f"SELECT bucket, provider, ms, {BIN.format(ms='ms')}, count(*) FROM ("
    f"SELECT {ROLLUP_KEY.format(r=_B)} AS bucket, provider, {TIMED_MS.format(r=_B)} AS ms "
    f"FROM batch WHERE {TIMED.format(r=_B)}) WHERE true GROUP BY 1, 2, 3 "
    "ON CONFLICT DO UPDATE SET n = n + excluded.n",
    "INSERT INTO dashboard_final_days (day, provider, bin, n) "
    f"SELECT day, provider, {BIN.format(ms='ms')}, count(*) FROM ("
    f"SELECT substr(created_at, 1, 10) AS day, provider, {TIMED_MS.format(r=_B)} AS ms "
    f"FROM batch WHERE {TIMED.format(r=_B)}) WHERE true GROUP BY 1, 2, 3 "
    "ON CONFLICT DO UPDATE SET n = n + excluded.n",
)


def _insert_sql(columns: Sequence[str]) -> str:
    picks = ", ".join(f"value ->> {i}" for i in range(len(columns)))
    return (
        f"INSERT INTO messages ({', '.join(columns)}) SELECT {picks} FROM json_each(?) "
        "RETURNING id, provider, message_id"
    )


def _insert_one_sql(columns: Sequence[str]) -> str:
    return (
        f"INSERT INTO messages ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}) "
        "RETURNING id, provider, message_id"
    )


def insert_registered(
    conn: sqlite3.Connection, columns: Sequence[str], rows: Sequence[Sequence[Any]]
) -> dict[tuple[str, str], int]:
    """Insert the rows (values in the order of `columns`, each a registered message) in one
    statement and count them in; each one's id by (provider, message_id)."""
    if not rows:
        return {}
    # SQLite's JSON functions end a string at an escaped NUL, which a stored id may hold (the
    # store keeps NUL): such rows go in one by one, still counted with the rest.
    plain: list[Sequence[Any]] = []
    odd: list[Sequence[Any]] = []
    for row in rows:
        (odd if any(isinstance(v, str) and "\x00" in v for v in row) else plain).append(row)
    conn.execute("INSERT INTO bulk_insert (one) VALUES (1)")
    try:
        found = conn.execute(
            _insert_sql(columns), (json.dumps(plain, separators=(",", ":")),)
        ).fetchall()
        one = _insert_one_sql(columns)
        found += [conn.execute(one, row).fetchone() for row in odd]
    finally:
        conn.execute("DELETE FROM bulk_insert")
    ids = {(row[1], row[2]): row[0] for row in found}
    count_in(conn, list(ids.values()))
    return ids


def count_in(conn: sqlite3.Connection, ids: Sequence[int]) -> None:
    """Add the messages `ids` to every kept count, as the insert triggers would have."""
    batch = json.dumps(list(ids))
    for sql in _COUNTS:
        conn.execute(_BATCH + sql, (batch,))


def count_in_all(conn: sqlite3.Connection) -> None:
    """Add every message to the kept counts: for a new database filled while `bulk_insert`
    held its row (bench/fill.py), whose counts are still empty."""
    for sql in _COUNTS:
        conn.execute("WITH batch AS (SELECT * FROM messages) " + sql)


def values(row: Mapping[str, Any], columns: Sequence[str]) -> list[Any]:
    """A row's values in the order of `columns` (a missing one NULL), as JSON can carry them:
    bools as 1/0, metadata as compact JSON text."""
    out = []
    for c in columns:
        value = row.get(c)
        if isinstance(value, bool):
            value = int(value)
        elif c == "metadata" and value is not None:
            value = json.dumps(value, separators=(",", ":"))
        out.append(value)
    return out
