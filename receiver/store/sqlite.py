"""The SQLite store: writes through the group-commit writer, reads on their own connections."""

from __future__ import annotations

import asyncio
import json
import math
import os
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache, partial
from pathlib import Path
from typing import Any, TypeVar

from receiver import engine
from receiver.engine import MessageState, Outcome, Status, StatusEvent
from receiver.store import rules, schema
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
from receiver.store.writer import Writer

T = TypeVar("T")

_MESSAGE_COLUMNS = (
    "id, provider, message_id, account, status, provider_status, error_code, to_number, "
    "from_number, metadata, registered, is_final, final_via, created_at, updated_at, sent_at, "
    "final_at, final_reason, poll_attempts, last_polled_at, last_poll_result, next_poll_at"
)
_DUE_COLUMNS = (
    "id, provider, message_id, account, status, provider_status, poll_attempts, created_at, sent_at"
)
_EXPORT_COLUMNS = (
    "id, provider, message_id, status, provider_status, error_code, is_final, final_via, "
    "to_number, from_number, account, registered, metadata, created_at, updated_at, sent_at, "
    "final_at, final_reason"
)
# A final message's age is taken from its final time; updated_at covers any row without one.
_PRUNABLE = "is_final = 1 AND coalesce(final_at, updated_at) < ?"
_EVENT_COLUMNS = (
    "id, source, provider_status, status, previous_status, outcome, error_code, event_time, "
    "received_at, resolved_at, dedupe_key, headers, body"
)


def connect(
    path: str, *, busy_timeout_ms: int = 5000, read_only: bool = False
) -> sqlite3.Connection:
    """A connection with the pragmas every connection needs (WAL, FULL sync, busy timeout).

    Autocommit mode (isolation_level=None): transactions are begun explicitly, so a write
    batch is exactly one BEGIN IMMEDIATE ... COMMIT.
    """
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    _enable_wal(conn, busy_timeout_ms)
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    if read_only:
        conn.execute("PRAGMA query_only = ON")  # readers never write, by construction
    return conn


