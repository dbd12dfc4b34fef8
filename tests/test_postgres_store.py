"""What only the PostgreSQL store has to prove: several stores on one database at once, its
migrations, retried deadlocks, NUL in text, and the settings that select it."""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

import psycopg
import pytest
from pg import PgServer
from starlette.datastructures import MultiDict
from support import (
    TWILIO_TOKEN,
    WAIT,
    LiveServer,
    make_settings,
    new_sid,
    status_params,
    wait_until,
)
from twilio.request_validator import RequestValidator

from receiver.engine import Outcome, Status, StatusEvent
from receiver.store import MessageFilter, Registration, StoreUnavailable, open_store
from receiver.store.postgres import PostgresStore, schema
from receiver.store.postgres.connection import connect, describe
from receiver.store.postgres.writer import TRANSACTIONS, Transactions
from receiver.store.sqlite import SQLiteStore
from receiver.store.writer import Writer

T = TypeVar("T")
MIGRATIONS = [name for name, _ in schema.STEPS]


def event(message_id: str, status: str, key: str | None = None, **kw: Any) -> StatusEvent:
    return StatusEvent(
        provider="twilio",
        message_id=message_id,
        provider_status=status,
        status=Status(status),
        dedupe_key=key,
        **kw,
    )


class Running:
    """A store opened on an event loop of its own thread, driven from the test's thread."""

    def __init__(self, store: PostgresStore) -> None:
        self.store = store
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.run(store.open())

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(WAIT)

    def submit(self, coro: Coroutine[Any, Any, T]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def close(self) -> None:
        self.run(self.store.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(WAIT)
        self.loop.close()


@pytest.fixture
def open_stores(pg_url: str) -> Iterator[Callable[..., Running]]:
    """Open PostgresStores on the test's database (as many as asked), closed at the end."""
    opened: list[Running] = []

    def start(**kwargs: Any) -> Running:
        running = Running(PostgresStore(pg_url, **kwargs))
        opened.append(running)
        return running

    yield start
    for running in opened:
        running.close()


def rows(url: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, args).fetchall()  # type: ignore[call-overload,no-any-return]


# -- migrations ---------------------------------------------------------------------------------


def test_a_fresh_database_gets_every_step_recorded_once(pg_url: str) -> None:
    store = PostgresStore(pg_url)
    assert not store.exists()
    assert store.migrate() == MIGRATIONS
    assert store.migrate() == []  # a second start finds nothing to do
    assert store.exists()
    recorded = rows(pg_url, "SELECT name FROM _receiver_migrations ORDER BY id")
    assert [name for (name,) in recorded] == MIGRATIONS


def test_instances_migrating_at_once_apply_each_step_once(pg_url: str) -> None:
    results: list[list[str]] = []
    threads = [
        threading.Thread(target=lambda: results.append(PostgresStore(pg_url).migrate()))
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert sorted(results) == [[], [], [], MIGRATIONS]


def test_the_tables_have_sqlites_columns(pg_url: str, tmp_path: Path) -> None:
    """Export, copy and stats read the same columns from either store."""
    PostgresStore(pg_url).migrate()
    sqlite = SQLiteStore(str(tmp_path / "s.db"))
    sqlite.migrate()
    import sqlite3

    conn = sqlite3.connect(sqlite.path)
    for table in ("messages", "events"):
        expected = [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]
        got = rows(
            pg_url,
            "SELECT column_name FROM information_schema.columns WHERE table_name = %s "
            "ORDER BY ordinal_position",
            table,
        )
        assert [name for (name,) in got] == expected, table


def test_an_unreachable_database_is_store_unavailable_with_the_password_hidden(
    pg_server: PgServer,
) -> None:
    url = f"postgresql://someone:secret@127.0.0.1:{pg_server.port}/no_such_database"
    with pytest.raises(StoreUnavailable) as caught:
        PostgresStore(url).migrate()
    assert "secret" not in str(caught.value) and "***" in str(caught.value)
    assert not PostgresStore(url).exists()


# -- several stores on one database ----------------------------------------------------------


@pytest.mark.parametrize("unknown_messages", ["create", "hold"])
def test_two_stores_recording_the_same_messages_at_once_apply_each_transition_once(
    open_stores: Callable[..., Running], pg_url: str, unknown_messages: str
) -> None:
    """Every delivery reaches both stores at once (a provider's retry landing on the other
    instance): each is decided once, its copy is a duplicate, and nothing is applied twice."""
    stores = [open_stores(unknown_messages=unknown_messages) for _ in range(2)]
    ids = [new_sid() for _ in range(60)]
    deliveries = [
        event(sid, status, f"{sid}-{status}") for sid in ids for status in ("sent", "delivered")
    ]
    rng = random.Random(15)
    futures = []
    for running in stores:
        mine = deliveries[:]
        rng.shuffle(mine)
        # Small concurrent calls, so each store's writer batches them its own way.
        futures += [running.submit(running.store.record([ev])) for ev in mine]
    if unknown_messages == "hold":
        regs = [Registration("twilio", sid) for sid in ids]
        futures += [
            stores[i % 2].submit(stores[i % 2].store.register([r])) for i, r in enumerate(regs)
        ]
    for future in futures:
        future.result(WAIT)

    outcomes = rows(pg_url, "SELECT message_id, dedupe_key, outcome FROM events")
    assert len(outcomes) == 2 * len(deliveries)
    by_key = Counter((key, outcome == "duplicate") for _, key, outcome in outcomes)
    for ev in deliveries:
        assert by_key[(ev.dedupe_key, False)] == 1, ev.dedupe_key  # decided once
        assert by_key[(ev.dedupe_key, True)] == 1, ev.dedupe_key  # its copy: a duplicate
    applied = Counter(
        (sid, status)
        for sid, status in rows(
            pg_url, "SELECT message_id, status FROM events WHERE outcome = 'applied'"
        )
    )
    assert set(applied.values()) == {1}
    assert rows(pg_url, "SELECT DISTINCT status FROM messages") == [("delivered",)]
    assert rows(pg_url, "SELECT count(*) FROM messages") == [(len(ids),)]
    # No event is left waiting for a message that is there.
    assert rows(pg_url, "SELECT count(*) FROM events WHERE message_pk IS NULL") == [(0,)]


def test_two_stores_claim_disjoint_messages_and_a_send_whole(
    open_stores: Callable[..., Running],
) -> None:
    stores = [open_stores(dlr_grace=0) for _ in range(2)]
    singles = [new_sid() for _ in range(100)]
    sends = [[f"send{n}:+1555{i:04d}" for i in range(30)] for n in range(4)]
    regs = [Registration("twilio", sid) for sid in singles]
    regs += [Registration("mesms", mid) for send in sends for mid in send]
    stores[0].run(stores[0].store.register(regs))

    def claim(running: Running, provider: str, owner: str) -> Any:
        return running.submit(
            running.store.claim_due(
                provider,
                now="9999",
                limit=10,
                lease_until="9999-12-31",
                owner=owner,
                group_of=lambda mid: mid.split(":", 1)[0] + ":" if ":" in mid else None,
            )
        )

    got: dict[str, list[Any]] = {"a": [], "b": []}
    for _ in range(12):
        pending = [
            (owner, claim(stores[i], p, owner))
            for p in ("twilio", "mesms")
            for i, owner in enumerate(got)
        ]
        for owner, future in pending:
            got[owner] += future.result(WAIT)
    claimed = [m.message_id for owner in got for m in got[owner]]
    assert len(claimed) == len(set(claimed)) == len(regs)  # everything once, by one claimer
    for send in sends:
        holders = {owner for owner in got for m in got[owner] if m.message_id in send}
        assert len(holders) == 1, send  # a send is swept by one claimer, whole


def test_a_deadlock_with_another_instance_is_retried_not_a_failure(
    open_stores: Callable[..., Running], pg_url: str
) -> None:
    """Another instance holds B and wants A while this batch holds A and wants B: PostgreSQL
    aborts one side, and this batch is run again whole, with the right outcomes."""
    running = open_stores()
    a, b = new_sid(), new_sid()
    running.run(running.store.record([event(a, "sent", "a1"), event(b, "sent", "b1")]))

    def lock(conn: psycopg.Connection[Any], sid: str) -> None:
        conn.execute("SELECT * FROM receiver_lock_message('twilio', %s, NULL)", (sid,))

    other = psycopg.connect(pg_url)
    try:
        lock(other, b)  # the other instance's transaction holds B
        batch = running.submit(
            running.store.record([event(a, "delivered", "a2"), event(b, "delivered", "b2")])
        )

        def waiting() -> bool:
            found = rows(
                pg_url,
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND application_name = 'receiver'",
            )
            return found[0][0] > 0

        wait_until(waiting, what="the batch to wait for B")
        # Now the other side wants A: a deadlock. Whichever side PostgreSQL aborts, the
        # other instance's transaction must end for the batch to finish.
        with contextlib.suppress(psycopg.errors.DeadlockDetected):
            lock(other, a)
        other.rollback()
        recorded = batch.result(WAIT)
    finally:
        other.close()
    assert [r.outcome for r in recorded] == [Outcome.APPLIED, Outcome.APPLIED]
    outcomes = rows(pg_url, "SELECT dedupe_key, outcome FROM events ORDER BY id")
    assert outcomes == [("a1", "applied"), ("b1", "applied"), ("a2", "applied"), ("b2", "applied")]


def test_a_serialization_failure_redoes_the_batch_a_bounded_number_of_times(pg_url: str) -> None:
    """SQLSTATE 40001 (or 40P01) anywhere in a batch: nothing of it is kept, it runs again
    whole; past the last attempt its callers get StoreUnavailable (a 503), never the error."""
    writer = Writer(lambda: connect(pg_url), transactions=Transactions(attempts=3))
    writer.start()
    calls: list[int] = []

    def flaky(conn: psycopg.Connection[Any]) -> int:
        calls.append(len(calls) + 1)
        conn.execute("CREATE TABLE IF NOT EXISTS attempts (n INTEGER)")
        conn.execute("INSERT INTO attempts VALUES (%s)", (calls[-1],))
        if len(calls) == 1:
            raise psycopg.errors.SerializationFailure("could not serialize access")
        return calls[-1]

    def never(conn: psycopg.Connection[Any]) -> None:
        raise psycopg.errors.DeadlockDetected("deadlock detected")

    try:
        assert writer.submit(flaky).result(WAIT) == 2
        assert rows(pg_url, "SELECT n FROM attempts") == [(2,)]  # the first try left nothing
        with pytest.raises(StoreUnavailable, match="deadlock"):
            writer.submit(never).result(WAIT)
        assert writer.retries == 1 + 2  # flaky once, never twice (three attempts in all)
        assert writer.submit(lambda conn: "still serving").result(WAIT) == "still serving"
    finally:
        writer.stop()


def test_a_failing_statement_fails_its_own_job_alone_though_its_error_comes_later(
    pg_url: str,
) -> None:
    """In pipeline mode a statement's error surfaces at a later statement, maybe another
    job's: the batch is redone with each job isolated, so only the job that wrote it fails."""
    writer = Writer(lambda: connect(pg_url), transactions=TRANSACTIONS)
    writer.start()
    gate = threading.Event()
    try:
        writer.submit(lambda conn: conn.execute("CREATE TABLE kept (n INTEGER)")).result(WAIT)
        held = writer.submit(lambda conn: gate.wait(WAIT))  # the next three queue behind it

        def good(n: int) -> Callable[[psycopg.Connection[Any]], int]:
            def job(conn: psycopg.Connection[Any]) -> int:
                conn.execute("INSERT INTO kept VALUES (%s)", (n,))
                found = conn.execute("SELECT count(*) FROM kept").fetchone()
                return int(found[0]) if found else -1

            return job

        first = writer.submit(good(1))
        bad = writer.submit(lambda conn: conn.execute("INSERT INTO nowhere VALUES (1)"))
        second = writer.submit(good(2))
        gate.set()
        held.result(WAIT)
        assert first.result(WAIT) >= 1 and second.result(WAIT) == 2
        with pytest.raises(psycopg.errors.UndefinedTable):
            bad.result(WAIT)
        assert rows(pg_url, "SELECT n FROM kept ORDER BY n") == [(1,), (2,)]
    finally:
        writer.stop()


def test_status_counts_are_summed_over_the_writers_shards(
    open_stores: Callable[..., Running], pg_url: str
) -> None:
    stores = [open_stores() for _ in range(2)]
    ids = [new_sid() for _ in range(20)]
    for i, sid in enumerate(ids):
        running = stores[i % 2]
        running.run(running.store.record([event(sid, "sent", f"{sid}s")]))
        if i % 4 == 0:
            other = stores[(i + 1) % 2]
            other.run(other.store.record([event(sid, "delivered", f"{sid}d")]))
    counts = stores[0].run(stores[0].store.count_by_status())
    assert counts == {"sent": 15, "delivered": 5}
    assert rows(pg_url, "SELECT count(DISTINCT shard) > 1 FROM message_status_counts") == [(True,)]
    pruned = stores[1].run(stores[1].store.prune("9999"))
    assert pruned.messages == 5
    assert stores[0].run(stores[0].store.count_by_status()) == {"sent": 15}


# -- text PostgreSQL refuses -------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def either_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LiveServer]:
    settings = make_settings(tmp_path)
    store = None
    if request.param == "postgresql":
        store = PostgresStore(request.getfixturevalue("pg_url"))
    server = LiveServer(settings, store).start()
    yield server
    server.stop()


def test_a_nul_in_a_signed_body_is_kept_and_answered_as_on_sqlite(
    either_server: LiveServer,
) -> None:
    """PostgreSQL's text refuses NUL; the store escapes it, so the API answers alike."""
    sid = new_sid()
    url = either_server.callback_url
    pairs = list(status_params(sid, "delivered", Body="a\x00b").items())
    signature = RequestValidator(TWILIO_TOKEN).compute_signature(url, MultiDict(pairs))
    body = urlencode(pairs, safe="\x00").encode()
    assert b"\x00" in body
    with either_server.client() as client:
        response = client.post(
            url,
            content=body,
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "X-Twilio-Signature": signature,
            },
        )
        assert response.status_code == 204, response.text
        history = client.get(f"/v1/messages/{sid}/events").json()["events"]
        assert history[0]["body"] == body.decode()
        assert history[0]["outcome"] == "applied"
        # NUL and the escape character in lookups find nothing, and are no error.
        for odd in ("\x00", "\ue000", "\ue0000"):
            assert client.get("/v1/messages/" + quote(odd)).status_code == 404
            listed = client.get("/v1/messages", params={"to": odd})
            assert listed.status_code == 200 and listed.json()["messages"] == []


def test_text_with_nul_and_the_escape_round_trips(open_stores: Callable[..., Running]) -> None:
    running = open_stores()
    sid = new_sid()
    odd = "a\x00b\ue000c\ue0000\x00"
    running.run(running.store.record([event(sid, "sent", odd, body=odd, error_code=odd)]))
    [stored] = running.run(running.store.get_events("twilio", sid))
    assert stored["body"] == stored["dedupe_key"] == stored["error_code"] == odd
    assert running.run(running.store.record([event(sid, "sent", odd)]))[0].outcome == "duplicate"


# -- selecting and operating it -----------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["postgres", "postgresql"])
def test_database_url_selects_postgresql(tmp_path: Path, scheme: str) -> None:
    settings = make_settings(tmp_path)
    assert open_store(settings).kind == "sqlite"
    store = open_store(settings.replace(database_url=f"{scheme}://u:p@db.example.com/app"))
    assert store.kind == "postgresql"


def test_the_password_is_hidden_when_the_url_is_shown() -> None:
    assert describe("postgres://u:s3cret@h/db") == "postgres://u:***@h/db"
    assert "s3cret" not in repr(PostgresStore("postgres://u:s3cret@h/db"))


def test_backup_points_at_pg_dump(pg_url: str) -> None:
    with pytest.raises(StoreUnavailable, match="pg_dump"):
        PostgresStore(pg_url).backup("/tmp/x.db")


def test_reads_and_writes_of_a_closed_store_are_store_unavailable(pg_url: str) -> None:
    store = PostgresStore(pg_url)

    async def scenario() -> None:
        await store.open()
        await store.close()
        with pytest.raises(StoreUnavailable):
            await store.record([event(new_sid(), "sent")])
        with pytest.raises(StoreUnavailable):
            await store.list_messages(MessageFilter())

    asyncio.run(scenario())


def test_a_dropped_connection_fails_one_batch_then_the_writer_reconnects(
    open_stores: Callable[..., Running], pg_url: str
) -> None:
    running = open_stores()
    running.run(running.store.record([event(new_sid(), "sent")]))
    rows(
        pg_url,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE application_name = 'receiver' AND pid <> pg_backend_pid()",
    )

    def recorded() -> bool:
        try:
            running.run(running.store.record([event(new_sid(), "sent")]))
        except StoreUnavailable:
            return False
        return True

    wait_until(recorded, what="a write after the connection was lost")
    assert len(running.run(running.store.list_messages(MessageFilter()))[0]) >= 2
