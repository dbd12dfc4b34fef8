"""One writer thread per database: group commit of concurrent requests' writes.

Every write is a job (a function of the connection). The thread takes all jobs waiting, runs
them in one transaction (SQLite: `BEGIN IMMEDIATE`) and commits once, durably; only then
are the jobs' futures resolved, so a caller that got its result knows its write is on disk. A
job that raises fails alone: the batch is rolled back and run again with each job in its own
savepoint (so a job must be a function of the database only: it may run twice). A batch whose
BEGIN or COMMIT fails fails all its jobs, and nothing of it is half-written.

Where a job runs: on this thread, or, when the dialect says so (`Transactions.on_loop`,
SQLite's) and the job came from `run()`, on the event loop awaiting it: the thread opens the
transaction, hands the batch's jobs to their loop in one call and sleeps until they ran, then
commits. Each SQLite statement run on this thread gave the GIL away and had to win it back from
the busy loop; on the loop nobody contends for it, while the fsync of the COMMIT still runs
here, with the loop serving requests meanwhile. A redo with each job isolated runs here.

Dialect-free: a store says through its `Transactions` how its connection takes a batch; the
defaults are plain SQL (SQLite's), and PostgreSQL's override what differs (message locks
first, a batch redone on deadlock, pipeline mode, reconnecting).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import queue
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
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


class _JobFailed(Exception):
    """A job raised (`error`): in a shared transaction the batch is redone with each job
    isolated; in its own savepoint the job fails alone."""

    def __init__(self, error: Exception) -> None:
        super().__init__(error)
        self.error = error


class Transactions:
    """How a dialect's connection takes a write batch. The defaults are plain SQL on a
    connection in autocommit mode, SQLite's; a dialect overrides what differs."""

    attempts = 1  # runs of a batch whose failure is retryable() before its jobs fail
    # Whether a statement's error may surface at a later statement (pipeline mode): any
    # database error but a fatal one then redoes the batch with each job isolated.
    deferred_errors = False

    def __init__(
        self, *, begin: str = "BEGIN", error: type[Exception] = Exception, on_loop: bool = False
    ) -> None:
        self.begin = begin  # the statement that opens a batch (SQLite: "BEGIN IMMEDIATE")
        self.error = error  # the driver's base database error (sqlite3.Error)
        # Whether the jobs of a batch submitted with run() execute on the event loop awaiting
        # them, while BEGIN and COMMIT stay on the writer thread (see Writer._on_loops). For a
        # driver whose statements are short CPU work (SQLite's), not network round trips.
        self.on_loop = on_loop

    def in_transaction(self, conn: Any) -> bool:
        return bool(conn.in_transaction)

    @contextlib.contextmanager
    def transaction(self, conn: Any, *, first: bool) -> Iterator[None]:
        """One run of a batch, committed at the end of the block; `first` is False when the
        batch is redone with each job isolated."""
        conn.execute(self.begin)
        try:
            yield
        except _JobFailed:
            conn.execute("ROLLBACK")  # to be redone; any other error leaves it to the writer
            raise
        conn.execute("COMMIT")

    @contextlib.contextmanager
    def savepoint(self, conn: Any) -> Iterator[None]:
        """One job of an isolated run: its writes go if it raises."""
        conn.execute("SAVEPOINT job")
        try:
            yield
        except Exception:
            conn.execute("ROLLBACK TO job")
            conn.execute("RELEASE job")
            raise
        conn.execute("RELEASE job")

    def before_batch(self, conn: Any, locks: Sequence[str]) -> None:
        """Run first in each run of a batch, with the lock keys its jobs named (sorted)."""

    def before_commit(self, conn: Any) -> None:
        """Run last in each run of a batch, after its jobs, in its transaction (where the last
        of them ran: on the event loop, for jobs that run there)."""

    def retryable(self, exc: BaseException) -> bool:
        """Whether the batch may succeed if run again whole (nothing of it was kept)."""
        return False

    def broken(self, conn: Any) -> bool:
        """Whether the connection is lost: its batch fails, and it is replaced for the next."""
        return False


class _Answer(Generic[T]):
    """A run() job's answer: the part of a concurrent Future the writer uses, without the
    Condition a Future builds and takes at every step (a tenth of a job's cost). Its caller
    is woken by the job's asyncio waiter, not by this."""

    __slots__ = ("_error", "_lock", "_state", "_value")

    def __init__(self) -> None:
        self._lock = threading.Lock()  # cancel() (the loop) against the writer's claim
        self._state = "pending"  # pending | running | cancelled | done
        self._value: Any = None
        self._error: BaseException | None = None

    def set_running_or_notify_cancel(self) -> bool:
        with self._lock:
            if self._state == "cancelled":
                return False
            self._state = "running"
            return True

    def cancel(self) -> bool:
        with self._lock:
            if self._state != "pending":
                return False
            self._state = "cancelled"
            return True

    def done(self) -> bool:
        return self._state in ("cancelled", "done")

    def set_result(self, value: T) -> None:
        self._value, self._state = value, "done"

    def set_exception(self, error: BaseException) -> None:
        self._error, self._state = error, "done"

    def result(self) -> T:
        # Read only once the job's waiter is released, which follows set_result or
        # set_exception: unlike Future.result, it neither blocks nor raises if not done.
        if self._error is not None:
            raise self._error
        value: T = self._value
        return value


