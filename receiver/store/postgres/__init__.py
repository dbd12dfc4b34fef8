"""The PostgreSQL store: several instances on one database, with SQLite's rules and answers.

  connection.py   connect(): the URL as given (TLS for remote hosts), text with NUL kept
  schema.py       the named, recorded migrations (SQLite's tables and columns)
  writer.py       the group-commit writer's hooks: message locks first, retried on deadlock
  rows.py         the rules' RowAccess: the SQL of recording, each message read locked
  queries.py      reads: one message, its events, the list (keyset cursor), stats, export
  pollqueue.py    the poll queue: claims (SKIP LOCKED, a send whole) and leases, its reads
  maintenance.py  prune; backups are pg_dump's

Writes go through this instance's group-commit writer (a sync connection in its thread, one
transaction per batch, receiver.store.rules deciding over PgRows); reads are coroutines on a
psycopg_pool AsyncConnectionPool (RECEIVER_PG_POOL_SIZE connections), opened in open().
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from functools import partial
from typing import Any, TypeVar

import psycopg
import psycopg_pool

from receiver.engine import StatusEvent
from receiver.store import rules
from receiver.store.base import (
    BackupInfo,
    CommitObserver,
    DueMessage,
    MessageFilter,
    PollDone,
    Pruned,
    Recorded,
    Registered,
    Registration,
    StoreUnavailable,
    utcnow,
)
from receiver.store.postgres import maintenance, pollqueue, queries, schema
from receiver.store.postgres.connection import configure, connect, conninfo, describe
from receiver.store.postgres.rows import PgRows, lock_key
from receiver.store.postgres.writer import TRANSACTIONS
from receiver.store.writer import Writer

T = TypeVar("T")
Conn = psycopg.Connection[Any]
AsyncConn = psycopg.AsyncConnection[Any]

__all__ = ["PostgresStore"]


async def _configure_async(conn: AsyncConn) -> None:
    configure(conn)


class PostgresStore:
    """The store on one PostgreSQL database (see receiver.store.base.Store for the contract)."""

    kind = "postgresql"

    def __init__(
        self,
        url: str,
        *,
        unknown_messages: str = "create",
        pool_size: int = 10,
        dlr_grace: float = 300.0,
        dlr_grace_by_provider: Mapping[str, float] | None = None,
    ) -> None:
        self.url = url
        self.pool_size = pool_size
        self.policy = rules.Policy(
            unknown_messages=unknown_messages,
            dlr_grace=dlr_grace,
            dlr_grace_by_provider=dict(dlr_grace_by_provider or {}),
        )
        self._writer: Writer[Conn] | None = None
        self._pool: psycopg_pool.AsyncConnectionPool[AsyncConn] | None = None

    def __repr__(self) -> str:
        return f"PostgresStore({describe(self.url)!r})"

    # -- lifecycle ---------------------------------------------------------------------------

    def _connect(self) -> Conn:
        return connect(self.url, application_name="receiver")

    def exists(self) -> bool:
        try:
            with self._connect() as conn:
                return bool(schema.applied(conn))
        except psycopg.Error:
            return False

    def migrate(self) -> list[str]:
        try:
            conn = self._connect()
        except psycopg.Error as exc:
            raise StoreUnavailable(f"cannot open {describe(self.url)}: {exc}") from exc
        try:
            return schema.migrate(conn)
        except psycopg.Error as exc:
            raise StoreUnavailable(f"cannot migrate {describe(self.url)}: {exc}") from exc
        finally:
            conn.close()

    async def open(self, on_commit: CommitObserver | None = None) -> list[str]:
        """Migrate, start the writer, and open the read pool on this event loop (the app's
        lifespan), which its connections then belong to until close()."""
        applied = await asyncio.to_thread(self.migrate)
        writer = Writer(self._connect, transactions=TRANSACTIONS, on_commit=on_commit)
        pool: psycopg_pool.AsyncConnectionPool[AsyncConn] = psycopg_pool.AsyncConnectionPool(
            conninfo(self.url),
            min_size=1,
            max_size=self.pool_size,
            open=False,
            configure=_configure_async,
            kwargs={"autocommit": True, "application_name": "receiver"},
            name="receiver-read",
        )
        try:
            await asyncio.to_thread(writer.start)
            await pool.open(wait=True)
        except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
            await asyncio.to_thread(writer.stop)
            await pool.close()
            raise StoreUnavailable(f"cannot open {describe(self.url)}: {exc}") from exc
        self._writer, self._pool = writer, pool
        return applied

    async def close(self) -> None:
        if self._writer is not None:
            await asyncio.to_thread(self._writer.stop)  # commits everything already submitted
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    @property
    def write_stats(self) -> tuple[int, int]:
        """(batches committed, jobs committed) since the store was opened."""
        return (self._writer.batches, self._writer.jobs) if self._writer else (0, 0)

    # -- plumbing ----------------------------------------------------------------------------

    async def _write(
        self, fn: Callable[[PgRows], T], messages: Iterable[tuple[str, str]] = ()
    ) -> T:
        """Run `fn` in the writer's next batch; `messages` are the (provider, message_id) it
        will decide, locked at the start of the batch (see writer.Transactions.before_batch)."""
        if self._writer is None:
            raise StoreUnavailable("the store is not open")
        locks = [lock_key(provider, message_id) for provider, message_id in messages]
        try:
            return await self._writer.run(lambda conn: fn(PgRows(conn)), locks)
        except psycopg.Error as exc:  # raised inside a job: it wrote nothing; retry later
            raise StoreUnavailable(f"database write failed: {exc}") from exc

    async def _read(self, fn: Callable[[AsyncConn], Awaitable[T]]) -> T:
        pool = self._pool
        if pool is None:
            raise StoreUnavailable("the store is not open")
        try:
            for attempt in (1, 2):
                async with pool.connection() as conn:
                    try:
                        return await fn(conn)
                    except psycopg.OperationalError:
                        # A pooled connection the server dropped (a restart, a failover) is
                        # found out by using it; the pool discards it, and a read may run again.
                        if attempt == 2 or not conn.broken:
                            raise
        except psycopg_pool.PoolClosed as exc:
            raise StoreUnavailable("the store is closing") from exc
        except psycopg.Error as exc:  # PoolTimeout included: every connection busy or gone
            raise StoreUnavailable(f"database read failed: {exc}") from exc
        raise AssertionError("unreachable")

    # -- writes ------------------------------------------------------------------------------

    async def record(self, events: Sequence[StatusEvent]) -> list[Recorded]:
        return await self._write(
            lambda rows: [rules.record(rows, self.policy, e) for e in events],
            [(e.provider, e.message_id) for e in events],
        )

    async def register(self, registrations: Sequence[Registration]) -> list[Registered]:
        return await self._write(
            lambda rows: [rules.register(rows, self.policy, r) for r in registrations],
            [(r.provider, r.message_id) for r in registrations],
        )

    async def check_writable(self) -> None:
        def touch(rows: PgRows) -> None:
            rows.conn.execute(
                "INSERT INTO _receiver_health (id, checked_at) VALUES (1, %s) "
                "ON CONFLICT (id) DO UPDATE SET checked_at = EXCLUDED.checked_at",
                (utcnow(),),
            )

        await self._write(touch)

    # -- the poll queue ----------------------------------------------------------------------

    async def claim_due(
        self,
        provider: str,
        *,
        now: str,
        limit: int,
        lease_until: str,
        owner: str,
        group_of: Callable[[str], str | None] | None = None,
    ) -> list[DueMessage]:
        return await self._write(
            partial(
                rules.claim_due,
                provider=provider,
                now=now,
                limit=limit,
                lease_until=lease_until,
                owner=owner,
                group_of=group_of,
            )
        )

    async def finish_polls(
        self, owner: str, events: Sequence[StatusEvent], done: Sequence[PollDone]
    ) -> list[Recorded]:
        return await self._write(
            lambda rows: rules.finish_polls(rows, self.policy, owner, events, done),
            [(e.provider, e.message_id) for e in events]
            + [(d.message.provider, d.message.message_id) for d in done],
        )

    async def queued_providers(self) -> list[str]:
        return await self._read(pollqueue.queued_providers)

    async def next_due(self, provider: str) -> str | None:
        return await self._read(partial(pollqueue.next_due, provider=provider))

    async def due_count(self, provider: str, now: str) -> int:
        return await self._read(partial(pollqueue.due_count, provider=provider, now=now))

    async def count_by_status(self) -> dict[str, int]:
        return await self._read(queries.count_by_status)

    # -- reads -------------------------------------------------------------------------------

    async def get_messages(
        self, message_id: str, provider: str | None = None
    ) -> list[dict[str, Any]]:
        return await self._read(
            partial(queries.get_messages, message_id=message_id, provider=provider)
        )

    async def get_events(self, provider: str, message_id: str) -> list[dict[str, Any]]:
        return await self._read(
            partial(queries.get_events, provider=provider, message_id=message_id)
        )

    async def list_messages(self, f: MessageFilter) -> tuple[list[dict[str, Any]], int | None]:
        return await self._read(partial(queries.list_messages, f=f))

    async def stats(self, f: MessageFilter) -> dict[str, Any]:
        async def query(conn: AsyncConn) -> dict[str, Any]:
            # One snapshot, so counts and percentiles describe the same messages.
            async with conn.transaction():
                await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                return await queries.stats(conn, f)

        return await self._read(query)

    # -- operations: export, retention, backup -----------------------------------------------

    async def export_messages(
        self, f: MessageFilter, *, max_rows: int, chunk_size: int = 1000
    ) -> AsyncIterator[list[tuple[Any, ...]]]:
        """Newest first, one short keyset query per chunk (no transaction held open while a
        slow client downloads); keyed on id, so each row is sent once while messages arrive."""
        where, params = queries.filter_sql(f)
        before: int | None = None
        sent = 0
        while sent < max_rows:
            size = min(chunk_size, max_rows - sent)
            rows = await self._read(
                partial(queries.export_chunk, where=where, params=params, before=before, size=size)
            )
            if not rows:
                return
            before = rows[-1][0]
            sent += len(rows)
            yield [row[1:] for row in rows]
            if len(rows) < size:
                return

    async def prune(self, older_than: str, *, batch_size: int = 500) -> Pruned:
        # Candidates found on a read connection, oldest final first on their own index; each
        # batch of deletes is one short write, so callbacks are committed between batches.
        messages = events = batches = 0
        after = ("", 0)
        while True:
            found = await self._read(
                partial(
                    maintenance.prunable_ids,
                    after=after,
                    older_than=older_than,
                    batch_size=batch_size,
                )
            )
            if not found:
                return Pruned(messages, events, batches)
            after = found[-1]
            ids = [row_id for _, row_id in found]
            deleted, deleted_events = await self._write(
                lambda rows, ids=ids: maintenance.delete_messages(rows.conn, ids, older_than)  # type: ignore[misc]
            )
            messages += deleted
            events += deleted_events
            batches += 1

    def backup(self, target: str) -> BackupInfo:
        raise StoreUnavailable(maintenance.BACKUP_ADVICE)
