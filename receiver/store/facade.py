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
from dataclasses import replace
from functools import partial
from types import ModuleType
from typing import Any, Generic, TypeVar

from receiver.engine import Outcome, StatusEvent, is_final
from receiver.ledger import LedgerEvent, LedgerRow, Mismatch, repair
from receiver.store import changelog, outbox, rules
from receiver.store import sends as sendrules
from receiver.store.base import (
    CommitObserver,
    DueMessage,
    MessageFilter,
    PollDone,
    Pruned,
    PushAttempt,
    PushJob,
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
    changelog: ModuleType  # the change log's reads (receiver.store.changelog's SQL)
    ledger: ModuleType  # the SQL of `receiver verify`: pages, and a repair's locked read
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
        self._pushes_owed: Callable[[], None] | None = None
        # Told the (provider, message_id) of messages a write changed, after its commit, on the
        # event loop (receiver.realtime's hub wakes those waiting on them): quick, no raising.
        self.changed: Callable[[list[tuple[str, str]]], None] | None = None

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

    async def _read_point(self, fn: Callable[[Any], Any]) -> Any:
        """A read of one message's rows by its index: a few pages. A dialect may run it where
        it costs less than a hand-off to a read connection's thread (SQLite: on the loop)."""
        return await self._read(fn)

    # -- writes: the rules (receiver.store.rules) over the dialect's rows ----------------------

    async def record(self, events: Sequence[StatusEvent]) -> list[Recorded]:
        policy = self.policy
        recorded = await self._write(
            lambda rows: [rules.record(rows, policy, ev) for ev in events],
            [(ev.provider, ev.message_id) for ev in events],
            on_loop=len(events) <= LOOP_JOB_ITEMS,
        )
        self._woken_by(recorded)  # committed: the pushes it owes can go
        self._changed(recorded)
        return recorded

    async def register(self, registrations: Sequence[Registration]) -> list[Registered]:
        policy = self.policy
        registered = await self._write(
            lambda rows: rules.register_batch(rows, policy, registrations),
            [
                (reg.provider, message_id)
                for reg in registrations
                for message_id in (reg.message_id, *(reg.parts or ()))
            ],
            on_loop=len(registrations) <= LOOP_JOB_ITEMS,
        )
        if self._pushes_owed is not None and any(r.pending_applied for r in registered):
            self._pushes_owed()  # committed: held events it decided may owe pushes
        if self.changed is not None:
            self.changed([(r.provider, r.message_id) for r in registered])
        return registered

    def _changed(self, recorded: Sequence[Recorded]) -> None:
        """Tell `changed` (after the commit) which messages the recorded events changed."""
        if self.changed is not None:
            keys = [
                (r.event.provider, r.parent_id or r.event.message_id)
                for r in recorded
                if r.created or r.status != r.previous_status
            ]
            if keys:
                self.changed(keys)

    # -- deadlines and the change log (receiver.realtime) -------------------------------------

    async def decide_deadlines(self, now: str, limit: int = 500) -> list[tuple[str, str]]:
        """Decide the deadlines due at `now` (rules.decide_deadlines); those missed."""
        missed = await self._write(
            partial(rules.decide_deadlines, now=now, limit=limit, push=self.policy.push)
        )
        if missed and self.changed is not None:
            self.changed(missed)
        if missed and self._pushes_owed is not None:
            self._pushes_owed()  # committed: each miss owes a message.deadline_missed push
        return missed

    async def next_deadline(self) -> str | None:
        """The soonest undecided deadline (None: there is none)."""
        due: str | None = await self._read(self.changelog.next_deadline)
        return due

    async def changes_after(self, after: int, limit: int = 500) -> list[dict[str, Any]]:
        """Up to `limit` logged changes with ids above `after`, in id (commit) order."""
        found: list[dict[str, Any]] = await self._read(
            partial(self.changelog.changes_after, after=after, limit=limit)
        )
        return found

    async def listen(
        self,
        changed: Callable[[list[tuple[str, str]]], None],
        changed_any: Callable[[], None],
    ) -> None:
        """Until cancelled, report the changes other processes commit; by default none do
        (SQLite: this process is the one writer of its file that waits are served from)."""
        await asyncio.Event().wait()

    async def change_marks(self) -> tuple[int, int]:
        """(the last change id, the last change id pruned); 0 for none."""
        marks: tuple[int, int] = await self._read(self.changelog.marks)
        return marks

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
        recorded = await self._write(
            lambda rows: rules.finish_polls(rows, policy, owner, events, done),
            [(e.provider, e.message_id) for e in events]
            + [(d.message.provider, d.message.message_id) for d in done],
            on_loop=len(events) + len(done) <= LOOP_JOB_ITEMS,
        )
        self._woken_by(recorded)
        self._changed(recorded)
        return recorded

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
        found: list[dict[str, Any]] = await self._read_point(
            partial(self.queries.get_messages, message_id=message_id, provider=provider)
        )
        return found

    async def get_events(self, provider: str, message_id: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = await self._read_point(
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
        messages = events = batches = pushes = 0
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
                # The change log (the stream's) is kept as long as the messages.
                through = await self._read(partial(self.changelog.last_old, older_than=older_than))
                if through is not None:
                    await self._write(
                        lambda rows, through=through: changelog.prune(rows.conn, through, rows.mark)  # type: ignore[misc]
                    )
                return Pruned(messages, events, batches, pushes)
            after = found[-1]
            ids = [row_id for _, row_id in found]
            started = time.perf_counter()

            # On the writer thread: a DELETE of a few hundred rows gives the GIL away for its
            # whole work, so the event loop goes on serving requests meanwhile.
            # One job per batch: its messages, their events and their delivered pushes.
            def delete(rows: Any, ids: list[int] = ids) -> tuple[int, int, int]:
                gone, gone_events = delete_messages(rows.conn, ids, older_than)
                return gone, gone_events, outbox.delete_delivered(rows.conn, ids, rows.mark)

            deleted, deleted_events, deleted_pushes = await self._write(delete, on_loop=False)
            # From submitting to committed: the deletes, and the COMMIT (and any checkpoint)
            # that their pages made longer; a little more (the batch it queued behind), so the
            # share errs on the callbacks' side.
            took = time.perf_counter() - started
            messages += deleted
            events += deleted_events
            pushes += deleted_pushes
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

    # -- the push outbox (receiver/push/): the rules owe pushes, the dispatcher sends them --

    def configure_push(
        self, endpoints: Sequence[str], events: str, on_owed: Callable[[], None] | None = None
    ) -> None:
        """Owe a push to each of `endpoints` for every change `events` takes ("final" or
        "all"); `on_owed` is called after each commit that may have owed one (it must be
        quick: it wakes the dispatcher)."""
        push = rules.PushPolicy(tuple(endpoints), events) if endpoints else None
        self.policy = replace(self.policy, push=push)
        self._pushes_owed = on_owed if push is not None else None

    def _woken_by(self, recorded: Sequence[Recorded]) -> None:
        push, wake = self.policy.push, self._pushes_owed
        if push is None or wake is None:
            return
        for r in recorded:
            if r.outcome is not Outcome.APPLIED or r.status is None:
                continue
            if push.events == "all" or is_final(r.status):
                wake()
                return

    @property
    def _outbox(self) -> Any:
        return self.rows.outbox  # the dialect's outbox module

    async def claim_pushes(
        self,
        *,
        owner: str,
        now: str,
        lease_until: str,
        endpoints: Sequence[str],
        limit: int,
    ) -> list[PushJob]:
        """Lease up to `limit` due pushes to `endpoints`, each the oldest pending one of its
        message to its endpoint; first give up those owed to endpoints a 410 disabled (as the
        database says in this transaction, so a retry committed meanwhile is seen)."""
        claim = self._outbox.claim

        def job(rows: R) -> list[PushJob]:
            disabled = outbox.fail_disabled(rows.conn, now, rows.mark)
            found: list[PushJob] = claim(
                rows.conn,
                owner=owner,
                now=now,
                lease_until=lease_until,
                endpoints=[url for url in endpoints if url not in disabled],
                limit=limit,
            )
            return found

        return await self._write(job)

    async def finish_push(self, push: PushJob, attempt: PushAttempt) -> None:
        await self._write(lambda rows: outbox.finish(rows.conn, push, attempt, rows.mark))

    async def disable_push_endpoint(self, url: str, now: str, reason: str) -> None:
        def job(rows: R) -> None:
            outbox.disable_endpoint(rows.conn, url, now, reason, rows.mark)
            outbox.fail_disabled(rows.conn, now, rows.mark)

        await self._write(job)

    async def retry_push(self, webhook_id: str, now: str) -> str | None:
        """Send one push again; its status before (None: unknown; "pending": left as it is)."""
        found: str | None = await self._write(
            lambda rows: outbox.requeue(rows.conn, webhook_id, now, rows.mark)
        )
        return found

    async def recover_pushes(self, since: str, now: str) -> int:
        count: int = await self._write(
            lambda rows: outbox.recover(rows.conn, since, now, rows.mark)
        )
        return count

    async def release_push_leases(self, dead: Callable[[str], bool]) -> int:
        """At start: free the leases of claimers known dead (see the dialect's outbox)."""
        release = self._outbox.release
        count: int = await self._write(lambda rows: release(rows.conn, dead))
        return count

    async def list_pushes(
        self, *, status: str | None, since: str | None, before_id: int | None, limit: int
    ) -> tuple[list[dict[str, Any]], int | None]:
        found: tuple[list[dict[str, Any]], int | None] = await self._read(
            partial(
                self._outbox.list_pushes,
                status=status,
                since=since,
                before_id=before_id,
                limit=limit,
            )
        )
        return found

    async def get_push(self, webhook_id: str) -> dict[str, Any] | None:
        found: dict[str, Any] | None = await self._read(
            partial(self._outbox.get_push, webhook_id=webhook_id)
        )
        return found

    async def push_stats(self) -> dict[str, Any]:
        found: dict[str, Any] = await self._read(self._outbox.push_stats)
        return found

    async def next_push_due(self) -> str | None:
        found: str | None = await self._read(self._outbox.next_push_due)
        return found

    # -- the ledger: `receiver verify` (receiver.ledger) -----------------------------------

    async def ledger_page(self, after: int, size: int) -> list[tuple[LedgerRow, list[LedgerEvent]]]:
        """Up to `size` messages with id > `after`, with their events, in one snapshot."""
        page: list[tuple[LedgerRow, list[LedgerEvent]]] = await self._read(
            partial(self.ledger.page, after=after, size=size)
        )
        return page

    async def repair_ledger(self, mismatches: Sequence[Mismatch]) -> list[Mismatch]:
        """Rewrite the messages that still mismatch from their events, in the writer."""
        read = self.ledger.locked
        return await self._write(
            lambda rows: repair(rows, read, mismatches, utcnow()),
            [(m.row.provider, m.row.message_id) for m in mismatches],
        )

    # -- sends registered whole (receiver.store.sends; the dialect's sends module) -----------

    sends: ModuleType

    def _sends(self, rows: R) -> sendrules.SendAccess:
        access: sendrules.SendAccess = self.sends.Access(rows, rows.conn)
        return access

    async def register_sends(self, registrations: Sequence[Registration]) -> list[Registered]:
        policy = self.policy
        return await self._write(
            lambda rows: [
                sendrules.register_send(self._sends(rows), policy, reg) for reg in registrations
            ]
        )

    async def claim_sends(
        self, provider: str, *, now: str, limit: int, lease_until: str, owner: str
    ) -> list[sendrules.SendClaim]:
        return await self._write(
            lambda rows: sendrules.claim_sends(
                self._sends(rows),
                provider,
                now=now,
                limit=limit,
                lease_until=lease_until,
                owner=owner,
            )
        )

    async def record_send_page(
        self, owner: str, page: sendrules.SendPage
    ) -> sendrules.PageWritten | None:
        policy = self.policy
        return await self._write(
            lambda rows: sendrules.record_page(self._sends(rows), policy, owner, page),
            [(ev.provider, ev.message_id) for ev in page.events],
        )

    async def release_send(
        self, provider: str, uuid: str, owner: str, *, next_sweep_at: str, result: str
    ) -> bool:
        return await self._write(
            lambda rows: sendrules.release_send(
                self._sends(rows), provider, uuid, owner, next_sweep_at=next_sweep_at, result=result
            )
        )

    async def send_summary(self, uuid: str) -> dict[str, Any] | None:
        found: dict[str, Any] | None = await self._read(partial(self.sends.send_summary, uuid=uuid))
        return found

    async def next_send_due(self, provider: str) -> str | None:
        due: str | None = await self._read(partial(self.sends.next_due, provider=provider))
        return due

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
