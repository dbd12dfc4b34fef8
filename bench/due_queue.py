"""Does finding due messages cost the same with 10 messages or millions? (issue 5)

Seeds two SQLite databases through the real schema: a small one, and a big one holding
`--big` messages, most of them final or not due yet. Both hold the same `--due` due messages.
Then times, on the real store (its writer thread and read pool), the scheduler's three queue
operations: claiming a batch (claim_due), the soonest due time (next_due) and the due count
(due_count, for /metrics). Prints each median and the big/small ratio, measured in the same run.

    .venv/bin/python bench/due_queue.py [--big 1000000] [--due 500] [--rounds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import structlog

from receiver.engine import format_time
from receiver.store.sqlite import SQLiteStore, connect, schema

PROVIDER = "twilio"


def seed(path: Path, total: int, due: int) -> None:
    """`total` messages: `due` due now, a third of the rest final, the others due in a day."""
    conn = connect(str(path))
    schema.migrate(conn)
    now = datetime.now(UTC)
    past, later = format_time(now - timedelta(minutes=10)), format_time(now + timedelta(days=1))
    conn.execute("BEGIN")
    rows = []
    for i in range(total):
        if i < due:
            status, final, next_poll = "sent", 0, past
        elif i % 3 == 0:
            status, final, next_poll = "delivered", 1, None
        else:
            status, final, next_poll = "sent", 0, later
        rows.append((PROVIDER, f"SM{i:032x}", status, final, past, past, next_poll))
        if len(rows) == 50_000:
            _insert(conn, rows)
    _insert(conn, rows)
    conn.execute("COMMIT")
    conn.execute("ANALYZE")
    conn.close()


def _insert(conn: sqlite3.Connection, rows: list[tuple[object, ...]]) -> None:
    conn.executemany(
        "INSERT INTO messages (provider, message_id, status, registered, is_final, created_at, "
        "updated_at, next_poll_at) VALUES (?, ?, ?, 1, ?, ?, ?, ?)",
        rows,
    )
    rows.clear()


async def timed(fn: Callable[[], Awaitable[object]], rounds: int) -> float:
    """Median milliseconds of `rounds` calls."""
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        await fn()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


async def measure(path: Path, due: int, rounds: int) -> dict[str, float]:
    store = SQLiteStore(str(path))
    await store.open()
    now = datetime.now(UTC)
    lease_until = format_time(now + timedelta(minutes=2))
    past = format_time(now - timedelta(minutes=10))
    results: dict[str, float] = {}
    try:
        claims = []
        for _ in range(rounds):
            start = time.perf_counter()
            claimed = await store.claim_due(
                PROVIDER, now=format_time(now), limit=due, lease_until=lease_until, owner="bench"
            )
            claims.append((time.perf_counter() - start) * 1000)
            assert len(claimed) == due, len(claimed)
            # Untimed: put them back in the queue for the next round.
            with sqlite3.connect(path) as conn:
                conn.executemany(
                    "UPDATE messages SET next_poll_at = ?, poll_lease = NULL WHERE id = ?",
                    [(past, m.pk) for m in claimed],
                )
        results["claim_due"] = statistics.median(claims)
        results["next_due"] = await timed(lambda: store.next_due(PROVIDER), rounds)
        results["due_count"] = await timed(
            lambda: store.due_count(PROVIDER, format_time(now)), rounds
        )
    finally:
        await store.close()
    return results


def main() -> int:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--big", type=int, default=1_000_000)
    parser.add_argument("--small", type=int, default=10)
    parser.add_argument("--due", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    if not 0 < args.due <= args.small < args.big:
        parser.error("need 0 < --due <= --small < --big")
    with tempfile.TemporaryDirectory() as tmp:
        results = {}
        for name, total in (("small", args.small), ("big", args.big)):
            path = Path(tmp) / f"{name}.db"
            start = time.perf_counter()
            seed(path, total, args.due)
            print(
                f"seeded {total:,} messages ({args.due} due) in {time.perf_counter() - start:.1f} s"
            )
            results[name] = asyncio.run(measure(path, args.due, args.rounds))
    print(f"\n{'operation':<10} {'small':>10} {'big':>10} {'big/small':>10}   (median ms)")
    worst = 0.0
    for op in results["small"]:
        small, big = results["small"][op], results["big"][op]
        ratio = big / small
        worst = max(worst, ratio)
        print(f"{op:<10} {small:>10.3f} {big:>10.3f} {ratio:>10.2f}")
    print(f"\n{args.big:,} messages vs {args.small}: worst ratio {worst:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
