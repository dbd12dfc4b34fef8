"""The poll queue's SQL on PostgreSQL: the reads and writes of a claim (the rules decide which
rows and the leases: rules.claim_due), and the queue's reads for the scheduler and the metrics.

Instances claim at the same time here, unlike SQLite's one writer at a time: a claim skips the
rows another transaction holds (FOR UPDATE SKIP LOCKED: another claim, or a callback about to
change the message), and a send answered as a whole (me-sms) is decided under an advisory lock
of its own, then with every member's row locked, so two claimers never both take it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from receiver.store.rows import select_due, select_group
from receiver.store.rules import Queued

Conn = psycopg.Connection[Any]
AsyncConn = psycopg.AsyncConnection[Any]


def due(conn: Conn, provider: str, now: str, limit: int) -> list[Queued]:
    return select_due(conn, provider, now, limit, mark="%s", lock=" FOR UPDATE SKIP LOCKED")


def group(conn: Conn, provider: str, prefix: str) -> list[Queued] | None:
    # The send's lock, held to the commit, then every member's row: a later claimer reads the
    # members as the first left them (leased to it) and leaves the send alone. Only queued
    # members (next_poll_at set): a final one is never leased again. The lock is only tried:
    # a claimer holding it may be waiting for a due member this claim has locked, and waiting
    # here too would be a deadlock (a 1 s stall and a retried batch); None leaves it theirs.
    locked = conn.execute(
        "SELECT pg_try_advisory_xact_lock(hashtextextended(%s, 1))", (provider + "\n" + prefix,)
    ).fetchone()
    if not (locked and locked[0]):
        return None
    return select_group(conn, provider, prefix, mark="%s", lock=" FOR UPDATE")


def put_off(conn: Conn, until: Sequence[tuple[int, str | None]]) -> None:
    if until:
        conn.execute(
            "UPDATE messages SET next_poll_at = u.at FROM unnest(%s::bigint[], %s::text[]) "
            "AS u(pk, at) WHERE id = u.pk",
            ([pk for pk, _ in until], [at for _, at in until]),
        )


def lease(conn: Conn, pks: Sequence[int], owner: str, until: str) -> None:
    if pks:
        conn.execute(
            "UPDATE messages SET next_poll_at = %s, poll_lease = %s WHERE id = ANY(%s)",
            (until, owner, list(pks)),
        )


async def queued_providers(conn: AsyncConn) -> list[str]:
    # One index descent per provider (a loose index scan), however many messages wait.
    found: list[str] = []
    while True:
        cur = await conn.execute(
            "SELECT min(provider) FROM messages WHERE next_poll_at IS NOT NULL AND provider > %s",
            (found[-1] if found else "",),
        )
        row = await cur.fetchone()
        if row is None or row[0] is None:
            return found
        found.append(row[0])


async def next_due(conn: AsyncConn, provider: str) -> str | None:
    cur = await conn.execute(
        "SELECT min(next_poll_at) FROM messages WHERE provider = %s AND next_poll_at IS NOT NULL",
        (provider,),
    )
    row = await cur.fetchone()
    return row[0] if row else None


async def due_count(conn: AsyncConn, provider: str, now: str) -> int:
    cur = await conn.execute(
        "SELECT count(*) FROM messages "
        "WHERE provider = %s AND next_poll_at IS NOT NULL AND next_poll_at <= %s",
        (provider, now),
    )
    row = await cur.fetchone()
    return int(row[0]) if row else 0