def _enable_wal(conn: sqlite3.Connection, busy_timeout_ms: int) -> None:
    # Switching a new file to WAL needs an exclusive lock, and SQLite answers "locked" at once
    # rather than calling the busy handler, so processes starting together retry here.
    deadline = time.monotonic() + busy_timeout_ms / 1000
    while True:
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.005)
            continue
        if str(mode).lower() != "wal":
            raise sqlite3.OperationalError(f"could not enable WAL (journal_mode is {mode})")
        return


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
        self._writer: Writer | None = None
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
        self._writer = Writer(self._connect, on_commit=on_commit)
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
        def query(conn: sqlite3.Connection) -> list[str]:
            # One index seek per provider (a skip scan), however many messages wait.
            found: list[str] = []
            while True:
                row = conn.execute(
                    "SELECT min(provider) FROM messages "
                    "WHERE next_poll_at IS NOT NULL AND provider > ?",
                    (found[-1] if found else "",),
                ).fetchone()
                if row is None or row[0] is None:
                    return found
                found.append(row[0])

        return await self._read(query)

    async def next_due(self, provider: str) -> str | None:
        def query(conn: sqlite3.Connection) -> str | None:
            row = conn.execute(
                "SELECT min(next_poll_at) FROM messages "
                "WHERE provider = ? AND next_poll_at IS NOT NULL",
                (provider,),
            ).fetchone()
            return row[0] if row else None

        return await self._read(query)

    async def due_count(self, provider: str, now: str) -> int:
        def query(conn: sqlite3.Connection) -> int:
            row = conn.execute(
                "SELECT count(*) FROM messages "
                "WHERE provider = ? AND next_poll_at IS NOT NULL AND next_poll_at <= ?",
                (provider, now),
            ).fetchone()
            return int(row[0])

        return await self._read(query)

    # -- reads -------------------------------------------------------------------------------

    async def get_messages(
        self, message_id: str, provider: str | None = None
    ) -> list[dict[str, Any]]:
        def query(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            sql = f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE message_id = ?"
            params: list[Any] = [message_id]
            if provider is not None:
                sql += " AND provider = ?"
                params.append(provider)
            return [_message_dict(r) for r in conn.execute(sql + " LIMIT 10", params)]

        return await self._read(query)

    async def get_events(self, provider: str, message_id: str) -> list[dict[str, Any]]:
        def query(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            rows = conn.execute(
                f"SELECT {_EVENT_COLUMNS} FROM events WHERE message_pk = "
                "(SELECT id FROM messages WHERE provider = ? AND message_id = ?) ORDER BY id",
                (provider, message_id),
            )
            return [_event_dict(r) for r in rows]

        return await self._read(query)

    async def list_messages(self, f: MessageFilter) -> tuple[list[dict[str, Any]], int | None]:
        """Newest first; keyset-paginated on id, so inserts never shift a page."""

        def query(conn: sqlite3.Connection) -> tuple[list[dict[str, Any]], int | None]:
            where, params = _filter_sql(f)
            if f.before_id is not None:
                where.append("id < ?")
                params.append(f.before_id)
            sql = f"SELECT {_MESSAGE_COLUMNS} FROM messages"
            if where:
                sql += " WHERE " + " AND ".join(where)
            sql += " ORDER BY id DESC LIMIT ?"
            params.append(f.limit + 1)
            rows = conn.execute(sql, params).fetchall()
            more = len(rows) > f.limit
            rows = rows[: f.limit]
            next_id = rows[-1]["id"] if more and rows else None
            return [_message_dict(r) for r in rows], next_id

        return await self._read(query)

    async def stats(self, f: MessageFilter) -> dict[str, Any]:
        def query(conn: sqlite3.Connection) -> dict[str, Any]:
            # One read transaction, so counts and percentiles describe the same snapshot.
            conn.execute("BEGIN")
            try:
                return summarize(conn)
            finally:
                conn.execute("COMMIT")

        def summarize(conn: sqlite3.Connection) -> dict[str, Any]:
            where, params = _filter_sql(f)
            clause = (" WHERE " + " AND ".join(where)) if where else ""
            counts = {s.value: 0 for s in Status}
            for status, n in conn.execute(
                f"SELECT status, count(*) FROM messages{clause} GROUP BY status", params
            ):
                counts[status] = n
            total = sum(counts.values())
            final = sum(n for s, n in counts.items() if engine.is_final(s))
            delivered = sum(n for s, n in counts.items() if s in engine.DELIVERED_STATUSES)
            timed = (
                f"SELECT (julianday(final_at) - julianday(sent_at)) * 86400.0 AS seconds "
                f"FROM messages{clause}{' AND' if where else ' WHERE'} is_final = 1 "
                "AND sent_at IS NOT NULL AND final_at IS NOT NULL"
            )
            n_timed = conn.execute(f"SELECT count(*) FROM ({timed})", params).fetchone()[0]

            def percentile(p: float) -> float | None:
                if n_timed == 0:
                    return None
                rank = max(0, math.ceil(p * n_timed) - 1)  # nearest-rank percentile
                value = conn.execute(
                    f"SELECT seconds FROM ({timed}) ORDER BY seconds LIMIT 1 OFFSET ?",
                    [*params, rank],
                ).fetchone()[0]
                return round(float(value), 3)

            return {
                "total": total,
                "by_status": counts,
                "final": final,
                "delivered": delivered,
                "delivery_rate": round(delivered / final, 4) if final else None,
                "time_to_final_seconds": {
                    "count": n_timed,
                    "median": percentile(0.5),
                    "p95": percentile(0.95),
                },
            }

        return await self._read(query)

    # -- operations: export, retention, backup -----------------------------------------------

    async def export_messages(
        self, f: MessageFilter, *, max_rows: int, chunk_size: int = 1000
    ) -> AsyncIterator[list[tuple[Any, ...]]]:
        """Newest first, one short keyset query per chunk on the read connections.

        Each chunk is its own read rather than one long transaction: a slow download then never
        pins an old snapshot, which would stop checkpoints and let the WAL file grow meanwhile.
        Keyed on id, so each row is sent once even while messages arrive.
        """
        where, params = _filter_sql(f)
        before: int | None = None
        sent = 0
        while sent < max_rows:
            size = min(chunk_size, max_rows - sent)
            rows = await self._read(partial(_export_chunk, where, params, before, size))
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
            found = await self._read(partial(_prunable_ids, after, older_than, batch_size))
            ids = [row_id for _, row_id in found]
            if not ids:
                return Pruned(messages, events, batches)
            after = found[-1]
            deleted, deleted_events = await self._write(partial(_delete_messages, ids, older_than))
            messages += deleted
            events += deleted_events
            batches += 1

    def backup(self, target: str) -> BackupInfo:
        """SQLite's online backup API in one step: one read transaction, so the copy is a
        consistent snapshot, and under WAL the service's writers are not blocked meanwhile."""
        if not Path(self.path).is_file():
            raise StoreUnavailable(f"there is no database at {self.path!r}")
        dest = Path(target)
        if not dest.parent.is_dir():
            raise StoreUnavailable(
                f"cannot back up to {target!r}: {dest.parent} is not a directory"
            )
        partial_path = dest.with_name(dest.name + ".partial")
        try:
            partial_path.unlink(missing_ok=True)
            source = self._connect(read_only=True)
        except (OSError, sqlite3.Error) as exc:
            raise StoreUnavailable(f"cannot back up {self.path!r}: {exc}") from exc
        try:
            copy = sqlite3.connect(partial_path)
            try:
                source.backup(copy)
                messages = copy.execute("SELECT count(*) FROM messages").fetchone()[0]
            finally:
                copy.close()
            with open(partial_path, "rb") as written:
                os.fsync(written.fileno())  # on disk before it takes the target's name
            os.replace(partial_path, dest)
            _fsync_directory(dest.parent)  # the new name, too, survives a crash
        except (OSError, sqlite3.Error) as exc:
            partial_path.unlink(missing_ok=True)
            raise StoreUnavailable(f"backup to {target!r} failed: {exc}") from exc
        finally:
            source.close()
        return BackupInfo(str(dest), dest.stat().st_size, messages)

    async def count_by_status(self) -> dict[str, int]:
        def query(conn: sqlite3.Connection) -> dict[str, int]:
            # Kept by triggers (migration 0003): a few rows, however many messages there are.
            rows = conn.execute("SELECT status, n FROM message_status_counts WHERE n > 0")
            return {status: n for status, n in rows}

        return await self._read(query)


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- the rules' row access over one sqlite3 write connection ----------------------------------

_CURRENT_COLUMNS = (
    "id, status, sent_at, final_at, final_via, provider_status, account, to_number, "
    "from_number, registered, created_at, updated_at, poll_attempts, poll_lease, next_poll_at"
)


def _current(row: sqlite3.Row) -> rules.Current:
    return rules.Current(
        row["id"],
        MessageState(Status(row["status"]), row["sent_at"], row["final_at"], row["final_via"]),
        provider_status=row["provider_status"],
        account=row["account"],
        to_number=row["to_number"],
        from_number=row["from_number"],
        registered=bool(row["registered"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        poll_attempts=row["poll_attempts"],
        poll_lease=row["poll_lease"],
        next_poll_at=row["next_poll_at"],
    )


@lru_cache(maxsize=64)
def _update_sql(columns: tuple[str, ...]) -> str:
    unknown = set(columns) - rules.MESSAGE_COLUMNS
    if unknown:
        raise ValueError(f"not a column the rules write: {sorted(unknown)}")
    return f"UPDATE messages SET {', '.join(f'{c} = ?' for c in columns)} WHERE id = ?"


@lru_cache(maxsize=16)
def _insert_sql(columns: tuple[str, ...]) -> str:
    unknown = set(columns) - rules.MESSAGE_COLUMNS
    if unknown:
        raise ValueError(f"not a column the rules write: {sorted(unknown)}")
    marks = ", ".join("?" * len(columns))
    return f"INSERT INTO messages ({', '.join(columns)}) VALUES ({marks})"


def _value(column: str, value: Any) -> Any:
    if column == "metadata" and value is not None:
        return json.dumps(value, separators=(",", ":"))
    return value


class SQLiteRows:
    """rules.RowAccess on the writer's connection, inside its BEGIN IMMEDIATE batch: SQLite
    has one writer at a time, so a row read here holds until the commit without a lock."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def message_for_event(self, ev: StatusEvent) -> tuple[rules.Current | None, bool]:
        row = self.conn.execute(
            f"SELECT {', '.join('m.' + c for c in _CURRENT_COLUMNS.split(', '))}, "
            "(? IS NOT NULL AND EXISTS (SELECT 1 FROM events "
            "WHERE provider = ? AND dedupe_key = ? AND message_id = ?)) AS seen "
            "FROM (SELECT 1) LEFT JOIN messages m ON m.provider = ? AND m.message_id = ?",
            (ev.dedupe_key, ev.provider, ev.dedupe_key, ev.message_id, ev.provider, ev.message_id),
        ).fetchone()
        seen = bool(row["seen"])
        return (None if row["id"] is None else _current(row)), seen

    def message(self, provider: str, message_id: str) -> rules.Current | None:
        row = self.conn.execute(
            f"SELECT {_CURRENT_COLUMNS} FROM messages WHERE provider = ? AND message_id = ?",
            (provider, message_id),
        ).fetchone()
        return None if row is None else _current(row)

    def insert_message(self, row: Mapping[str, Any]) -> int:
        columns = tuple(row)
        cur = self.conn.execute(_insert_sql(columns), [_value(c, row[c]) for c in columns])
        assert cur.lastrowid is not None
        return cur.lastrowid

    def update_message(self, pk: int, changes: Mapping[str, Any]) -> None:
        columns = tuple(changes)
        self.conn.execute(_update_sql(columns), [*(_value(c, changes[c]) for c in columns), pk])

    def insert_event(
        self,
        ev: StatusEvent,
        *,
        message_pk: int | None,
        previous_status: str | None,
        outcome: Outcome,
        received_at: str,
    ) -> None:
        self.conn.execute(
            "INSERT INTO events (provider, message_id, message_pk, source, provider_status, "
            "status, previous_status, outcome, error_code, account, to_number, from_number, "
            "event_time, received_at, dedupe_key, headers, body) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                ev.provider,
                ev.message_id,
                message_pk,
                ev.source,
                ev.provider_status,
                ev.status.value if ev.status else None,
                previous_status,
                outcome.value,
                ev.error_code,
                ev.account,
                ev.to_number,
                ev.from_number,
                ev.event_time,
                received_at,
                ev.dedupe_key,
                json.dumps(dict(ev.headers)) if ev.headers else None,
                ev.body,
            ),
        )

    def held_events(self, provider: str, message_id: str) -> list[tuple[int, StatusEvent]]:
        rows = self.conn.execute(
            "SELECT * FROM events WHERE provider = ? AND message_id = ? "
            "AND message_pk IS NULL AND outcome = 'pending_unknown' ORDER BY id",
            (provider, message_id),
        ).fetchall()
        return [(row["id"], _event_from_row(row)) for row in rows]

    def resolve_held(
        self,
        event_id: int,
        *,
        message_pk: int,
        outcome: Outcome,
        previous_status: str,
        resolved_at: str,
    ) -> None:
        self.conn.execute(
            "UPDATE events SET outcome = ?, message_pk = ?, previous_status = ?, "
            "resolved_at = ? WHERE id = ?",
            (outcome.value, message_pk, previous_status, resolved_at, event_id),
        )

    def adopt_events(self, provider: str, message_id: str, message_pk: int) -> None:
        self.conn.execute(
            "UPDATE events SET message_pk = ? WHERE provider = ? AND message_id = ? "
            "AND message_pk IS NULL",
            (message_pk, provider, message_id),
        )

    def due(self, provider: str, now: str, limit: int) -> list[rules.Queued]:
        rows = self.conn.execute(
            f"SELECT {_DUE_COLUMNS}, poll_lease, next_poll_at FROM messages "
            "WHERE provider = ? AND next_poll_at IS NOT NULL AND next_poll_at <= ? "
            "ORDER BY next_poll_at LIMIT ?",
            (provider, now, limit),
        ).fetchall()
        return [_queued(row) for row in rows]

    def group(self, provider: str, prefix: str) -> list[rules.Queued]:
        # The prefix range is a range of the (provider, message_id) index:
        # "<prefix>" .. "<prefix>\U0010ffff" holds exactly the ids starting with it.
        rows = self.conn.execute(
            f"SELECT {_DUE_COLUMNS}, poll_lease, next_poll_at FROM messages "
            "WHERE provider = ? AND message_id >= ? AND message_id < ? "
            "AND next_poll_at IS NOT NULL",
            (provider, prefix, prefix + "\U0010ffff"),
        ).fetchall()
        return [_queued(row) for row in rows]

    def put_off(self, until: Sequence[tuple[int, str]]) -> None:
        self.conn.executemany(
            "UPDATE messages SET next_poll_at = ? WHERE id = ?", [(at, pk) for pk, at in until]
        )

    def lease(self, pks: Sequence[int], owner: str, until: str) -> None:
        self.conn.executemany(
            "UPDATE messages SET next_poll_at = ?, poll_lease = ? WHERE id = ?",
            [(until, owner, pk) for pk in pks],
        )


def _queued(row: sqlite3.Row) -> rules.Queued:
    return rules.Queued(DueMessage(*tuple(row)[:9]), row["poll_lease"], row["next_poll_at"])


def _event_from_row(row: sqlite3.Row) -> StatusEvent:
    """A held event, rebuilt from its row to be decided now."""
    return StatusEvent(
        provider=row["provider"],
        message_id=row["message_id"],
        provider_status=row["provider_status"],
        status=Status(row["status"]) if row["status"] else None,
        source=row["source"],
        account=row["account"],
        to_number=row["to_number"],
        from_number=row["from_number"],
        error_code=row["error_code"],
        event_time=row["event_time"],
    )


def _filter_sql(f: MessageFilter) -> tuple[list[str], list[Any]]:
    where: list[str] = []
    params: list[Any] = []
    for column, value in (
        ("status", f.status),
        ("provider", f.provider),
        ("to_number", f.to_number),
    ):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    if f.since is not None:
        where.append("created_at >= ?")
        params.append(f.since)
    if f.until is not None:
        where.append("created_at < ?")
        params.append(f.until)
    return where, params


def _export_chunk(
    where: list[str], params: list[Any], before: int | None, size: int, conn: sqlite3.Connection
) -> list[tuple[Any, ...]]:
    """Up to `size` rows older than id `before`: (id, *EXPORT_COLUMNS values)."""
    where = [*where, "id < ?"] if before is not None else where
    params = [*params, before] if before is not None else params
    sql = f"SELECT {_EXPORT_COLUMNS} FROM messages"
    if where:
        sql += " WHERE " + " AND ".join(where)
    rows = conn.execute(sql + " ORDER BY id DESC LIMIT ?", [*params, size]).fetchall()
    return [
        (*row[:6], bool(row["is_final"]), *row[7:11], bool(row["registered"]), *row[12:])
        for row in rows
    ]


def _prunable_ids(
    after: tuple[str, int], older_than: str, batch_size: int, conn: sqlite3.Connection
) -> list[tuple[str, int]]:
    """The next prunable messages' (final time, id) after `after`, oldest first, on
    idx_messages_prunable (the expression and the WHERE match the index's exactly)."""
    return [
        (row[0], row[1])
        for row in conn.execute(
            "SELECT coalesce(final_at, updated_at), id FROM messages "
            "WHERE is_final = 1 AND coalesce(final_at, updated_at) < ? "
            "AND (coalesce(final_at, updated_at), id) > (?, ?) "
            "ORDER BY coalesce(final_at, updated_at), id LIMIT ?",
            (older_than, after[0], after[1], batch_size),
        )
    ]


def _delete_messages(ids: list[int], older_than: str, conn: sqlite3.Connection) -> tuple[int, int]:
    """Delete those of `ids` still prunable (a late callback may have moved one), with their
    events; (messages, events) deleted."""
    marks = ",".join("?" * len(ids))
    still = [
        row[0]
        for row in conn.execute(
            f"SELECT id FROM messages WHERE id IN ({marks}) AND {_PRUNABLE}", (*ids, older_than)
        )
    ]
    if not still:
        return 0, 0
    marks = ",".join("?" * len(still))
    events = conn.execute(f"DELETE FROM events WHERE message_pk IN ({marks})", still).rowcount
    conn.execute(f"DELETE FROM messages WHERE id IN ({marks})", still)
    return len(still), events


def _message_dict(row: sqlite3.Row) -> dict[str, Any]:
    return {
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
    }


def _event_dict(row: sqlite3.Row) -> dict[str, Any]:
    return {
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
