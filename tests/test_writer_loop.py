"""The writer runs a batch's run() jobs on their event loop (SQLite), BEGIN and COMMIT on its
thread: what changes and what must not (answers only after COMMIT, a failing job alone)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import WAIT, wait_until
from test_writer import Gate, insert, one_turn, open_conn, rows

from receiver.store.sqlite.connection import TRANSACTIONS
from receiver.store.writer import Transactions, Writer

TIMEOUT = WAIT


@pytest.fixture
def path(tmp_path: Path) -> str:
    db = str(tmp_path / "writer.db")
    conn = open_conn(db)
    conn.execute("CREATE TABLE t (v INTEGER PRIMARY KEY)")
    conn.close()
    return db


@pytest.fixture
def writer(path: str) -> Iterator[Writer[Any]]:
    w: Writer[Any] = Writer(lambda: open_conn(path), transactions=TRANSACTIONS)
    w.start()
    yield w
    w.stop()


def test_run_jobs_execute_on_the_loop_and_submitted_ones_on_the_writer_thread(
    writer: Writer[Any],
) -> None:
    where: dict[str, int] = {}

    def job(name: str) -> Any:
        def fn(conn: sqlite3.Connection) -> None:
            where[name] = threading.get_ident()
            # The batch's transaction is open: the writer thread began it.
            assert conn.in_transaction

        return fn

    async def main() -> int:
        await asyncio.wait_for(writer.run(job("run")), TIMEOUT)
        return threading.get_ident()

    loop_thread = asyncio.run(main())
    writer.submit(job("submit")).result(TIMEOUT)
    assert where["run"] == loop_thread
    assert where["submit"] != loop_thread


def test_a_failing_job_on_the_loop_fails_alone(path: str, writer: Writer[Any]) -> None:
    async def main() -> list[Any]:
        gate = Gate()
        gated = gate.hold(writer)
        tasks = [
            asyncio.ensure_future(writer.run(insert(1))),
            asyncio.ensure_future(writer.run(insert(1))),  # a duplicate key: fails alone
            asyncio.ensure_future(writer.run(insert(2))),
        ]
        await one_turn()
        gate.release.set()
        gated.result(TIMEOUT)
        return await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), TIMEOUT)

    done = asyncio.run(main())
    assert done[0] == 1 and done[2] == 2
    assert isinstance(done[1], sqlite3.IntegrityError)
    assert rows(path) == [1, 2]


def test_a_loop_closed_with_its_jobs_handed_over_does_not_hang_the_writer(
    path: str, writer: Writer[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer thread runs the jobs itself once their loop is closed: they commit, and
    the writer goes on."""
    loop = asyncio.new_event_loop()
    handed = threading.Event()
    call_soon_threadsafe = loop.call_soon_threadsafe

    def noting(*args: Any, **kwargs: Any) -> Any:
        handed.set()
        return call_soon_threadsafe(*args, **kwargs)

    monkeypatch.setattr(loop, "call_soon_threadsafe", noting)

    async def main() -> None:
        gate = Gate()
        gate.hold(writer)
        task = asyncio.ensure_future(writer.run(insert(1)))
        await one_turn()  # queued behind the gate
        gate.release.set()
        # Block this loop until the writer has handed it the job: it never runs it.
        assert handed.wait(TIMEOUT)
        assert not task.done()
        task._log_destroy_pending = False  # type: ignore[attr-defined]  # left pending on purpose

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
    wait_until(lambda: rows(path) == [1], TIMEOUT)
    assert writer.submit(insert(2)).result(TIMEOUT) == 2


def test_a_dialect_without_on_loop_runs_every_job_on_the_writer_thread(path: str) -> None:
    writer: Writer[Any] = Writer(
        lambda: open_conn(path),
        transactions=Transactions(begin="BEGIN IMMEDIATE", error=sqlite3.Error),
    )
    writer.start()
    ran: list[int] = []

    def job(conn: sqlite3.Connection) -> None:
        ran.append(threading.get_ident())

    async def main() -> int:
        await asyncio.wait_for(writer.run(job), TIMEOUT)
        return threading.get_ident()

    try:
        assert asyncio.run(main()) != ran[0]
    finally:
        writer.stop()


def test_a_store_write_of_many_items_runs_on_the_writer_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bulk registration does not hold the event loop; a small one runs there."""
    from receiver.store import facade, rules
    from receiver.store.base import Registration
    from receiver.store.sqlite import SQLiteStore

    threads: dict[int, set[int]] = {}
    register_batch = rules.register_batch

    def noted(rows: Any, policy: Any, regs: list[Registration]) -> Any:
        for reg in regs:
            batch = int(reg.message_id.split("-")[0])
            threads.setdefault(batch, set()).add(threading.get_ident())
        return register_batch(rows, policy, regs)

    monkeypatch.setattr(rules, "register_batch", noted)
    store = SQLiteStore(str(tmp_path / "s.db"))
    many = facade.LOOP_JOB_ITEMS + 1

    async def main() -> int:
        await store.open()
        try:
            await store.register([Registration("twilio", f"1-{n}") for n in range(2)])
            await store.register([Registration("twilio", f"2-{n}") for n in range(many)])
            return threading.get_ident()
        finally:
            await store.close()

    loop_thread = asyncio.run(main())
    assert threads[1] == {loop_thread}
    assert len(threads[2]) == 1 and loop_thread not in threads[2]
