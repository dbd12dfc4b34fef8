"""The SQLite store: writes through the group-commit writer, reads on their own connections."""

from __future__ import annotations

import asyncio
import json
import math
import sqlite3
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from receiver import engine
from receiver.engine import Outcome, Status
from receiver.providers.base import StatusEvent
from receiver.store import schema
from receiver.store.base import (
    MessageFilter,
    Recorded,
    Registered,
    Registration,
    utcnow,
)
from receiver.store.writer import StoreUnavailable, Writer

T = TypeVar("T")

_MESSAGE_COLUMNS = (
    "id, provider, message_id, account, status, provider_status, error_code, to_number, "
    "from_number, metadata, registered, is_final, final_via, created_at, updated_at, sent_at, "
    "final_at"
)
_EVENT_COLUMNS = (
    "id, source, provider_status, status, previous_status, outcome, error_code, event_time, "
    "received_at, resolved_at, dedupe_key, headers, body"
)


def connect(path: str, *, busy_timeout_ms: int = 5000) -> sqlite3.Connection:
    """A connection with the pragmas every connection needs (WAL, FULL sync, busy timeout).

    Autocommit mode (isolation_level=None): transactions are begun explicitly, so a write
    batch is exactly one BEGIN IMMEDIATE ... COMMIT.
    """
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


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
    ) -> None:
        self.path = path
        self.unknown_messages = unknown_messages
        self.busy_timeout_ms = busy_timeout_ms
        self._writer = Writer(self._connect)
        self._readers = ThreadPoolExecutor(readers, thread_name_prefix="receiver-read")
        self._local = threading.local()
        self._read_conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        return connect(self.path, busy_timeout_ms=self.busy_timeout_ms)

    def migrate(self) -> list[str]:
        """Create or upgrade the schema; return the migrations applied."""
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        conn = self._connect()
        try:
            return schema.migrate(conn)
        finally:
            conn.close()

    def open(self) -> list[str]:
        applied = self.migrate()
        self._writer.start()
        return applied

    def close(self) -> None:
        self._writer.stop()
        self._readers.shutdown(wait=True)
        with self._lock:
            for conn in self._read_conns:
                conn.close()
            self._read_conns.clear()

    @property
    def write_stats(self) -> tuple[int, int]:
        """(batches committed, jobs committed) since start."""
        return self._writer.batches, self._writer.jobs

    # -- plumbing ----------------------------------------------------------------------------

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await asyncio.wrap_future(self._writer.submit(fn))

    def _read_conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
            with self._lock:
                self._read_conns.append(conn)
        return conn

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._readers, lambda: fn(self._read_conn()))
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(f"database read failed: {exc}") from exc

    # -- writes ------------------------------------------------------------------------------

    async def record(self, events: Sequence[StatusEvent]) -> list[Recorded]:
        return await self._write(lambda conn: [self._record_one(conn, ev) for ev in events])

    def _record_one(self, conn: sqlite3.Connection, ev: StatusEvent) -> Recorded:
        now = utcnow()
        if (
            ev.dedupe_key is not None
            and conn.execute(
                "SELECT 1 FROM events WHERE provider = ? AND dedupe_key = ? LIMIT 1",
                (ev.provider, ev.dedupe_key),
            ).fetchone()
        ):
            row = _message_row(conn, ev.provider, ev.message_id)
            current = row["status"] if row else None
            self._insert_event(
                conn, ev, row["id"] if row else None, current, Outcome.DUPLICATE, now
            )
            return Recorded(ev, Outcome.DUPLICATE, current, current)

        row = _message_row(conn, ev.provider, ev.message_id)
        created = False
        if row is None:
            if self.unknown_messages == "hold":
                self._insert_event(conn, ev, None, None, Outcome.PENDING_UNKNOWN, now)
                return Recorded(ev, Outcome.PENDING_UNKNOWN, None, None)
            row = _insert_message(
                conn,
                ev.provider,
                ev.message_id,
                now,
                registered=False,
                to_number=ev.to_number,
                from_number=ev.from_number,
                account=ev.account,
            )
            created = True
        outcome, new_status = _apply(conn, row, ev, now)
        previous = None if created else row["status"]
        self._insert_event(conn, ev, row["id"], previous, outcome, now)
        return Recorded(ev, outcome, previous, new_status, created=created)

    @staticmethod
    def _insert_event(
        conn: sqlite3.Connection,
        ev: StatusEvent,
        message_pk: int | None,
        previous: str | None,
        outcome: Outcome,
        now: str,
    ) -> None:
        conn.execute(
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
                previous,
                outcome.value,
                ev.error_code,
                ev.account,
                ev.to_number,
                ev.from_number,
                ev.event_time,
                now,
                ev.dedupe_key,
                json.dumps(dict(ev.headers)) if ev.headers else None,
                ev.body,
            ),
        )

    async def register(self, registrations: Sequence[Registration]) -> list[Registered]:
        return await self._write(
            lambda conn: [self._register_one(conn, reg) for reg in registrations]
        )

    def _register_one(self, conn: sqlite3.Connection, reg: Registration) -> Registered:
        now = utcnow()
        metadata = json.dumps(reg.metadata, separators=(",", ":")) if reg.metadata else None
        row = _message_row(conn, reg.provider, reg.message_id)
        if row is None:
            row = _insert_message(
                conn,
                reg.provider,
                reg.message_id,
                now,
                registered=True,
                to_number=reg.to_number,
                from_number=reg.from_number,
                sent_at=reg.sent_at,
                metadata=metadata,
            )
            created = True
        else:
            # Idempotent: the app's facts fill in or correct the record; the status is left
            # to the events.
            conn.execute(
                "UPDATE messages SET registered = 1, "
                "to_number = coalesce(?, to_number), from_number = coalesce(?, from_number), "
                "sent_at = coalesce(?, sent_at), metadata = coalesce(?, metadata), "
                "updated_at = CASE WHEN registered = 1 THEN updated_at ELSE ? END WHERE id = ?",
                (reg.to_number, reg.from_number, reg.sent_at, metadata, now, row["id"]),
            )
            created = False
        # Events that arrived before the registration were held: decide them now, in order.
        pending = conn.execute(
            "SELECT * FROM events WHERE provider = ? AND message_id = ? "
            "AND message_pk IS NULL AND outcome = 'pending_unknown' ORDER BY id",
            (reg.provider, reg.message_id),
        ).fetchall()
        for event_row in pending:
            row = _message_row(conn, reg.provider, reg.message_id)
            assert row is not None
            ev = StatusEvent(
                provider=reg.provider,
                message_id=reg.message_id,
                provider_status=event_row["provider_status"],
                status=Status(event_row["status"]) if event_row["status"] else None,
                source=event_row["source"],
                account=event_row["account"],
                to_number=event_row["to_number"],
                from_number=event_row["from_number"],
                error_code=event_row["error_code"],
                event_time=event_row["event_time"],
            )
            outcome, _ = _apply(conn, row, ev, now)
            conn.execute(
                "UPDATE events SET outcome = ?, message_pk = ?, previous_status = ?, "
                "resolved_at = ? WHERE id = ?",
                (outcome.value, row["id"], row["status"], now, event_row["id"]),
            )
        final = _message_row(conn, reg.provider, reg.message_id)
        assert final is not None
        # Duplicates of held events (same delivery id) belong to the history too.
        conn.execute(
            "UPDATE events SET message_pk = ? WHERE provider = ? AND message_id = ? "
            "AND message_pk IS NULL",
            (final["id"], reg.provider, reg.message_id),
        )
        return Registered(reg.provider, reg.message_id, created, final["status"], len(pending))

    async def check_writable(self) -> None:
        def touch(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT OR REPLACE INTO _receiver_health (id, checked_at) VALUES (1, ?)",
                (utcnow(),),
            )

        await self._write(touch)

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

    async def get_events(self, message_pk: int) -> list[dict[str, Any]]:
        def query(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            rows = conn.execute(
                f"SELECT {_EVENT_COLUMNS} FROM events WHERE message_pk = ? ORDER BY id",
                (message_pk,),
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


# -- helpers shared by the jobs ----------------------------------------------------------------


def _message_row(conn: sqlite3.Connection, provider: str, message_id: str) -> sqlite3.Row | None:
    row: sqlite3.Row | None = conn.execute(
        "SELECT id, status, sent_at FROM messages WHERE provider = ? AND message_id = ?",
        (provider, message_id),
    ).fetchone()
    return row


def _insert_message(
    conn: sqlite3.Connection,
    provider: str,
    message_id: str,
    now: str,
    *,
    registered: bool,
    to_number: str | None = None,
    from_number: str | None = None,
    account: str | None = None,
    sent_at: str | None = None,
    metadata: str | None = None,
) -> sqlite3.Row:
    cur = conn.execute(
        "INSERT INTO messages (provider, message_id, account, status, to_number, from_number, "
        "metadata, registered, is_final, created_at, updated_at, sent_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?)",
        (
            provider,
            message_id,
            account,
            Status.REGISTERED.value,
            to_number,
            from_number,
            metadata,
            int(registered),
            now,
            now,
            sent_at,
        ),
    )
    row = conn.execute(
        "SELECT id, status, sent_at FROM messages WHERE id = ?", (cur.lastrowid,)
    ).fetchone()
    assert row is not None
    return row  # type: ignore[no-any-return]


def _apply(
    conn: sqlite3.Connection, row: sqlite3.Row, ev: StatusEvent, now: str
) -> tuple[Outcome, str]:
    """Decide `ev` against the message `row` and apply it if it wins; return (outcome, status)."""
    outcome = engine.decide(row["status"], ev.status)
    if outcome is not Outcome.APPLIED or ev.status is None:
        return outcome, row["status"]
    status = ev.status
    final = engine.is_final(status)
    # A message's sent time is the app's when registered, else when we first saw it under
    # way; a message first heard of at its final status has no known sent time (and so stays
    # out of the time-to-final statistics rather than counting as instant).
    under_way = engine.RANK[Status.QUEUED] <= engine.RANK[status] <= engine.RANK[Status.SENT]
    sent_at = row["sent_at"] or (now if under_way else None)
    conn.execute(
        "UPDATE messages SET status = ?, provider_status = ?, error_code = ?, updated_at = ?, "
        "sent_at = ?, is_final = ?, final_via = ?, final_at = ?, "
        "to_number = coalesce(to_number, ?), from_number = coalesce(from_number, ?), "
        "account = coalesce(account, ?) WHERE id = ?",
        (
            status.value,
            ev.provider_status,
            ev.error_code,
            now,
            sent_at,
            int(final),
            ev.source if final else None,
            now if final else None,
            ev.to_number,
            ev.from_number,
            ev.account,
            row["id"],
        ),
    )
    return outcome, status.value


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
        "_pk": row["id"],
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
