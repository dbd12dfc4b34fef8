"""What both stores do the same way: the rules' writes through the group-commit writer, and
the reads and operations built from the dialect's modules.

A store is a RulesStore plus its differences (as Django's database backends: the shared part
is the default, a dialect a short list of overrides): how it connects, opens and closes, runs
a read (`_read`), its row access (`rows`), and its queries, pollqueue and maintenance modules,
whose functions take the connection first.
"""

from __future__ import annotations

import asyncio
import time
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
from receiver.store.rows import SqlRows, marked
from receiver.store.writer import Writer

T = TypeVar("T")
R = TypeVar("R", bound=SqlRows)

# A write of more items than this (a bulk registration, a callback carrying many events) runs
# on the writer thread rather than the event loop (Writer.run): the loop is not held for it.
LOOP_JOB_ITEMS = 32

# A paced prune (share < 1): its first batch's size, the size it never goes under, and the
# time one batch of deletes should take (callbacks committed after it wait that long).
PRUNE_FIRST_BATCH = 100
PRUNE_MIN_BATCH = 10
PRUNE_BATCH_SECONDS = 0.01
_pause = asyncio.sleep  # the paced prune's wait (a test records it instead)

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

    async def _write(
        self,
        fn: Callable[[R], T],
        messages: Iterable[tuple[str, str]] = (),
        *,
        on_loop: bool = True,
    ) -> T:
        """Run `fn` over the rows in the writer's next batch; `messages` are the (provider,
        message_id) it will decide, for a dialect that locks them first; `on_loop=False` for
        long work (Writer.run)."""
        writer = self._writer
        if writer is None:
            raise StoreUnavailable("the store is not open")
        rows = self.rows
        try:
            return await writer.run(
                lambda conn: fn(rows(conn)), self._locks(messages), on_loop=on_loop
            )
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
            on_loop=len(events) <= LOOP_JOB_ITEMS,
        )

    async def register(self, registrations: Sequence[Registration]) -> list[Registered]:
        policy = self.policy
        return await self._write(
            lambda rows: [rules.register(rows, policy, reg) for reg in registrations],
            [(reg.provider, reg.message_id) for reg in registrations],
            on_loop=len(registrations) <= LOOP_JOB_ITEMS,
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
            ),
            on_loop=limit <= LOOP_JOB_ITEMS,
        )

    async def finish_polls(
        self, owner: str, events: Sequence[StatusEvent], done: Sequence[PollDone]
    ) -> list[Recorded]:
        policy = self.policy
        return await self._write(
            lambda rows: rules.finish_polls(rows, policy, owner, events, done),
            [(e.provider, e.message_id) for e in events]
            + [(d.message.provider, d.message.message_id) for d in done],
            on_loop=len(events) + len(done) <= LOOP_JOB_ITEMS,
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

    async def prune(self, older_than: str, *, batch_size: int = 500, share: float = 1.0) -> Pruned:
        # Candidates are found on a read connection, oldest final first on their own index, so
        # the writer holds its lock for one small batch of deletes at a time, and callbacks
        # queued meanwhile are committed between batches. With share < 1 (the service's
        # background prune), each batch is followed, when other writes came meanwhile, by a
        # pause long enough that deleting takes at most that share of the writer's time, and
        # the batch size follows the time a batch took, toward PRUNE_BATCH_SECONDS: a backlog
        # of millions then drains at a bounded cost to callbacks instead of starving them.
        delete_messages = self.maintenance.delete_messages
        messages = events = batches = 0
        after = ("", 0)
        paced = share < 1.0
        size = min(batch_size, PRUNE_FIRST_BATCH) if paced else batch_size
        jobs_seen = self.write_stats[1]  # the writer's jobs when the last batch was committed
        while True:
            found: list[tuple[str, int]] = await self._read(
                partial(
                    self.maintenance.prunable_ids,
                    after=after,
                    older_than=older_than,
                    batch_size=size,
                )
            )
            if not found:
                return Pruned(messages, events, batches)
            after = found[-1]
            ids = [row_id for _, row_id in found]
            started = time.perf_counter()
            # On the writer thread: a DELETE of a few hundred rows gives the GIL away for its
            # whole work, so the event loop goes on serving requests meanwhile.
            deleted, deleted_events = await self._write(
                lambda rows, ids=ids: delete_messages(rows.conn, ids, older_than),  # type: ignore[misc]
                on_loop=False,
            )
            # From submitting to committed: the deletes, and the COMMIT (and any checkpoint)
            # that their pages made longer; a little more (the batch it queued behind), so the
            # share errs on the callbacks' side.
            took = time.perf_counter() - started
            messages += deleted
            events += deleted_events
            batches += 1
            if paced:
                if took > PRUNE_BATCH_SECONDS and size > PRUNE_MIN_BATCH:
                    size = max(PRUNE_MIN_BATCH, size // 2)
                elif took < PRUNE_BATCH_SECONDS / 2 and size < batch_size:
                    size = min(batch_size, size * 2)
                # Only other writes are owed the pause: with none since the last batch (no
                # callbacks, say, at night), the backlog goes at full speed.
                jobs = self.write_stats[1]
                others, jobs_seen = jobs - jobs_seen - 1, jobs
                await _pause(took * (1 - share) / max(share, 0.01) if others > 0 else 0)
