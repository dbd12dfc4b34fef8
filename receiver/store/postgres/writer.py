"""One writer thread per instance: group commit of concurrent requests' writes on PostgreSQL.

As SQLite's (receiver/store/writer.py): every write is a job (a function of the connection);
the thread takes all jobs waiting, runs them in one transaction and resolves their futures
only after COMMIT. What differs comes from other instances writing the same rows at once:
- a batch first takes the advisory locks of the messages its jobs name, in one order every
  instance uses, so two batches queue for a message rather than deadlock;
- a batch chosen as a deadlock victim, or failing to serialize (SQLSTATE 40P01, 40001), is
  rolled back and run again whole (its jobs are functions of the database, so they decide
  afresh), a bounded number of times, then fails with StoreUnavailable (a 503);
- it runs in pipeline mode, where a statement whose result nobody reads goes out with the next
  one that is read: round trips, not the database, bound a writer;
- a lost connection fails its batch and is replaced for the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import psycopg
import structlog
from psycopg import errors

from receiver.store.base import CommitObserver, StoreUnavailable

log = structlog.get_logger("receiver.store")

T = TypeVar("T")
Conn = psycopg.Connection[Any]

# SQLSTATE 40001 and 40P01: nothing of the batch was kept, and running it again may succeed.
RETRYABLE = (errors.SerializationFailure, errors.DeadlockDetected)


def _log(method: str, event: str, **fields: Any) -> None:
    """Log from the writer thread; a failing log must never take the thread down."""
    with contextlib.suppress(Exception):
        getattr(log, method)(event, **fields)


@dataclass
class _Job(Generic[T]):
    fn: Callable[[Conn], T]
    # The messages the job will lock ("<provider>\n<message_id>"), taken before any job runs.
    locks: Sequence[str] = ()
    future: Future[T] = field(default_factory=Future)
    loop: asyncio.AbstractEventLoop | None = None
    waiter: asyncio.Future[None] | None = None


def _release(waiters: list[asyncio.Future[None]]) -> None:
    for waiter in waiters:
        if not waiter.done():
            waiter.set_result(None)


def _wake(jobs: list[_Job[Any]]) -> None:
    """Wake the event loops awaiting these (resolved) jobs: one call per loop, not per job."""
    by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
    for job in jobs:
        if job.loop is not None and job.waiter is not None:
            by_loop.setdefault(job.loop, []).append(job.waiter)
    for loop, waiters in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits there any more
            loop.call_soon_threadsafe(_release, waiters)


class _JobFailed(Exception):
    """A job raised in a shared transaction: the batch is redone with each job isolated."""


class Writer:
    """Serialises this instance's writes on one connection; `submit` is safe from any thread."""

    def __init__(
        self,
        connect: Callable[[], Conn],
        *,
        max_batch: int = 512,
        on_commit: CommitObserver | None = None,
        attempts: int = 8,
    ) -> None:
        self._connect = connect
        self._max_batch = max_batch
        self._on_commit = on_commit
        self._attempts = attempts
        self._queue: queue.SimpleQueue[_Job[Any] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._closed = True
        self._thread: threading.Thread | None = None
        self._conn: Conn | None = None
        self.batches = 0
        self.jobs = 0
        self.retries = 0  # batches run again after a serialization failure or deadlock

    def start(self) -> None:
        with self._lock:
            if self._thread is not None:
                raise RuntimeError("the writer is already running")
            self._conn = self._connect()
            self._thread = threading.Thread(target=self._run, name="receiver-writer", daemon=True)
            self._closed = False
            self._thread.start()

    def submit(self, fn: Callable[[Conn], T], locks: Sequence[str] = ()) -> Future[T]:
        job: _Job[T] = _Job(fn, locks)
        self._enqueue(job)
        return job.future

    async def run(self, fn: Callable[[Conn], T], locks: Sequence[str] = ()) -> T:
        """Submit from an event loop and await the job's committed result."""
        loop = asyncio.get_running_loop()
        job: _Job[T] = _Job(fn, locks, loop=loop, waiter=loop.create_future())
        self._enqueue(job)
        assert job.waiter is not None
        try:
            await job.waiter
        except asyncio.CancelledError:
            job.future.cancel()
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
            if not self._closed:
                self._closed = True
                self._queue.put(None)
        thread.join()
        with self._lock:
            if self._thread is not thread:
                return
            self._thread = None
            conn, self._conn = self._conn, None
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
            elif job.future.set_running_or_notify_cancel():
                batch.append(job)
        return batch, stopping

    def _run(self) -> None:
        try:
            stopping = False
            while not stopping:
                batch, stopping = self._take_batch()
                if batch:
                    self._commit_batch(batch)
        finally:
            with self._lock:
                self._closed = True
            self._fail_queued()

    def _connection(self) -> Conn:
        """The connection, replaced first if the last one was lost."""
        conn = self._conn
        if conn is None or conn.closed or conn.broken:
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()
            self._conn = None
            conn = self._conn = self._connect()
        return conn

    @staticmethod
    def _run_jobs(
        conn: Conn, batch: list[_Job[Any]], *, isolated: bool
    ) -> list[tuple[_Job[Any], Any, Exception | None]]:
        outcomes: list[tuple[_Job[Any], Any, Exception | None]] = []
        for job in batch:
            if not isolated:
                try:
                    outcomes.append((job, job.fn(conn), None))
                except RETRYABLE:
                    raise
                except Exception as exc:
                    raise _JobFailed from exc
                continue
            try:
                with conn.transaction():  # a savepoint: the job's writes go if it raises
                    result = job.fn(conn)
            except RETRYABLE:
                raise
            except Exception as exc:
                if isinstance(exc, psycopg.OperationalError) and conn.broken:
                    raise
                outcomes.append((job, None, exc))
            else:
                outcomes.append((job, result, None))
        return outcomes

    @staticmethod
    def _lock_messages(conn: Conn, batch: list[_Job[Any]]) -> None:
        """Take the batch's message locks first, all in one order (the one every instance
        uses): two batches wanting the same messages then queue rather than deadlock, which
        PostgreSQL would only find out after deadlock_timeout (a second)."""
        keys = sorted({key for job in batch for key in job.locks})
        if keys:
            conn.execute(
                "SELECT pg_advisory_xact_lock(k) FROM (SELECT DISTINCT hashtextextended(m, 0) "
                "AS k FROM unnest(%s::text[]) AS m) AS keys ORDER BY k",
                (keys,),
            )

    def _attempt(self, batch: list[_Job[Any]]) -> list[tuple[_Job[Any], Any, Exception | None]]:
        """Run the batch in one transaction and commit it.

        In pipeline mode: a statement whose result no job reads (an event insert, a message
        update, BEGIN and COMMIT themselves) goes out with the next one that is read, so a
        callback costs one round trip rather than three. A statement's error then surfaces at
        a later one, maybe in another job's call: any error but a retryable one redoes the
        batch with each job in its own savepoint, out of pipeline mode, where it fails alone.
        """
        conn = self._connection()
        try:
            try:
                with conn.pipeline(), conn.transaction():
                    self._lock_messages(conn, batch)
                    return self._run_jobs(conn, batch, isolated=False)
            except (_JobFailed, *RETRYABLE):
                raise
            except psycopg.Error as exc:
                if conn.broken:
                    raise
                raise _JobFailed from exc  # a deferred statement of some job failed
        except _JobFailed:
            with conn.transaction():
                self._lock_messages(conn, batch)
                return self._run_jobs(conn, batch, isolated=True)

    def _commit_batch(self, batch: list[_Job[Any]]) -> None:
        started = time.perf_counter()
        failure: BaseException | None = None
        outcomes: list[tuple[_Job[Any], Any, Exception | None]] = []
        for attempt in range(1, self._attempts + 1):
            try:
                outcomes = self._attempt(batch)
                failure = None
                break
            except RETRYABLE as exc:
                failure = exc
                if attempt == self._attempts:
                    break
                self.retries += 1
                _log(
                    "info", "write_batch_retried", jobs=len(batch), attempt=attempt, error=str(exc)
                )
                # The other side of a deadlock is retrying too: part before trying again.
                time.sleep(random.uniform(0, 0.01 * attempt))
            except psycopg.Error as exc:
                failure = exc
                break
            except BaseException as exc:  # keep serving: one batch must not end the thread
                failure = exc
                break
        if failure is not None:
            _log("error", "write_batch_failed", jobs=len(batch), error=str(failure))
            for job in batch:
                unavailable = StoreUnavailable(f"database write failed: {failure}")
                unavailable.__cause__ = failure
                job.future.set_exception(unavailable)
            _wake(batch)
            return
        elapsed = time.perf_counter() - started
        self.batches += 1
        self.jobs += len(batch)
        if self._on_commit is not None:
            try:
                self._on_commit(len(batch), elapsed)
            except Exception:
                _log("exception", "commit_observer_failed")
        for job, result, error in outcomes:
            if error is not None:
                job.future.set_exception(error)
            else:
                job.future.set_result(result)
        _wake(batch)
        _log("debug", "write_batch_committed", jobs=len(batch), commit_ms=round(elapsed * 1000, 2))
