"""The group-commit writer on a bare SQLite file: batching, cancellation, failures, stop."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest
from support import POLL_INTERVAL, WAIT, wait_until, wait_until_async

from receiver.store import StoreUnavailable
from receiver.store.sqlite.connection import TRANSACTIONS
from receiver.store.writer import Writer

TIMEOUT = WAIT  # every wait is bounded, so a regression fails instead of hanging the suite


async def one_turn() -> None:
    """Let every task already scheduled run up to its next await: no clock involved. (A task
    awaiting Writer.run has queued its job by then, since run() queues before it awaits.)"""
    await asyncio.sleep(0)


def open_conn(path: str, *, busy_timeout_ms: int = 5000) -> sqlite3.Connection:
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    conn.execute(f"PRAGMA busy_timeout = {busy_timeout_ms}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


@pytest.fixture
def path(tmp_path: Path) -> str:
    db = str(tmp_path / "writer.db")
    conn = open_conn(db)
    conn.execute("CREATE TABLE t (v INTEGER PRIMARY KEY)")
    conn.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
    conn.execute(
        "CREATE TABLE child (parent_id INTEGER REFERENCES parent (id) "
        "DEFERRABLE INITIALLY DEFERRED)"
    )
    conn.close()
    return db


@pytest.fixture
def writer(path: str) -> Iterator[Writer]:
    w = Writer(lambda: open_conn(path), transactions=TRANSACTIONS)
    w.start()
    yield w
    w.stop()


def insert(v: int, ran: list[int] | None = None) -> Callable[[sqlite3.Connection], int]:
    def job(conn: sqlite3.Connection) -> int:
        if ran is not None:
            ran.append(v)
        conn.execute("INSERT INTO t (v) VALUES (?)", (v,))
        return v

    return job


def rows(path: str) -> list[int]:
    conn = open_conn(path)
    try:
        return [r[0] for r in conn.execute("SELECT v FROM t ORDER BY v")]
    finally:
        conn.close()


class Gate:
    """A job that holds the writer inside its batch until released, so later jobs queue up."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, conn: sqlite3.Connection) -> None:
        self.entered.set()
        assert self.release.wait(TIMEOUT), "the test never released the gate"

    def hold(self, writer: Writer) -> Future[None]:
        future = writer.submit(self)
        assert self.entered.wait(TIMEOUT)
        return future


class Abort(BaseException):
    """A BaseException that is not an Exception, as a job might raise."""


def test_a_job_cancelled_before_it_runs_is_skipped_and_the_rest_commit(
    path: str, writer: Writer
) -> None:
    gate = Gate()
    gated = gate.hold(writer)
    ran: list[int] = []
    futures = [writer.submit(insert(i, ran)) for i in range(10)]
    assert futures[3].cancel()
    gate.release.set()
    gated.result(TIMEOUT)
    others = [i for i in range(10) if i != 3]
    assert [futures[i].result(TIMEOUT) for i in others] == others
    assert 3 not in ran
    assert rows(path) == others
    assert writer.batches == 2


def test_a_cancelled_awaiting_task_does_not_fail_its_batch(path: str, writer: Writer) -> None:
    """asyncio.wrap_future cancels the writer's future when the awaiting task is cancelled."""

    async def main() -> list[int]:
        gate = Gate()
        gated = gate.hold(writer)
        sources = [writer.submit(insert(i)) for i in range(10)]
        tasks = [asyncio.ensure_future(asyncio.wrap_future(f)) for f in sources]
        tasks[3].cancel()
        # The cancel reaches the source on a later loop turn.
        await wait_until_async(sources[3].cancelled, what="the source future cancelled")
        gate.release.set()
        results = await asyncio.wait_for(asyncio.gather(*tasks[:3], *tasks[4:]), TIMEOUT)
        assert tasks[3].cancelled()
        gated.result(TIMEOUT)
        return list(results)

    others = [i for i in range(10) if i != 3]
    assert asyncio.run(main()) == others
    assert rows(path) == others


