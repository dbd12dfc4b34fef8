"""PostgreSQL's hooks for the shared group-commit writer (receiver.store.writer).

What differs from SQLite comes from other instances writing the same rows at once:
- a batch first takes the advisory locks of the messages its jobs name, in one order every
  instance uses, so two batches queue for a message rather than deadlock;
- a batch chosen as a deadlock victim, or failing to serialize (SQLSTATE 40P01, 40001), is
  rolled back and run again whole (its jobs are functions of the database, so they decide
  afresh), a bounded number of times, then fails with StoreUnavailable (a 503);
- its first run is in pipeline mode, where a statement whose result nobody reads goes out with
  the next one that is read: round trips, not the database, bound a writer;
- a lost connection fails its batch and is replaced for the next one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg
from psycopg import errors
from psycopg.pq import TransactionStatus

from receiver.store import writer

Conn = psycopg.Connection[Any]

# SQLSTATE 40001 and 40P01: nothing of the batch was kept, and running it again may succeed.
RETRYABLE = (errors.SerializationFailure, errors.DeadlockDetected)


class Transactions(writer.Transactions):
    """Batches on a psycopg connection in autocommit mode."""

    # In pipeline mode a statement's error surfaces at a later one, maybe in another job's
    # call: any error but a retryable one redoes the batch with each job in its own savepoint,
    # out of pipeline mode, where it fails alone.
    deferred_errors = True

    def __init__(self, *, attempts: int = 8) -> None:
        super().__init__(error=psycopg.Error)
        self.attempts = attempts

    def in_transaction(self, conn: Conn) -> bool:
        status = conn.info.transaction_status
        return status in (TransactionStatus.INTRANS, TransactionStatus.INERROR)

    @contextlib.contextmanager
    def transaction(self, conn: Conn, *, first: bool) -> Iterator[None]:
        # Pipelined, a statement whose result no job reads (an event insert, a message update,
        # BEGIN and COMMIT themselves) goes out with the next one that is read, so a callback
        # costs one round trip rather than three.
        with conn.pipeline() if first else contextlib.nullcontext(), conn.transaction():
            yield

    @contextlib.contextmanager
    def savepoint(self, conn: Conn) -> Iterator[None]:
        with conn.transaction():  # a savepoint, within the batch's transaction
            yield

    def before_batch(self, conn: Conn, locks: Sequence[str]) -> None:
        """Take the batch's message locks first, all in one order (the one every instance
        uses): two batches wanting the same messages then queue rather than deadlock, which
        PostgreSQL would only find out after deadlock_timeout (a second)."""
        if locks:
            conn.execute(
                "SELECT pg_advisory_xact_lock(k) FROM (SELECT DISTINCT hashtextextended(m, 0) "
                "AS k FROM unnest(%s::text[]) AS m) AS keys ORDER BY k",
                (list(locks),),
            )

    def retryable(self, exc: BaseException) -> bool:
        return isinstance(exc, RETRYABLE)

    def broken(self, conn: Conn) -> bool:
        return conn.closed or conn.broken


TRANSACTIONS = Transactions()
