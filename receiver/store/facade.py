"""What both stores do the same way: the rules' writes through the group-commit writer, and
the reads and operations built from the dialect's modules.

A store is a RulesStore plus its differences (as Django's database backends: the shared part
is the default, a dialect a short list of overrides): how it connects, opens and closes, runs
a read (`_read`), its row access (`rows`), and its queries, pollqueue and maintenance modules,
whose functions take the connection first.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from functools import partial
from types import ModuleType
from typing import Any, Generic, TypeVar

from receiver.engine import StatusEvent
from receiver.store import rules
from receiver.store.base import (
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
from receiver.store.dashboard import WindowFigures
from receiver.store.rows import SqlRows, marked
from receiver.store.writer import Writer

T = TypeVar("T")
R = TypeVar("R", bound=SqlRows)

_TOUCH = (
    "INSERT INTO _receiver_health (id, checked_at) VALUES (1, ?) "
    "ON CONFLICT (id) DO UPDATE SET checked_at = excluded.checked_at"
)


class RulesStore(Generic[R]):
    """The Store contract (receiver.store.base.Store) over a dialect's modules."""

    kind: str
    rows: type[R]  # the rules' row access on the writer's connection
    queries: ModuleType
    pollqueue: ModuleType
    maintenance: ModuleType
    dashboard: ModuleType  # the dashboard's reads (receiver.store.dashboard's SQL)
    # What a job may raise when the database failed it (it wrote nothing): a 503, retry later.
    job_errors: tuple[type[Exception], ...]

    def __init__(
        self,
        *,
        unknown_messages: str,
        dlr_grace: float,
        dlr_grace_by_provider: Mapping[str, float] | None,
    ) -> None:
        self.policy = rules.Policy(
            unknown_messages=unknown_messages,
            dlr_grace=dlr_grace,
            dlr_grace_by_provider=dict(dlr_grace_by_provider or {}),
        )
        self._writer: Writer[Any] | None = None

    async def open(self, on_commit: CommitObserver | None = None) -> list[str]:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    @property
    def write_stats(self) -> tuple[int, int]:
        """(batches committed, jobs committed) since the store was opened."""
        return (self._writer.batches, self._writer.jobs) if self._writer else (0, 0)

    # -- plumbing ----------------------------------------------------------------------------

    def _locks(self, messages: Iterable[tuple[str, str]]) -> Sequence[str]:
        """The lock keys of the (provider, message_id) a write decides; none by default."""
        return ()

    async def _write(self, fn: Callable[[R], T], messages: Iterable[tuple[str, str]] = ()) -> T:
        """Run `fn` over the rows in the writer's next batch; `messages` are the (provider,
        message_id) it will decide, for a dialect that locks them first."""
        writer = self._writer
        if writer is None:
            raise StoreUnavailable("the store is not open")
        rows = self.rows
        try:
            return await writer.run(lambda conn: fn(rows(conn)), self._locks(messages))
        except self.job_errors as exc:  # raised inside a job: it wrote nothing; retry later
            raise StoreUnavailable(f"database write failed: {exc}") from exc

    async def _read(self, fn: Callable[[Any], Any]) -> Any:
        """Run a read function of the dialect's modules on a read connection."""
        raise NotImplementedError

    # -- writes: the rules (receiver.store.rules) over the dialect's rows ----------------------

    async def record(self, events: Sequence[StatusEvent]) -> list[Recorded]:
        policy = self.policy
        return await self._write(
            lambda rows: [rules.record(rows, policy, ev) for ev in events],
            [(ev.provider, ev.message_id) for ev in events],
        )

    async def register(self, registrations: Sequence[Registration]) -> list[Registered]:
        policy = self.policy
        return await self._write(
            lambda rows: [rules.register(rows, policy, reg) for reg in registrations],
            [(reg.provider, reg.message_id) for reg in registrations],
        )

    async def check_writable(self) -> None:
        def touch(rows: R) -> None:
            rows.conn.execute(marked(_TOUCH, rows.mark), (utcnow(),))

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
        # One write transaction: a second claimer, another process included, finds the
        # messages leased until `lease_until` (SQLite: it waits for the write lock; PostgreSQL:
        # it skips the rows locked).
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
        policy = self.policy
        return await self._write(
            lambda rows: rules.finish_polls(rows, policy, owner, events, done),
            [(e.provider, e.message_id) for e in events]
            + [(d.message.provider, d.message.message_id) for d in done],
        )

    async def queued_providers(self) -> list[str]:
        found: list[str] = await self._read(self.pollqueue.queued_providers)
        return found

    async def next_due(self, provider: str) -> str | None:
        due: str | None = await self._read(partial(self.pollqueue.next_due, provider=provider))
        return due

    async def due_count(self, provider: str, now: str) -> int:
        count: int = await self._read(partial(self.pollqueue.due_count, provider=provider, now=now))
        return count

    async def count_by_status(self) -> dict[str, int]:
        counts: dict[str, int] = await self._read(self.queries.count_by_status)
        return counts

    # -- reads -------------------------------------------------------------------------------

    async def get_messages(
        self, message_id: str, provider: str | None = None
    ) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = await self._read(
            partial(self.queries.get_messages, message_id=message_id, provider=provider)
        )
        return found

    async def get_events(self, provider: str, message_id: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = await self._read(
            partial(self.queries.get_events, provider=provider, message_id=message_id)
        )
        return found

    async def list_messages(self, f: MessageFilter) -> tuple[list[dict[str, Any]], int | None]:
        found: tuple[list[dict[str, Any]], int | None] = await self._read(
            partial(self.queries.list_messages, f=f)
        )
        return found

    async def stats(self, f: MessageFilter) -> dict[str, Any]:
        # One snapshot (the dialect's stats opens it), so counts and percentiles agree.
        summary: dict[str, Any] = await self._read(partial(self.queries.stats, f=f))
        return summary

    # -- operations: export, retention -------------------------------------------------------

    async def export_messages(
        self, f: MessageFilter, *, max_rows: int, chunk_size: int = 1000
    ) -> AsyncIterator[list[tuple[Any, ...]]]:
        """Newest first, one short keyset query per chunk on the read connections.

        Each chunk is its own read rather than one long transaction: a slow download then never
        pins an old snapshot (on SQLite, that would stop checkpoints and let the WAL file grow
        meanwhile). Keyed on id, so each row is sent once even while messages arrive.
        """
        where, params = self.queries.filter_sql(f)
        before: int | None = None
        sent = 0
        while sent < max_rows:
            size = min(chunk_size, max_rows - sent)
            rows: list[tuple[Any, ...]] = await self._read(
                partial(
                    self.queries.export_chunk, where=where, params=params, before=before, size=size
                )
            )
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
        delete_messages = self.maintenance.delete_messages
        messages = events = batches = 0
        after = ("", 0)
        while True:
            found: list[tuple[str, int]] = await self._read(
                partial(
                    self.maintenance.prunable_ids,
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
                lambda rows, ids=ids: delete_messages(rows.conn, ids, older_than)  # type: ignore[misc]
            )
            messages += deleted
            events += deleted_events
            batches += 1

    # -- the dashboard's reads (receiver/dashboard/) ------------------------------------------

    async def dashboard_window(
        self, since: str, provider: str | None, chart_chars: int
    ) -> WindowFigures:
        figures: WindowFigures = await self._read(
            partial(self.dashboard.window, since=since, provider=provider, chart_chars=chart_chars)
        )
        return figures

    async def dashboard_queue(self, now: str) -> list[tuple[str, int, int, str | None]]:
        found: list[tuple[str, int, int, str | None]] = await self._read(
            partial(self.dashboard.queue, now=now)
        )
        return found

    async def dashboard_recent(
        self, statuses: tuple[str, ...], since: str, provider: str | None, limit: int
    ) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = await self._read(
            partial(
                self.dashboard.recent,
                statuses=statuses,
                since=since,
                provider=provider,
                limit=limit,
            )
        )
        return found
