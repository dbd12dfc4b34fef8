"""The stores the contract tests run against: the `store_factory` fixture, parametrised over
STORE_KINDS (registered in conftest.py through `pytest_plugins`).

A store kind is a function `kind(request, workdir) -> make`, where `make(database, **kwargs)`
returns an unopened store on the database named `database` (one name, one database, within a
test; a fresh one per test) built with the Store keyword arguments SQLiteStore takes
(unknown_messages, dlr_grace, dlr_grace_by_provider, busy_timeout_ms, ...). A kind needing a
server gets it from its own fixture through `request.getfixturevalue(...)`, and calls
`pytest.skip(reason)` when it cannot start one, so the test is reported skipped, never passed.

To add PostgreSQL (task P): tests/pg.py defines `store_kind` (and its server fixture, exported
by name in `pg.FIXTURES` so it is registered here); it is found on import below.

Every contract test runs its awaits on one event loop per test (`run`), so a store whose
connections belong to a loop (an async pool) sees the same loop from open to close.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pytest

from receiver.store import Store
from receiver.store.sqlite import SQLiteStore

T = TypeVar("T")

MakeStore = Callable[..., Store]  # make(database: str, **kwargs) -> an unopened store
StoreKind = Callable[[pytest.FixtureRequest, Path], MakeStore]


def sqlite_kind(request: pytest.FixtureRequest, workdir: Path) -> MakeStore:
    def make(database: str, **kwargs: Any) -> Store:
        return SQLiteStore(str(workdir / f"{database}.db"), **kwargs)

    return make


STORE_KINDS: dict[str, StoreKind] = {"sqlite": sqlite_kind}

try:
    import pg  # tests/pg.py, when the PostgreSQL store is there
except ModuleNotFoundError as exc:
    if exc.name != "pg":
        raise
else:
    STORE_KINDS["postgresql"] = pg.store_kind
    globals().update({name: getattr(pg, name) for name in getattr(pg, "FIXTURES", ())})


class StoreFactory(Protocol):
    def __call__(self, database: str | None = None, **kwargs: Any) -> Store: ...


@pytest.fixture
def run() -> Iterator[Callable[[Awaitable[T]], T]]:
    """Await on the test's one event loop (closed at the end, after the stores)."""
    loop = asyncio.new_event_loop()

    def run(awaitable: Awaitable[T]) -> T:
        async def wrapped() -> T:
            return await awaitable

        return loop.run_until_complete(wrapped())

    yield run
    loop.run_until_complete(loop.shutdown_default_executor())
    loop.close()


@pytest.fixture(params=sorted(STORE_KINDS))
def store_kind(request: pytest.FixtureRequest) -> str:
    """The kind of store this run of the test is about."""
    return str(request.param)


@pytest.fixture
def store_factory(
    store_kind: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    run: Callable[[Awaitable[Any]], Any],
) -> Iterator[StoreFactory]:
    """`store_factory(database=None, **kwargs)`: a migrated, opened store of this run's kind,
    closed at teardown. Stores made with the same `database` name share one database (two
    instances of the service); without one, each store gets a fresh database."""
    make = STORE_KINDS[store_kind](request, tmp_path)
    opened: list[Store] = []
    fresh = itertools.count(1)

    def factory(database: str | None = None, **kwargs: Any) -> Store:
        store = make(database or f"fresh{next(fresh)}", **kwargs)
        run(store.open())
        opened.append(store)
        return store

    yield factory
    for store in reversed(opened):
        run(store.close())


@pytest.fixture
def store(store_factory: StoreFactory) -> Store:
    """A store of this run's kind with the default settings."""
    return store_factory()
