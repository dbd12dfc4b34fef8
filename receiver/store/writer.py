"""One writer thread per database: group commit of concurrent requests' writes.

Every write is a job (a function of the connection). The thread takes all jobs waiting, runs
them in one `BEGIN IMMEDIATE` transaction, each inside its own savepoint, and commits once with
synchronous=FULL; only then are the jobs' futures resolved, so a caller that got its result
knows its write is on disk. A job that raises rolls back its own savepoint and fails alone; a
batch whose BEGIN or COMMIT fails fails all its jobs, and nothing of it is half-written.
"""

from __future__ import annotations

import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import structlog

log = structlog.get_logger("receiver.store")

T = TypeVar("T")


class StoreUnavailable(Exception):
    """The database could not take the write (locked past the busy timeout, disk full, ...)."""


@dataclass
class _Job(Generic[T]):
    fn: Callable[[sqlite3.Connection], T]
    future: Future[T] = field(default_factory=Future)


_STOP: Any = object()


class Writer:
    """Serialises writes on one connection; `submit` is safe from any thread."""

    def __init__(self, connect: Callable[[], sqlite3.Connection], *, max_batch: int = 512) -> None:
        self._connect = connect
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[_Job[Any]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._conn: sqlite3.Connection | None = None
        self.batches = 0  # counters for tests and, later, metrics
        self.jobs = 0

    def start(self) -> None:
        self._conn = self._connect()
        self._thread = threading.Thread(target=self._run, name="receiver-writer", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[sqlite3.Connection], T]) -> Future[T]:
        if self._thread is None or not self._thread.is_alive():
            raise StoreUnavailable("the store is not running")
        job: _Job[T] = _Job(fn)
        self._queue.put(job)
        return job.future

    def stop(self) -> None:
        """Finish every job already submitted, then close the connection."""
        if self._thread is None:
            return
        self._queue.put(_STOP)
        self._thread.join()
        self._thread = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _run(self) -> None:
        assert self._conn is not None
        stopping = False
        while not stopping:
            batch = [self._queue.get()]
            while len(batch) < self._max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if _STOP in batch:
                stopping = True
                batch = [job for job in batch if job is not _STOP]
            if batch:
                try:
                    self._commit_batch(self._conn, batch)
                except BaseException as exc:  # never leave a caller waiting on a dead thread
                    log.exception("writer_error", jobs=len(batch))
                    for job in batch:
                        if not job.future.done():
                            job.future.set_exception(StoreUnavailable(f"writer failed: {exc}"))

    def _commit_batch(self, conn: sqlite3.Connection, batch: list[_Job[Any]]) -> None:
        started = time.perf_counter()
        outcomes: list[tuple[_Job[Any], Any, BaseException | None]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for job in batch:
                conn.execute("SAVEPOINT job")
                try:
                    result = job.fn(conn)
                except Exception as exc:  # one bad job must not sink its batch
                    conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                    outcomes.append((job, None, exc))
                else:
                    conn.execute("RELEASE job")
                    outcomes.append((job, result, None))
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            log.error("write_batch_failed", jobs=len(batch), error=str(exc))
            failure = StoreUnavailable(f"database write failed: {exc}")
            for job in batch:
                job.future.set_exception(failure)
            return
        self.batches += 1
        self.jobs += len(batch)
        log.debug(
            "write_batch_committed",
            jobs=len(batch),
            commit_ms=round((time.perf_counter() - started) * 1000, 2),
        )
        for job, result, error in outcomes:
            if error is not None:
                job.future.set_exception(error)
            else:
                job.future.set_result(result)