def test_submit_before_start_or_after_stop_raises_at_once(path: str) -> None:
    writer = Writer(lambda: open_conn(path), transactions=TRANSACTIONS)
    with pytest.raises(StoreUnavailable):
        writer.submit(insert(1))
    writer.start()
    assert writer.submit(insert(1)).result(TIMEOUT) == 1
    writer.stop()
    with pytest.raises(StoreUnavailable):
        writer.submit(insert(2))
    writer.stop()  # a second stop is harmless
    assert rows(path) == [1]


def test_stop_racing_submitters_leaves_no_future_pending(path: str) -> None:
    writer = Writer(lambda: open_conn(path), transactions=TRANSACTIONS)
    writer.start()
    futures: list[Future[int]] = []  # list.append is atomic, so the threads can share it
    ready = threading.Barrier(5, timeout=TIMEOUT)

    def submit_until_closed(worker: int) -> None:
        ready.wait()
        deadline = time.monotonic() + TIMEOUT
        for n in range(100_000):  # bounded; stop() normally closes the writer long before
            if time.monotonic() > deadline:
                return
            try:
                futures.append(writer.submit(insert(worker * 1_000_000 + n)))
            except StoreUnavailable:
                return

    threads = [threading.Thread(target=submit_until_closed, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    ready.wait()
    wait_until(lambda: len(futures) >= 100, what="the submitters under way")
    writer.stop()
    for t in threads:
        t.join(TIMEOUT)
        assert not t.is_alive()
    assert futures
    assert [f for f in futures if not f.done()] == []
    failures = [f.exception() for f in futures if f.exception() is not None]
    assert all(isinstance(e, StoreUnavailable) for e in failures)
    committed = sorted(f.result() for f in futures if f.exception() is None)
    assert rows(path) == committed


def test_a_job_raising_a_base_exception_fails_its_batch_and_the_writer_recovers(
    path: str, writer: Writer
) -> None:
    gate = Gate()
    gate.hold(writer)

    def aborting(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO t (v) VALUES (2)")
        raise Abort

    batch: list[Future[Any]] = [
        writer.submit(insert(1)),
        writer.submit(aborting),
        writer.submit(insert(3)),
    ]
    gate.release.set()
    for future in batch:
        with pytest.raises(StoreUnavailable):
            future.result(TIMEOUT)
    # The transaction was rolled back, so the next BEGIN works.
    assert writer.submit(insert(4)).result(TIMEOUT) == 4
    assert rows(path) == [4]
    failure = batch[1].exception(TIMEOUT)
    assert isinstance(failure, StoreUnavailable)
    assert isinstance(failure.__cause__, Abort)


@pytest.mark.parametrize(("max_batch", "batches"), [(512, 2), (20, 4)])
def test_jobs_waiting_together_commit_together(path: str, max_batch: int, batches: int) -> None:
    """The gate's batch, then the 50 queued jobs in as few batches as max_batch allows."""
    writer = Writer(lambda: open_conn(path), transactions=TRANSACTIONS, max_batch=max_batch)
    writer.start()
    try:
        gate = Gate()
        gated = gate.hold(writer)
        futures = [writer.submit(insert(i)) for i in range(50)]
        gate.release.set()
        gated.result(TIMEOUT)
        assert [f.result(TIMEOUT) for f in futures] == list(range(50))
        assert (writer.batches, writer.jobs) == (batches, 51)
    finally:
        writer.stop()


def test_the_commit_observer_hears_each_batch_before_its_callers(path: str) -> None:
    """Metrics see a batch (its size and time) before any of its callers has a result."""
    heard: list[tuple[int, float]] = []
    writer = Writer(
        lambda: open_conn(path),
        transactions=TRANSACTIONS,
        on_commit=lambda n, s: heard.append((n, s)),
    )
    writer.start()
    try:
        gate = Gate()
        gated = gate.hold(writer)
        futures = [writer.submit(insert(i)) for i in range(10)]
        gate.release.set()
        gated.result(TIMEOUT)
        assert len(heard) >= 1  # the gate's batch, heard before its caller got a result
        for f in futures:
            f.result(TIMEOUT)
    finally:
        writer.stop()
    assert [n for n, _ in heard] == [1, 10]
    assert all(0 < seconds < TIMEOUT for _, seconds in heard)


def test_a_failing_commit_observer_does_not_fail_committed_jobs(path: str) -> None:
    def observer(jobs: int, seconds: float) -> None:
        raise RuntimeError("metrics broke")

    writer = Writer(lambda: open_conn(path), transactions=TRANSACTIONS, on_commit=observer)
    writer.start()
    try:
        assert writer.submit(insert(7)).result(TIMEOUT) == 7
        assert writer.submit(insert(8)).result(TIMEOUT) == 8
    finally:
        writer.stop()
    assert rows(path) == [7, 8]


def test_stop_commits_everything_submitted_before_it(path: str, writer: Writer) -> None:
    gate = Gate()
    gate.hold(writer)
    futures = [writer.submit(insert(i)) for i in range(20)]
    stopper = threading.Thread(target=writer.stop)
    stopper.start()
    # Submit until stop() has closed the writer, so stop() is known to be waiting on the queue
    # while the gate still holds every job in it.
    deadline = time.monotonic() + TIMEOUT
    while True:
        assert time.monotonic() < deadline
        try:
            futures.append(writer.submit(insert(len(futures))))
        except StoreUnavailable:
            break
        time.sleep(POLL_INTERVAL)
    gate.release.set()
    stopper.join(TIMEOUT)
    assert not stopper.is_alive()
    assert all(f.done() for f in futures)
    assert [f.result() for f in futures] == list(range(len(futures)))
    assert rows(path) == list(range(len(futures)))


def test_a_locked_database_fails_the_batch_then_recovers(path: str) -> None:
    writer = Writer(lambda: open_conn(path, busy_timeout_ms=50), transactions=TRANSACTIONS)
    writer.start()
    blocker = open_conn(path)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        try:
            failed = writer.submit(insert(1))
            with pytest.raises(StoreUnavailable, match="locked"):
                failed.result(TIMEOUT)
        finally:
            blocker.execute("ROLLBACK")
        assert writer.submit(insert(2)).result(TIMEOUT) == 2
        assert (writer.batches, writer.jobs) == (1, 1)
    finally:
        blocker.close()
        writer.stop()
    assert rows(path) == [2]


def test_a_failed_commit_fails_every_job_and_writes_nothing(path: str, writer: Writer) -> None:
    """A deferred foreign key is checked at COMMIT, so the jobs run and only COMMIT fails."""
    gate = Gate()
    gate.hold(writer)

    def orphan(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO child (parent_id) VALUES (99)")

    batch: list[Future[Any]] = [
        writer.submit(insert(1)),
        writer.submit(orphan),
        writer.submit(insert(2)),
    ]
    gate.release.set()
    for future in batch:
        with pytest.raises(StoreUnavailable, match="FOREIGN KEY"):
            future.result(TIMEOUT)
    assert writer.submit(insert(3)).result(TIMEOUT) == 3
    assert rows(path) == [3]
    conn = open_conn(path)
    try:
        assert conn.execute("SELECT count(*) FROM child").fetchone()[0] == 0
    finally:
        conn.close()


def test_run_awaits_committed_results_and_a_batch_wakes_the_loop_twice(
    path: str, writer: Writer, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def main() -> list[int]:
        loop = asyncio.get_running_loop()
        wakeups = 0
        call_soon_threadsafe = loop.call_soon_threadsafe

        def counting(*args: Any, **kwargs: Any) -> Any:
            nonlocal wakeups
            wakeups += 1
            return call_soon_threadsafe(*args, **kwargs)

        monkeypatch.setattr(loop, "call_soon_threadsafe", counting)
        gate = Gate()
        gated = gate.hold(writer)
        tasks = [asyncio.ensure_future(writer.run(insert(i))) for i in range(10)]
        await one_turn()  # every task has queued its job behind the gate
        gate.release.set()
        results = await asyncio.wait_for(asyncio.gather(*tasks), TIMEOUT)
        gated.result(TIMEOUT)
        # The ten jobs committed in one batch: one call ran their statements on this loop
        # (SQLite's jobs run there), one answered them all.
        assert wakeups == 2
        return list(results)

    assert asyncio.run(main()) == list(range(10))
    assert rows(path) == list(range(10))


def test_run_cancelled_before_its_job_starts_skips_it(path: str, writer: Writer) -> None:
    async def main() -> None:
        gate = Gate()
        gated = gate.hold(writer)
        ran: list[int] = []
        tasks = [asyncio.ensure_future(writer.run(insert(i, ran))) for i in range(3)]
        await one_turn()  # the three jobs queued behind the gate
        tasks[1].cancel()
        await one_turn()  # the cancel reaches its job's future
        gate.release.set()
        done = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), TIMEOUT)
        gated.result(TIMEOUT)
        assert done[0] == 0 and done[2] == 2
        assert isinstance(done[1], asyncio.CancelledError)
        assert ran == [0, 2]

    asyncio.run(main())
    assert rows(path) == [0, 2]


def test_run_raises_a_jobs_own_error_and_a_failed_commits_store_unavailable(
    path: str, writer: Writer
) -> None:
    async def main() -> None:
        assert await asyncio.wait_for(writer.run(insert(1)), TIMEOUT) == 1
        with pytest.raises(sqlite3.IntegrityError):
            await asyncio.wait_for(writer.run(insert(1)), TIMEOUT)

        def orphan(conn: sqlite3.Connection) -> None:
            # A deferred foreign key fails at COMMIT, failing the whole batch.
            conn.execute("INSERT INTO child (parent_id) VALUES (42)")

        with pytest.raises(StoreUnavailable):
            await asyncio.wait_for(writer.run(orphan), TIMEOUT)

    asyncio.run(main())
    assert rows(path) == [1]


def test_run_after_stop_raises_and_stop_answers_queued_runs(path: str) -> None:
    writer = Writer(lambda: open_conn(path), transactions=TRANSACTIONS)
    writer.start()

    async def main() -> None:
        gate = Gate()
        gated = gate.hold(writer)
        task = asyncio.ensure_future(writer.run(insert(7)))
        await one_turn()  # its job queued behind the gate
        stopper = asyncio.get_running_loop().run_in_executor(None, writer.stop)
        gate.release.set()
        assert await asyncio.wait_for(task, TIMEOUT) == 7  # stop commits what was submitted
        await asyncio.wait_for(stopper, TIMEOUT)
        gated.result(TIMEOUT)
        with pytest.raises(StoreUnavailable):
            await writer.run(insert(8))

    asyncio.run(main())
    assert rows(path) == [7]


class BrokenLog:
    """A logger whose every call fails, as one writing to a closed pipe does."""

    def __getattr__(self, name: str) -> Any:
        def fail(*args: Any, **kwargs: Any) -> None:
            raise BrokenPipeError("stdout is gone")

        return fail


def test_a_failing_log_never_stops_the_writer(
    path: str, writer: Writer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Failed batches log; if logging fails too, later writes must still commit."""
    monkeypatch.setattr("receiver.store.writer.log", BrokenLog())
    gate = Gate()
    gate.hold(writer)

    def aborting(conn: sqlite3.Connection) -> None:
        raise Abort  # a BaseException: the whole batch fails and the writer recovers

    failed = writer.submit(aborting)
    gate.release.set()
    with pytest.raises(StoreUnavailable):
        failed.result(TIMEOUT)
    assert writer.submit(insert(5)).result(TIMEOUT) == 5
    assert rows(path) == [5]
