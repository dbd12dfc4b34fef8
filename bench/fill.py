"""Builds big receiver databases fast for bench/run.py's at-N-messages modes (issue 16).

The rows are the receiver's own: a real `receiver serve` records two signed Twilio callbacks
(`sent`, then `delivered`, each body exactly 250 bytes) for one message, and those three rows
(the message and its two events) are cloned N times by direct inserts, in one transaction
with synchronous=OFF, into a file laid out by the project's migrations. Each clone gets its
own message sid, number, idempotency tokens and times; its sids come in a scrambled
order, as real traffic brings them, so their indexes fill as they would in service.

Message sids are `sid_for(i)`: SM + 8 hex digits (i times an odd constant, mod 2**32, a
bijection) + a fixed 24-digit suffix, so bench/get.lua can name random stored messages.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from harness import (
    PATH,
    free_port,
    receiver_command,
    receiver_env,
    sign,
    start,
    stop,
    twilio_params,
)

from receiver.store.sqlite import connect, counts, schema

MULTIPLIER = 2_654_435_761  # odd, so i -> i * MULTIPLIER mod 2**32 is a bijection
SUFFIX = "b0a710ad" * 3  # marks a filled (backlog) message: no generated callback ends so
TOKEN_SUFFIX = "70ce" * 6
BODY_BYTES = 250
_TIME_COLUMNS = ("created_at", "updated_at", "sent_at", "final_at", "received_at", "resolved_at")


def sid_for(i: int) -> str:
    return f"SM{(i * MULTIPLIER) % 2**32:08x}{SUFFIX}"


def to_for(i: int) -> str:
    return f"+1555{i % 10_000_000:07d}"


@dataclass
class Template:
    """A message and its events as the receiver stored them (column -> value, without ids)."""

    message: dict[str, Any]
    events: list[dict[str, Any]]
    sid: str
    to: str
    tokens: list[str]


def _padded(params: dict[str, str]) -> dict[str, str]:
    """`params` plus a filler field making the form body exactly BODY_BYTES long."""
    room = BODY_BYTES - len(urlencode(params)) - len("&Filler=")
    if room < 0:
        raise ValueError(f"a callback body is already over {BODY_BYTES} bytes")
    return {**params, "Filler": "x" * room}


def template(workdir: Path) -> Template:
    """Two callbacks for one message through a real `receiver serve`; the rows it stored."""
    database = workdir / "template.db"
    port = free_port()
    host = f"127.0.0.1:{port}"
    sid, to = sid_for(0), to_for(0)
    tokens = [os.urandom(16).hex() for _ in range(2)]
    proc = start(receiver_command(port), receiver_env(database), port, workdir / "template.log")
    try:
        for status, token in zip(("sent", "delivered"), tokens, strict=True):
            params = _padded(twilio_params(sid, status, to))
            body = urlencode(params).encode()
            assert len(body) == BODY_BYTES, len(body)
            request = urllib.request.Request(
                f"http://{host}{PATH}",
                data=body,
                headers={
                    "Content-Type": "application/x-www-form-urlencoded",
                    "User-Agent": "TwilioProxy/1.1",
                    "I-Twilio-Idempotency-Token": token,
                    "X-Twilio-Signature": sign(f"http://{host}{PATH}", params),
                },
            )
            with urllib.request.urlopen(request, timeout=30) as answer:
                if answer.status // 100 != 2:
                    raise RuntimeError(f"the receiver answered {answer.status} to a callback")
    finally:
        stop(proc)
    conn = sqlite3.connect(database)
    conn.row_factory = sqlite3.Row
    try:
        message = dict(conn.execute("SELECT * FROM messages").fetchone())
        events = [dict(r) for r in conn.execute("SELECT * FROM events ORDER BY id")]
    finally:
        conn.close()
    if len(events) != 2 or message["status"] != "delivered":
        raise RuntimeError(f"unexpected template rows: {message}, {events}")
    for row in (message, *events):
        del row["id"]
    return Template(message, events, sid, to, tokens)


def _select(
    row: dict[str, Any], others: list[dict[str, Any]], tpl: Template
) -> tuple[list[str], list[str], list[Any]]:
    """How to clone template `row` in SQL: (columns, an expression per column, parameters).

    The expressions read n (the message's number), k (the event's, when `others` holds the
    other events: row j of them is for k % len == j), sid, to_, tok and t (its time).
    """
    columns = list(row)
    expressions: list[str] = []
    params: list[Any] = []
    variants = [row, *others]
    for column in columns:
        values = [variant[column] for variant in variants]
        value = values[0]
        if column == "message_id":
            expressions.append("sid")
        elif column == "to_number":
            expressions.append("to_")
        elif column == "message_pk":
            expressions.append("n + 1")
        elif column in _TIME_COLUMNS and value is not None:
            expressions.append("t")
        elif any(isinstance(v, str) and _mentions(v, tpl) for v in values):
            # The sid, the number (as the form body spells it) and the tokens: the clone's own.
            text = "?"
            for old, new in (
                (tpl.sid, "sid"),
                (quote(tpl.to), "'%2B' || substr(to_, 2)"),
                *((token, "tok") for token in tpl.tokens),
            ):
                if any(isinstance(v, str) and old in v for v in values):
                    text = f"replace({text}, '{old}', {new})"
            expressions.append(_per_event(text, values, params))
        else:
            expressions.append(_per_event("?", values, params))
    return columns, expressions, params


def _mentions(value: str, tpl: Template) -> bool:
    return tpl.sid in value or quote(tpl.to) in value or any(t in value for t in tpl.tokens)


def _per_event(expression: str, values: list[Any], params: list[Any]) -> str:
    """`expression` taking value j (appended to `params`) for the row k with k % len == j."""
    if len(set(values)) == 1:
        params.append(values[0])
        return expression
    params.extend(values)
    arms = " ".join(f"WHEN {j} THEN {expression}" for j in range(len(values)))
    return f"CASE k % {len(values)} {arms} END"


def fill(
    path: Path, count: int, final_at: datetime, tpl: Template, *, indexes_last: bool = True
) -> float:
    """Create `path` (migrated) holding `count` messages cloned from `tpl`; seconds taken.

    Every message became final at or just after `final_at` (times grow by 1 ms per message).
    With `indexes_last` the indexes are dropped for the fill and built again after it (twice
    as fast, and packed as after a VACUUM); without it they fill row by row, as in service.
    """
    started = time.perf_counter()
    conn = connect(str(path))
    schema.migrate(conn)
    # For the fill only: no fsync, no WAL (the whole fill would go through the WAL first).
    conn.execute("PRAGMA journal_mode = DELETE")
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("PRAGMA cache_size = -1000000")  # KiB: the indexes stay in memory
    conn.execute("BEGIN")
    indexes = []
    if indexes_last:
        indexes = conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL "
            "AND tbl_name IN ('messages', 'events')"
        ).fetchall()
        for name, _ in indexes:
            conn.execute(f"DROP INDEX {name}")
    julian = final_at.timestamp() / 86400 + 2440587.5
    sid = f"printf('SM%08x', (n * {MULTIPLIER}) % 4294967296) || '{SUFFIX}'"
    numbered = (
        f"SELECT k, n, {sid} AS sid, printf('+1555%07d', n % 10000000) AS to_, "
        f"strftime('%Y-%m-%dT%H:%M:%fZ', {julian!r} + n / 86400000.0) AS t, "
        f"printf('%08x', (k * {MULTIPLIER}) % 4294967296) || '{TOKEN_SUFFIX}' AS tok"
    )
    for table, rows, first, others in (
        ("messages", count, tpl.message, []),
        ("events", count * len(tpl.events), tpl.events[0], tpl.events[1:]),
    ):
        columns, expressions, params = _select(first, others, tpl)
        per_message = 1 + len(others)
        source = (
            f"{numbered} FROM (SELECT k, k / {per_message} AS n FROM (WITH RECURSIVE "
            f"c(k) AS (SELECT 0 UNION ALL SELECT k + 1 FROM c WHERE k < {rows - 1}) "
            "SELECT k FROM c))"
        )
        conn.execute(
            f"INSERT INTO {table} (id, {', '.join(columns)}) "
            f"SELECT k + 1, {', '.join(expressions)} FROM ({source})",
            params,
        )
    counts.fold(conn)  # the kept counts, once for all the clones (no trigger counts inserts)
    for _, sql in indexes:
        conn.execute(sql)
    conn.execute("COMMIT")
    # No ANALYZE: the receiver never runs it, so its query plans come without statistics.
    conn.execute("PRAGMA journal_mode = WAL")  # as the receiver keeps its file
    conn.close()
    return time.perf_counter() - started


def main() -> None:
    """Fill a small database and show a clone next to the template (a check of this module)."""
    with tempfile.TemporaryDirectory() as tmp:
        tpl = template(Path(tmp))
        path = Path(tmp) / "filled.db"
        seconds = fill(path, 1000, datetime.now(UTC) - timedelta(days=60), tpl)
        conn = sqlite3.connect(path)
        print(f"filled 1,000 messages in {seconds:.2f} s")
        for table in ("messages", "events"):
            for row in conn.execute(f"SELECT * FROM {table} ORDER BY id LIMIT 2 OFFSET 2"):
                print(table, row)
        conn.close()


if __name__ == "__main__":
    main()
