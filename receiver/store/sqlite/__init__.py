"""The SQLite store: one file, writes through the group-commit writer (receiver.store.writer)
running the rules (receiver.store.rules) over rows.SQLiteRows, reads on their own connections.

  connection.py   connect(): the pragmas every connection gets (WAL, FULL sync, busy timeout)
  schema.py       the named, recorded migrations
  rows.py         the rules' RowAccess: the SQL of recording
  queries.py      reads: one message, its events, the list (keyset cursor), stats, export
  pollqueue.py    the poll queue: claims and leases, and its reads
  maintenance.py  prune and backup
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

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
from receiver.store.sqlite import maintenance, pollqueue, queries, schema
from receiver.store.sqlite.connection import TRANSACTIONS, connect
from receiver.store.sqlite.rows import SQLiteRows
from receiver.store.writer import Writer

__all__ = ["SQLiteStore", "connect", "schema"]

T = TypeVar("T")


class SQLiteStore:
    """The store on one SQLite file (see receiver.store.base.Store for the contract)."""

    kind = "sqlite"

    def __init__(
        self,
        path: str,
        *,
        unknown_messages: str = "create",
        busy_timeout_ms: int = 5000,
        readers: int = 4,
        dlr_grace: float = 300.0,
        dlr_grace_by_provider: Mapping[str, float] | None = None,
    ) -> None:
        self.path = path
        self.policy = rules.Policy(
            unknown_messages=unknown_messages,
            dlr_grace=dlr_grace,
            dlr_grace_by_provider=dict(dlr_grace_by_provider or {}),
        )
        self.busy_timeout_ms = busy_timeout_ms
        self._reader_count = readers
        self._writer: Writer[sqlite3.Connection] | None = None
        self._readers: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._read_conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------------------

    def _connect(self, *, read_only: bool = False) -> sqlite3.Connection:
        return connect(self.path, busy_timeout_ms=self.busy_timeout_ms, read_only=read_only)

    def exists(self) -> bool:
        return Path(self.path).is_file()

    def migrate(self) -> list[str]:
        """Create or upgrade the schema; return the migrations applied."""
        try:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            conn = self._connect()
        except (OSError, sqlite3.Error) as exc:
            raise StoreUnavailable(f"cannot open {self.path!r}: {exc}") from exc
        try:
            return schema.migrate(conn)
        finally:
            conn.close()

    async def open(self, on_commit: CommitObserver | None = None) -> list[str]:
        applied = await asyncio.to_thread(self.migrate)
        self._writer = Writer(self._connect, transactions=TRANSACTIONS, on_commit=on_commit)
        self._writer.start()
        self._readers = ThreadPoolExecutor(self._reader_count, thread_name_prefix="receiver-read")
        return applied

    async def close(self) -> None:
        await asyncio.to_thread(self._close)

    def _close(self) -> None:
        if self._writer is not None:
            self._writer.stop()  # commits everything already submitted
        readers, self._readers = self._readers, None  # later reads: StoreUnavailable, a 503
        if readers is not None:
            readers.shutdown(wait=True)
        with self._lock:
            for conn in self._read_conns:
                conn.close()
            self._read_conns.clear()
        self._local = threading.local()

    @property
    def write_stats(self) -> tuple[int, int]:
        """(batches committed, jobs committed) since the store was opened."""
        return (self._writer.batches, self._writer.jobs) if self._writer else (0, 0)

    # -- plumbing ----------------------------------------------------------------------------

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._writer is None:
            raise StoreUnavailable("the store is not open")
        try:
            return await self._writer.run(fn)
        except sqlite3.OperationalError as exc:
            # Raised inside a job (disk full, I/O error): the job wrote nothing; retry later.
            raise StoreUnavailable(f"database write failed: {exc}") from exc

    def _read_conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect(read_only=True)
            self._local.conn = conn
            with self._lock:
                self._read_conns.append(conn)
        return conn

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._readers is None:
            raise StoreUnavailable("the store is not open")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._readers, lambda: fn(self._read_conn()))
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(f"database read failed: {exc}") from exc
        except RuntimeError as exc:  # the pool shut down between the check and the call
            raise StoreUnavailable("the store is closing") from exc

    # -- writes: the rules (receiver.store.rules) over SQLiteRows ---------------------------------

    async def record(self, events: Sequence[StatusEvent]) -> list[Recorded]:
        policy = self.policy
        return await self._write(
            lambda conn: [rules.record(SQLiteRows(conn), policy, ev) for ev in events]
        )

    async def register(self, registrations: Sequence[Registration]) -> list[Registered]:
        policy = self.policy
        return await self._write(
            lambda conn: [rules.register(SQLiteRows(conn), policy, reg) for reg in registrations]
        )

    async def check_writable(self) -> None:
        def touch(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT OR REPLACE INTO _receiver_health (id, checked_at) VALUES (1, ?)",
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
        # One write transaction: a second claimer, another process included, waits for the
        # lock and then finds them leased until `lease_until`.
        return await self._write(
            lambda conn: rules.claim_due(
                SQLiteRows(conn),
                provider,
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
        policy = self.policy
        return await self._write(
            lambda conn: rules.finish_polls(SQLiteRows(conn), policy, owner, events, done)
        )

    async def queued_providers(self) -> list[str]:
        return await self._read(pollqueue.queued_providers)

    async def next_due(self, provider: str) -> str | None:
        return await self._read(partial(pollqueue.next_due, provider))

    async def due_count(self, provider: str, now: str) -> int:
        return await self._read(partial(pollqueue.due_count, provider, now))

    # -- reads -------------------------------------------------------------------------------

    async def get_messages(
        self, message_id: str, provider: str | None = None
    ) -> list[dict[str, Any]]:
        return await self._read(partial(queries.get_messages, message_id, provider))

    async def get_events(self, provider: str, message_id: str) -> list[dict[str, Any]]:
        return await self._read(partial(queries.get_events, provider, message_id))

    async def list_messages(self, f: MessageFilter) -> tuple[list[dict[str, Any]], int | None]:
        return await self._read(partial(queries.list_messages, f))

    async def stats(self, f: MessageFilter) -> dict[str, Any]:
        return await self._read(partial(queries.stats, f))

    async def count_by_status(self) -> dict[str, int]:
        return await self._read(queries.count_by_status)

    # -- operations: export, retention, backup -----------------------------------------------

    async def export_messages(
        self, f: MessageFilter, *, max_rows: int, chunk_size: int = 1000
    ) -> AsyncIterator[list[tuple[Any, ...]]]:
        """Newest first, one short keyset query per chunk on the read connections.

        Each chunk is its own read rather than one long transaction: a slow download then never
        pins an old snapshot, which would stop checkpoints and let the WAL file grow meanwhile.
        Keyed on id, so each row is sent once even while messages arrive.
        """
        where, params = queries.filter_sql(f)
        before: int | None = None
        sent = 0
        while sent < max_rows:
            size = min(chunk_size, max_rows - sent)
            rows = await self._read(partial(queries.export_chunk, where, params, before, size))
            if not rows:
                return
            before = rows[-1][0]
            sent += len(rows)
            yield [row[1:] for row in rows]
            if len(rows) < size:
                return

    async def prune(self, older_than: str, *, batch_size: int = 500) -> Pruned:
        # Candidates are found on a read connection, oldest final first on their own index, so
        # the writer holds its lock for one small batch of deletes at a time, and callbacks
        # queued meanwhile are committed between batches.
        messages = events = batches = 0
        after = ("", 0)
        while True:
            found = await self._read(
                partial(maintenance.prunable_ids, after, older_than, batch_size)
            )
            ids = [row_id for _, row_id in found]
            if not ids:
                return Pruned(messages, events, batches)
            after = found[-1]
            deleted, deleted_events = await self._write(
                partial(maintenance.delete_messages, ids, older_than)
            )
            messages += deleted
            events += deleted_events
            batches += 1

    def backup(self, target: str) -> BackupInfo:
        return maintenance.backup(self.path, target, busy_timeout_ms=self.busy_timeout_ms)
