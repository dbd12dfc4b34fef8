"""SQLite connections: every one with the same pragmas (WAL, FULL sync, busy timeout)."""

from __future__ import annotations

import sqlite3
import time

from receiver.store.writer import Transactions


def _null(value: None) -> None:
    return None


# sqlite3 (3.11) binds an exact int, float or str directly, but passes any other value,
# None and bool included, to its adapter lookup: a registry miss, then two failed attribute
# lookups (__adapt__, __conform__) whose AttributeErrors are built, message and all, and
# dropped. A new message binds a dozen NULLs and two flags: 15k instructions of its 400k.
# Adapters registered for both are a registry hit instead, binding what was bound before.
sqlite3.register_adapter(type(None), _null)
sqlite3.register_adapter(bool, int)


def connect(
    path: str, *, busy_timeout_ms: int = 5000, read_only: bool = False
) -> sqlite3.Connection:
    """A connection with the pragmas every connection needs (WAL, FULL sync, busy timeout).

    Autocommit mode (isolation_level=None): transactions are begun explicitly, so a write
    batch is exactly one BEGIN IMMEDIATE ... COMMIT.
    """
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    _enable_wal(conn, busy_timeout_ms)
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    if read_only:
        conn.execute("PRAGMA query_only = ON")  # readers never write, by construction
    return conn


def _enable_wal(conn: sqlite3.Connection, busy_timeout_ms: int) -> None:
    # Switching a new file to WAL needs an exclusive lock, and SQLite answers "locked" at once
    # rather than calling the busy handler, so processes starting together retry here.
    deadline = time.monotonic() + busy_timeout_ms / 1000
    while True:
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.005)
            continue
        if str(mode).lower() != "wal":
            raise sqlite3.OperationalError(f"could not enable WAL (journal_mode is {mode})")
        return


# A write batch takes the database's write lock at BEGIN, so its reads decide on rows no one
# else can change before the COMMIT.
# Its statements are short CPU work, run on the event loop awaiting them: the writer
# thread keeps BEGIN and COMMIT (receiver.store.writer.Writer._on_loops).
TRANSACTIONS = Transactions(begin="BEGIN IMMEDIATE", error=sqlite3.Error, on_loop=True)
