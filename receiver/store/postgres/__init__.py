"""The PostgreSQL store: several instances on one database, with SQLite's rules and answers.

  connection.py   connect(): the URL as given (TLS for remote hosts), text with NUL kept
  schema.py       the named, recorded migrations (SQLite's tables and columns)
  writer.py       the group-commit writer's hooks: message locks first, retried on deadlock
  rows.py         the rules' RowAccess: the SQL of recording, each message read locked
  queries.py      reads: one message, its events, the list (keyset cursor), stats, export
  pollqueue.py    the poll queue: claims (SKIP LOCKED, a send whole) and leases, its reads
  sends.py        sends registered whole: their sweeps' statements, and the summary
  dashboard.py    the dashboard's reads (receiver.store.dashboard's SQL)
  maintenance.py  prune; backups are pg_dump's
  ledger.py       `receiver verify`: pages of messages with their events, a repair's read

The store's methods are receiver.store.facade.RulesStore's, over these modules. Writes go
through this instance's group-commit writer (receiver.store.writer with writer.py's hooks: a
sync connection in its thread, one transaction per batch, receiver.store.rules deciding over
PgRows); reads are coroutines on a psycopg_pool AsyncConnectionPool (RECEIVER_PG_POOL_SIZE
connections), opened in open().
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import psycopg
import psycopg_pool

from receiver.store.base import BackupInfo, CommitObserver, StoreUnavailable
from receiver.store.facade import RulesStore
from receiver.store.postgres import (
    changelog,
    dashboard,
    ledger,
    maintenance,
    notify,
    pollqueue,
    queries,
    schema,
    sends,
)
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


class PostgresStore(RulesStore[PgRows]):
    """The store on one PostgreSQL database (see receiver.store.base.Store for the contract)."""

    kind = "postgresql"
    rows = PgRows
    queries = queries
    pollqueue = pollqueue
    sends = sends
    maintenance = maintenance
    changelog = changelog
    ledger = ledger
    dashboard = dashboard
    job_errors = (psycopg.Error,)

    def __init__(
        self,
        url: str,
        *,
        unknown_messages: str = "create",
        pool_size: int = 10,
        dlr_grace: float = 300.0,
        dlr_grace_by_provider: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__(
            unknown_messages=unknown_messages,
            dlr_grace=dlr_grace,
            dlr_grace_by_provider=dlr_grace_by_provider,
        )
        self.url = url
        self.pool_size = pool_size
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

    # -- plumbing ----------------------------------------------------------------------------

    def _locks(self, messages: Iterable[tuple[str, str]]) -> Sequence[str]:
        """Other instances write the same messages: a batch locks those it decides first
        (see the writer's PostgreSQL hooks, writer.Transactions.before_batch)."""
        return [lock_key(provider, message_id) for provider, message_id in messages]

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

    async def listen(
        self,
        changed: Callable[[list[tuple[str, str]]], None],
        changed_any: Callable[[], None],
    ) -> None:
        """Every instance's commits, through LISTEN (receiver.store.postgres.notify)."""
        await notify.listen(self.url, changed, changed_any)

    # -- operations: backup (the rest is RulesStore's) ----------------------------------------

    def backup(self, target: str) -> BackupInfo:
        raise StoreUnavailable(maintenance.BACKUP_ADVICE)
