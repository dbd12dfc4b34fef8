"""The SQLite store: one file, writes through the group-commit writer (receiver.store.writer)
running the rules (receiver.store.rules) over rows.SQLiteRows, reads on their own connections.

  connection.py   connect(): the pragmas every connection gets (WAL, FULL sync, busy timeout)
  schema.py       the named, recorded migrations
  rows.py         the rules' RowAccess: the SQL of recording
  queries.py      reads: one message, its events, the list (keyset cursor), stats, export
  pollqueue.py    the poll queue: claims and leases, and its reads
  sends.py        sends registered whole: their sweeps' statements, and the summary
  dashboard.py    the dashboard's reads (receiver.store.dashboard's SQL)
  maintenance.py  prune and backup
  ledger.py       `receiver verify`: pages of messages with their events, a repair's read

The store's methods are receiver.store.facade.RulesStore's, over these modules; what is left
here is the file's lifecycle and the pool of read connections.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from receiver.store.base import BackupInfo, CommitObserver, StoreUnavailable
from receiver.store.facade import RulesStore
from receiver.store.sqlite import (
    changelog,
    counts,
    dashboard,
    ledger,
    maintenance,
    pollqueue,
    queries,
    schema,
    sends,
)
from receiver.store.sqlite.connection import connect
from receiver.store.sqlite.rows import SQLiteRows
from receiver.store.writer import Writer

__all__ = ["SQLiteStore", "connect", "schema"]

T = TypeVar("T")


class SQLiteStore(RulesStore[SQLiteRows]):
    """The store on one SQLite file (see receiver.store.base.Store for the contract)."""

    kind = "sqlite"
    rows = SQLiteRows
    queries = queries
    pollqueue = pollqueue
    sends = sends
    maintenance = maintenance
    changelog = changelog
    ledger = ledger
    dashboard = dashboard
    job_errors = (sqlite3.OperationalError,)  # disk full, I/O error

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
        super().__init__(
            unknown_messages=unknown_messages,
            dlr_grace=dlr_grace,
            dlr_grace_by_provider=dlr_grace_by_provider,
        )
        self.path = path
        self.busy_timeout_ms = busy_timeout_ms
        self._reader_count = readers
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
        self._writer = Writer(
            self._connect, transactions=counts.STORE_TRANSACTIONS, on_commit=on_commit
        )
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

    # -- plumbing ----------------------------------------------------------------------------

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

    async def _read_point(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """On the event loop, on a read connection of its own: a lookup by an index is tens
        of microseconds of SQLite's work, less than handing it to a reading thread and back,
        where the threads and the loop also fought over the GIL (GET /v1/messages/{id}'s p99).
        A WAL reader never waits for the writer; should it meet a lock anyway (a recovery
        under way), the read goes to the threads, which may wait for it."""
        if self._readers is None:
            raise StoreUnavailable("the store is not open")
        conn: sqlite3.Connection | None = getattr(self._local, "loop_conn", None)
        if conn is None:
            conn = self._local.loop_conn = self._connect(read_only=True)
            conn.execute("PRAGMA busy_timeout = 0")  # never sleep on the loop
            with self._lock:
                self._read_conns.append(conn)
        try:
            return fn(conn)
        except sqlite3.OperationalError:
            return await self._read(fn)

    # -- operations: backup (the rest is RulesStore's) ----------------------------------------

    def backup(self, target: str) -> BackupInfo:
        return maintenance.backup(self.path, target, busy_timeout_ms=self.busy_timeout_ms)
