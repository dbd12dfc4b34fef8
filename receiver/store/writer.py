"""One writer thread per database: group commit of concurrent requests' writes.

Every write is a job (a function of the connection). The thread takes all jobs waiting, runs
them in one transaction (SQLite: `BEGIN IMMEDIATE`) and commits once, durably; only then
are the jobs' futures resolved, so a caller that got its result knows its write is on disk. A
job that raises fails alone: the batch is rolled back and run again with each job in its own
savepoint (so a job must be a function of the database only: it may run twice). A batch whose
BEGIN or COMMIT fails fails all its jobs, and nothing of it is half-written.

Dialect-free: the store says how its connection begins a batch (`Transactions`); savepoints,
COMMIT and ROLLBACK are standard SQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import structlog

from receiver.store.base import CommitObserver, StoreUnavailable

log = structlog.get_logger("receiver.store")


def _log(method: str, event: str, **fields: Any) -> None:
    """Log from the writer thread; a log that fails (stdout gone, a full disk) must never
    take the thread down with it, or every later write would get 503 until a restart."""
    with contextlib.suppress(Exception):
        getattr(log, method)(event, **fields)


T = TypeVar("T")


class Connection(Protocol):
    """What the writer needs of a DB-API connection in autocommit mode."""

    def execute(self, sql: str, /) -> Any: ...
    def close(self) -> None: ...


C = TypeVar("C", bound=Connection)


@dataclass(frozen=True)
class Transactions:
    """How a dialect's connection takes a write batch."""

    begin: str  # the statement that opens a batch (SQLite: "BEGIN IMMEDIATE", the write lock)
    error: type[Exception]  # the driver's base database error (sqlite3.Error)
    in_transaction: Callable[[Any], bool]  # whether the connection has a transaction open


@dataclass
class _Job(Generic[T]):
    fn: Callable[[Any], T]
    future: Future[T] = field(default_factory=Future)
    # For run(): the event loop awaiting the job, and what wakes it there.
    loop: asyncio.AbstractEventLoop | None = None
    waiter: asyncio.Future[None] | None = None


def _release(waiters: list[asyncio.Future[None]]) -> None:
    for waiter in waiters:
        if not waiter.done():
            waiter.set_result(None)


def _wake(jobs: list[_Job[Any]]) -> None:
    """Wake the event loops awaiting these (resolved) jobs: one call per loop, not per job.

    Each cross-thread call writes to the loop's self-pipe, a system call that gives the GIL
    away; once per batch keeps that off the per-callback path.
    """
    by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
    for job in jobs:
        if job.loop is not None and job.waiter is not None:
            by_loop.setdefault(job.loop, []).append(job.waiter)
    for loop, waiters in by_loop.items():
        # A closed loop raises RuntimeError: nobody is waiting there any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_release, waiters)


