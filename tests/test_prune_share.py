"""The service's prune takes a bounded share of the writer (issue 16): it pauses after each
batch of deletes in proportion to the batch's time, on the writer thread, and still drains."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
from seed import seed_messages

from receiver import retention
from receiver.store import facade
from receiver.store.sqlite import SQLiteStore


def left(path: Path) -> tuple[int, int]:
    with sqlite3.connect(path) as conn:
        return (
            conn.execute("SELECT count(*) FROM messages").fetchone()[0],
            conn.execute("SELECT count(*) FROM events").fetchone()[0],
        )


def test_a_paced_prune_on_an_idle_writer_goes_at_full_speed_in_small_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "p.db"
    seed_messages(path, 250, prefix="SMold", status="delivered", age_days=100)
    kept = seed_messages(path, 3, prefix="SMnew", status="delivered", age_days=1)
    pauses: list[float] = []
    threads: set[int] = set()
    delete_messages = SQLiteStore.maintenance.delete_messages

    async def noted_sleep(seconds: float) -> None:
        pauses.append(seconds)
        await asyncio.sleep(0)  # the test does not wait the pause out

    def noted_delete(conn: sqlite3.Connection, ids: list[int], older_than: str) -> Any:
        threads.add(threading.get_ident())
        return delete_messages(conn, ids, older_than)

    monkeypatch.setattr(facade, "_pause", noted_sleep)
    monkeypatch.setattr(SQLiteStore.maintenance, "delete_messages", noted_delete)

    async def main() -> Any:
        store = SQLiteStore(str(path))
        await store.open()
        try:
            result = await store.prune(retention.cutoff(30), batch_size=500, share=0.1)
            return result, threading.get_ident()
        finally:
            await store.close()

    result, loop_thread = asyncio.run(main())
    assert (result.messages, result.events) == (250, 500)
    # The first batch is small (PRUNE_FIRST_BATCH), so a backlog never holds the writer long.
    assert result.batches >= 2
    # Nothing else was written meanwhile: the writer was idle, so no pause was owed.
    assert len(pauses) == result.batches and pauses == [0] * result.batches
    assert loop_thread not in threads  # the deletes ran on the writer thread
    assert left(path) == (len(kept), 2 * len(kept))


def test_an_unpaced_prune_never_pauses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "p.db"
    seed_messages(path, 30, prefix="SMold", status="delivered", age_days=100)
    pauses: list[float] = []

    async def noted_sleep(seconds: float) -> None:
        pauses.append(seconds)

    monkeypatch.setattr(facade, "_pause", noted_sleep)

    async def main() -> Any:
        store = SQLiteStore(str(path))
        await store.open()
        try:
            return await store.prune(retention.cutoff(30), batch_size=500)
        finally:
            await store.close()

    result = asyncio.run(main())
    assert (result.messages, result.batches, pauses) == (30, 1, [])


def test_the_service_prunes_at_its_share_and_the_command_at_full_speed() -> None:
    assert 0 < retention.SERVICE_SHARE < 1
    assert retention.prune_once.__defaults__ == (1.0,)


def test_a_paced_prune_pauses_when_other_writes_shared_the_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each batch that other writes waited for is followed by a pause of (1 - share) / share
    times its own time: here a registration is written while each batch is paused."""
    path = tmp_path / "p.db"
    seed_messages(path, 40, prefix="SMold", status="delivered", age_days=100)
    pauses: list[float] = []
    store = SQLiteStore(str(path))

    async def noted_sleep(seconds: float) -> None:
        pauses.append(seconds)
        await store.check_writable()  # another write, between two batches

    monkeypatch.setattr(facade, "_pause", noted_sleep)
    monkeypatch.setattr(facade, "PRUNE_FIRST_BATCH", 10)

    async def main() -> Any:
        await store.open()
        try:
            return await store.prune(retention.cutoff(30), batch_size=10, share=0.25)
        finally:
            await store.close()

    result = asyncio.run(main())
    assert (result.messages, result.batches) == (40, 4)
    # The first batch had the writer alone; each later one came after another write.
    assert pauses[0] == 0 and all(p > 0 for p in pauses[1:])