@dataclass
class _Job(Generic[T]):
    fn: Callable[[Any], T]
    # Keys the batch locks before any job runs (PostgreSQL: the messages the job decides).
    locks: Sequence[str] = ()
    # submit()'s callers get a concurrent Future; run()'s await `waiter` and read an _Answer.
    future: Future[T] | _Answer[T] = field(default_factory=Future)
    # For run(): the event loop awaiting the job, and what wakes it there.
    loop: asyncio.AbstractEventLoop | None = None
    waiter: asyncio.Future[None] | None = None
    # False keeps a run() job on the writer thread (a long one, as a prune batch: its few
    # statements each give the GIL away for their whole work, and the loop serves meanwhile).
    on_loop: bool = True


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


class _Handoff:
    """A function the writer thread hands to an event loop and waits for: it runs once, on
    the loop, or here if the loop stops running before it got to it (a loop closed with a
    job in flight must not hang the writer)."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self._fn = fn
        self._lock = threading.Lock()
        self._claimed = False
        self._done = threading.Event()
        self._result: Any = None
        self._error: BaseException | None = None

    def __call__(self) -> None:
        with self._lock:
            if self._claimed:
                return
            self._claimed = True
        try:
            self._result = self._fn()
        except BaseException as exc:  # re-raised on the writer thread, as if it ran there
            self._error = exc
        finally:
            self._done.set()

    def run_on(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            loop.call_soon_threadsafe(self)
        except RuntimeError:  # the loop is closed
            self()
        while not self._done.wait(0.5):
            if loop.is_closed() or not loop.is_running():
                self()  # a no-op if the loop claimed it first; then wait for it to finish

    def value(self) -> Any:
        if self._error is not None:
            raise self._error
        return self._result


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
        self.retries = 0  # batches run again after a retryable failure (a deadlock)

    def start(self) -> None:
        with self._lock:
            if self._thread is not None:
                raise RuntimeError("the writer is already running")
            self._conn = self._connect()
            self._thread = threading.Thread(target=self._run, name="receiver-writer", daemon=True)
            self._closed = False
            self._thread.start()

    def submit(self, fn: Callable[[C], T], locks: Sequence[str] = ()) -> Future[T]:
        future: Future[T] = Future()
        self._enqueue(_Job(fn, locks, future))
        return future

    async def run(
        self, fn: Callable[[C], T], locks: Sequence[str] = (), *, on_loop: bool = True
    ) -> T:
        """Submit from an event loop and await the job's committed result; `on_loop=False`
        runs it on the writer thread even where the dialect's jobs run on the loop."""
        loop = asyncio.get_running_loop()
        job: _Job[T] = _Job(
            fn, locks, _Answer(), loop=loop, waiter=loop.create_future(), on_loop=on_loop
        )
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

    def _run(self) -> None:
        try:
            stopping = False
            while not stopping:
                batch, stopping = self._take_batch()
                if not batch:
                    continue
                try:
                    self._commit_batch(batch)
                except BaseException as exc:  # keep serving: one batch must not end the thread
                    self._recover(batch, exc)
        finally:
            # Only reached early if recovery itself failed: refuse new jobs and answer the
            # waiting ones rather than leave them hanging on a dead thread.
            with self._lock:
                self._closed = True
            self._fail_queued()

    def _connection(self) -> C:
        """The connection, replaced first if the last one was lost."""
        conn = self._conn
        if conn is None or self._tx.broken(conn):
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()
            self._conn = None
            conn = self._conn = self._connect()
        return conn

    def _call(self, conn: C, job: _Job[Any]) -> Any:
        try:
            return job.fn(conn)
        except Exception as exc:
            if self._tx.retryable(exc) or self._tx.broken(conn):
                raise  # the batch is lost, not only this job
            raise _JobFailed(exc) from exc

    def _run_jobs(
        self, conn: C, batch: list[_Job[Any]], *, isolated: bool
    ) -> list[tuple[_Job[Any], Any, Exception | None]]:
        """Each job's (result, error); not isolated, the first job that raises stops the run
        (_JobFailed)."""
        if not isolated and self._tx.on_loop:
            return self._on_loops(conn, batch)
        outcomes = self._run_here(conn, batch, isolated=isolated)
        self._tx.before_commit(conn)
        return outcomes

    def _run_here(
        self, conn: C, batch: list[_Job[Any]], *, isolated: bool
    ) -> list[tuple[_Job[Any], Any, Exception | None]]:
        outcomes: list[tuple[_Job[Any], Any, Exception | None]] = []
        for job in batch:
            if not isolated:
                outcomes.append((job, self._call(conn, job), None))
                continue
            try:
                with self._tx.savepoint(conn):
                    result = self._call(conn, job)
            except _JobFailed as failed:  # one bad job must not sink its batch
                outcomes.append((job, None, failed.error))
            else:
                outcomes.append((job, result, None))
        return outcomes

    def _call_all(self, conn: C, jobs: list[_Job[Any]], *, last: bool = False) -> list[Any]:
        values = [self._call(conn, job) for job in jobs]
        if last:
            self._tx.before_commit(conn)
        return values

    def _on_loops(
        self, conn: C, batch: list[_Job[Any]]
    ) -> list[tuple[_Job[Any], Any, Exception | None]]:
        """Run a shared batch's jobs on the event loops awaiting them, in order: each run of
        consecutive jobs of one loop is handed to that loop in one call, and this thread waits.

        On the writer thread, every statement gives the GIL away and must win it back from the
        loop, which is busy with the next requests: about half the thread's time went to that
        wait. On the loop, while this thread sleeps, nobody contends for it. BEGIN and COMMIT
        (the fsync) stay on this thread, so the loop serves requests while the disk syncs, and
        a job's future still resolves only after COMMIT. Jobs with no loop (submit()) run
        here, as before.
        """
        outcomes: list[tuple[_Job[Any], Any, Exception | None]] = []
        start = 0
        while start < len(batch):
            loop = batch[start].loop if batch[start].on_loop else None
            end = start + 1
            while end < len(batch) and (batch[end].loop if batch[end].on_loop else None) is loop:
                end += 1
            segment = batch[start:end]
            # The batch's last run of jobs also runs before_commit, where it runs: on a loop,
            # a hand-off saved, and the loop's statements keep the GIL it holds anyway.
            last = end == len(batch)
            if loop is None:
                values = self._call_all(conn, segment, last=last)
                outcomes += [(job, r, None) for job, r in zip(segment, values, strict=True)]
            else:
                handoff = _Handoff(functools.partial(self._call_all, conn, segment, last=last))
                handoff.run_on(loop)
                values = handoff.value()
                outcomes += [(job, r, None) for job, r in zip(segment, values, strict=True)]
            start = end
        return outcomes

    def _attempt(
        self, conn: C, batch: list[_Job[Any]]
    ) -> list[tuple[_Job[Any], Any, Exception | None]]:
        """Run the batch in one transaction and commit it.

        If a job raised, the batch is redone with each job in its own savepoint, so it fails
        alone. Savepoints cost two statements a job, and each statement hands the GIL to the
        event loop and waits to get it back, so the common case goes without.
        """
        locks = sorted({key for job in batch for key in job.locks})
        try:
            with self._tx.transaction(conn, first=True):
                self._tx.before_batch(conn, locks)
                return self._run_jobs(conn, batch, isolated=False)
        except _JobFailed:
            pass
        except self._tx.error as exc:
            if not self._tx.deferred_errors or self._tx.retryable(exc) or self._tx.broken(conn):
                raise
            # A deferred statement of some job failed: which one, the isolated run tells.
        with self._tx.transaction(conn, first=False):
            self._tx.before_batch(conn, locks)
            return self._run_jobs(conn, batch, isolated=True)

    def _recover(self, batch: list[_Job[Any]], exc: BaseException) -> None:
        # A transaction left open would make every later BEGIN fail: 503s until restart.
        conn = self._conn
        try:
            if conn is not None and self._tx.in_transaction(conn):
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

    def _commit_batch(self, batch: list[_Job[Any]]) -> None:
        started = time.perf_counter()
        attempt = 1
        while True:
            try:
                outcomes = self._attempt(self._connection(), batch)
                break
            except self._tx.error as exc:
                if self._tx.retryable(exc) and attempt < self._tx.attempts:
                    self.retries += 1
                    _log(
                        "info",
                        "write_batch_retried",
                        jobs=len(batch),
                        attempt=attempt,
                        error=str(exc),
                    )
                    # The other side of a deadlock is retrying too: part before trying again.
                    time.sleep(random.uniform(0, 0.01 * attempt))
                    attempt += 1
                    continue
                conn = self._conn
                if conn is not None and self._tx.in_transaction(conn):
                    conn.execute("ROLLBACK")
                _log("error", "write_batch_failed", jobs=len(batch), error=str(exc))
                for job in batch:
                    # One exception per future: a shared one would have its traceback
                    # rewritten by every thread that raises it.
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