class Writer(Generic[C]):
    """Serialises writes on one connection; `submit` is safe from any thread."""

    def __init__(
        self,
        connect: Callable[[], C],
        *,
        transactions: Transactions,
        max_batch: int = 512,
        on_commit: CommitObserver | None = None,
    ) -> None:
        self._connect = connect
        self._tx = transactions
        self._max_batch = max_batch
        self._on_commit = on_commit
        # None is the stop marker; stop() enqueues it last, under the lock.
        self._queue: queue.SimpleQueue[_Job[Any] | None] = queue.SimpleQueue()
        # Guards _closed and the enqueueing in submit(), so no job can land behind the stop
        # marker, where the thread would never see it and its future would hang.
        self._lock = threading.Lock()
        self._closed = True
        self._thread: threading.Thread | None = None
        self._conn: C | None = None
        self.batches = 0  # counters for tests; metrics hear of each batch through on_commit
        self.jobs = 0

    def start(self) -> None:
        with self._lock:
            if self._thread is not None:
                raise RuntimeError("the writer is already running")
            conn = self._connect()
            self._conn = conn
            self._thread = threading.Thread(
                target=self._run, args=(conn,), name="receiver-writer", daemon=True
            )
            self._closed = False
            self._thread.start()

    def submit(self, fn: Callable[[C], T]) -> Future[T]:
        job: _Job[T] = _Job(fn)
        self._enqueue(job)
        return job.future

    async def run(self, fn: Callable[[C], T]) -> T:
        """Submit from an event loop and await the job's committed result."""
        loop = asyncio.get_running_loop()
        job: _Job[T] = _Job(fn, loop=loop, waiter=loop.create_future())
        self._enqueue(job)
        assert job.waiter is not None
        try:
            await job.waiter
        except asyncio.CancelledError:
            job.future.cancel()  # skipped if not started yet; else it commits unanswered
            raise
        return job.future.result()

    def _enqueue(self, job: _Job[Any]) -> None:
        with self._lock:
            if self._closed:
                raise StoreUnavailable("the store is not running")
            self._queue.put(job)

    def stop(self) -> None:
        """Finish every job already submitted, then close the connection."""
        with self._lock:
            thread = self._thread
            if thread is None:
                return
            if not self._closed:  # the thread may have closed itself on a fatal error
                self._closed = True
                self._queue.put(None)
        thread.join()
        with self._lock:
            if self._thread is not thread:  # a concurrent stop() already cleaned up
                return
            self._thread = None
            conn, self._conn = self._conn, None
        # Nothing can be queued behind the marker, but a thread that died must not leave
        # callers waiting forever.
        self._fail_queued()
        if conn is not None:
            conn.close()

    def _fail_queued(self) -> None:
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                return
            if job is not None and job.future.set_running_or_notify_cancel():
                job.future.set_exception(StoreUnavailable("the store stopped"))
                _wake([job])

    def _take_batch(self) -> tuple[list[_Job[Any]], bool]:
        """Block for the next jobs; return those still wanted, and whether to stop after them."""
        taken = [self._queue.get()]
        while len(taken) < self._max_batch:
            try:
                taken.append(self._queue.get_nowait())
            except queue.Empty:
                break
        batch: list[_Job[Any]] = []
        stopping = False
        for job in taken:
            if job is None:
                stopping = True
            # A job cancelled before it ran (its awaiting task was cancelled) has no caller
            # left to answer, so it is skipped; once running, its future can no longer be
            # cancelled, so resolving it after COMMIT cannot raise.
            elif job.future.set_running_or_notify_cancel():
                batch.append(job)
        return batch, stopping

    def _run(self, conn: C) -> None:
        try:
            stopping = False
            while not stopping:
                batch, stopping = self._take_batch()
                if not batch:
                    continue
                try:
                    self._commit_batch(conn, batch)
                except BaseException as exc:  # keep serving: one batch must not end the thread
                    self._recover(conn, batch, exc)
        finally:
            # Only reached early if recovery itself failed: refuse new jobs and answer the
            # waiting ones rather than leave them hanging on a dead thread.
            with self._lock:
                self._closed = True
            self._fail_queued()

    @staticmethod
    def _run_jobs(
        conn: C, batch: list[_Job[Any]], *, isolated: bool
    ) -> list[tuple[_Job[Any], Any, Exception | None]] | None:
        """Each job's (result, error); None when not isolated and a job raised."""
        outcomes: list[tuple[_Job[Any], Any, Exception | None]] = []
        for job in batch:
            if isolated:
                conn.execute("SAVEPOINT job")
            try:
                result = job.fn(conn)
            except Exception as exc:  # one bad job must not sink its batch
                if not isolated:
                    return None
                conn.execute("ROLLBACK TO job")
                conn.execute("RELEASE job")
                outcomes.append((job, None, exc))
            else:
                if isolated:
                    conn.execute("RELEASE job")
                outcomes.append((job, result, None))
        return outcomes

    def _recover(self, conn: C, batch: list[_Job[Any]], exc: BaseException) -> None:
        # A transaction left open would make every later BEGIN fail: 503s until restart.
        try:
            if self._tx.in_transaction(conn):
                conn.execute("ROLLBACK")
        except self._tx.error as rollback_exc:
            exc.add_note(f"rollback failed too: {rollback_exc}")
        for job in batch:
            if not job.future.done():
                failure = StoreUnavailable(f"writer failed: {exc!r}")
                failure.__cause__ = exc
                job.future.set_exception(failure)
        _wake(batch)
        # Logged last, so nothing here can leave a caller unanswered.
        _log("error", "writer_error", jobs=len(batch), exc_info=exc)

    def _commit_batch(self, conn: C, batch: list[_Job[Any]]) -> None:
        started = time.perf_counter()
        try:
            conn.execute(self._tx.begin)
            outcomes = self._run_jobs(conn, batch, isolated=False)
            if outcomes is None:
                # A job raised: redo the batch with each job in its own savepoint, so it fails
                # alone. Savepoints cost two statements a job, and each statement hands the GIL
                # to the event loop and waits to get it back, so the common case goes without.
                conn.execute("ROLLBACK")
                conn.execute(self._tx.begin)
                outcomes = self._run_jobs(conn, batch, isolated=True)
                assert outcomes is not None  # isolated jobs fail alone
            conn.execute("COMMIT")
        except self._tx.error as exc:
            if self._tx.in_transaction(conn):
                conn.execute("ROLLBACK")
            _log("error", "write_batch_failed", jobs=len(batch), error=str(exc))
            for job in batch:
                # One exception per future: a shared one would have its traceback rewritten
                # by every thread that raises it.
                failure = StoreUnavailable(f"database write failed: {exc}")
                failure.__cause__ = exc
                job.future.set_exception(failure)
            _wake(batch)
            return
        elapsed = time.perf_counter() - started
        # Counted before the futures resolve, so a caller that has its result sees its batch.
        self.batches += 1
        self.jobs += len(batch)
        if self._on_commit is not None:
            try:
                self._on_commit(len(batch), elapsed)
            except Exception:  # the batch is committed: its callers must still hear so
                _log("exception", "commit_observer_failed")
        for job, result, error in outcomes:
            if error is not None:
                job.future.set_exception(error)
            else:
                job.future.set_result(result)
        _wake(batch)
        _log("debug", "write_batch_committed", jobs=len(batch), commit_ms=round(elapsed * 1000, 2))
