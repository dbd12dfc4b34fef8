"""`receiver copy`: every row of a SQLite database into an empty PostgreSQL one, ids kept.

The two schemas have the same tables and columns (receiver/store/postgres/schema.py), so a
copy is the rows as they are: messages (with their polling state, which lives on the row) and
events (held `pending_unknown` ones included). The status counts behind /metrics are kept by
the target's own triggers as the rows go in. It all happens in one transaction on each side:
one snapshot of the source, and a target that holds either everything or nothing.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from receiver.store.sqlite import schema as sqlite_schema

# In this order: an event names its message by id. The change log (the stream's) goes as it
# is, ids kept, so a stream resumes across the move.
TABLES = ("messages", "message_parts", "events", "changes", "changes_pruned")
# What a reader checks beside the tables' sizes: held callbacks and the polling queue.
_COUNTS = {
    "messages": "SELECT count(*) FROM messages",
    "message parts": "SELECT count(*) FROM message_parts",  # multipart messages' (0013)
    "events": "SELECT count(*) FROM events",
    "held events (pending_unknown)": (
        "SELECT count(*) FROM events WHERE message_pk IS NULL AND outcome = 'pending_unknown'"
    ),
    "messages due for polling": "SELECT count(*) FROM messages WHERE next_poll_at IS NOT NULL",
}
_BATCH = 1000


class CopyRefused(Exception):
    """The copy was not started: the source or the target is not one it can copy (exit 2)."""


class CopyFailed(Exception):
    """The copy was started and undone: nothing was kept in the target (exit 1)."""


@dataclass(frozen=True)
class CopyReport:
    """Each count, in the source and in the target after the copy; the target's migrations."""

    counts: dict[str, tuple[int, int]]
    migrations_applied: list[str]

    @property
    def complete(self) -> bool:
        return all(source == target for source, target in self.counts.values())


def open_source(path: Path) -> sqlite3.Connection:
    """The SQLite database read-only, in one read transaction (one snapshot, even under WAL
    while a service writes), with every migration of this version applied."""
    if not path.is_file():
        raise CopyRefused(f"there is no SQLite database at {path}")
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
    try:
        conn.execute("BEGIN")
        try:
            pending = [m.name for m in sqlite_schema.migrations.pending(Database(conn))]
        except sqlite3.DatabaseError as exc:  # not a database at all
            raise CopyRefused(f"{path} is not a SQLite database ({exc})") from None
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        if not {"messages", "events"} <= tables:
            raise CopyRefused(f"{path} is not a receiver database (no messages and events tables)")
        if pending:
            raise CopyRefused(
                f"{path} is not migrated to this version ({', '.join(pending)} pending): run "
                f"`RECEIVER_DATABASE={path} receiver migrate` first"
            )
    except BaseException:
        conn.close()
        raise
    return conn


def _columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]


def copy_database(
    source: sqlite3.Connection,
    target: Any,
    *,
    migrate: Callable[[Any], list[str]],
    progress: Callable[[str, int], None] = lambda table, rows: None,
) -> CopyReport:
    """Copy every row of `source` (from open_source) into the PostgreSQL connection `target`
    (autocommit, with the store's adapters), after `migrate(target)`; one transaction."""
    applied = migrate(target)
    with target.transaction():
        # No writer may slip in between the emptiness check and the copy's commit.
        target.execute(f"LOCK TABLE {', '.join(TABLES)} IN EXCLUSIVE MODE")
        # Copied rows are not changes: the change log's trigger leaves them alone.
        target.execute("SET LOCAL receiver.copying = 'on'")
        for table in TABLES:
            if target.execute(f"SELECT EXISTS (SELECT 1 FROM {table})").fetchone()[0]:
                raise CopyRefused(
                    f"the target database already holds {table}: copy into an empty database "
                    "(a new one, or drop its receiver tables first)"
                )
        for table in TABLES:
            columns = _columns(source, table)
            target_columns = [
                row[0]
                for row in target.execute(
                    "SELECT column_name FROM information_schema.columns "
                    "WHERE table_schema = current_schema() AND table_name = %s",
                    (table,),
                )
            ]
            if set(columns) != set(target_columns):
                raise CopyRefused(
                    f"{table} has other columns in the source ({', '.join(sorted(columns))}) "
                    f"than in the target ({', '.join(sorted(target_columns))})"
                )
            _copy_table(source, target, table, columns, progress)
            # Ids were copied as they are; new rows must be numbered after them.
            target.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), max(id)) FROM {table}"
            )
        report = CopyReport(
            {
                name: (source.execute(sql).fetchone()[0], target.execute(sql).fetchone()[0])
                for name, sql in _COUNTS.items()
            },
            applied,
        )
        if not report.complete:
            raise CopyFailed(format_report(report) + "\nthe counts differ: nothing was copied")
    return report


def _copy_table(
    source: sqlite3.Connection,
    target: Any,
    table: str,
    columns: list[str],
    progress: Callable[[str, int], None],
) -> None:
    names = ", ".join(columns)
    rows = source.execute(f"SELECT {names} FROM {table} ORDER BY id")
    copied = 0
    with target.cursor().copy(f"COPY {table} ({names}) FROM STDIN") as copy:
        while batch := rows.fetchmany(_BATCH):
            for row in batch:
                copy.write_row(row)
            copied += len(batch)
            progress(table, copied)


def format_report(report: CopyReport) -> str:
    """The counts as a table: one line per count, its value in the source and in the target."""
    width = max(len(name) for name in report.counts)
    lines = [f"{'':{width}}  {'source':>10}  {'target':>10}"]
    for name, (source, target) in report.counts.items():
        lines.append(f"{name:{width}}  {source:>10}  {target:>10}")
    return "\n".join(lines)
