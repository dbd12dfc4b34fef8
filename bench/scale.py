"""bench/run.py's at-N-messages modes (issue 16): the pruner under load, reads, bytes.

Each fills a database with N messages (bench/fill.py) and measures one thing; see bench/run.py
for the options. Every wait is bounded, by wrk's duration or by --drain-timeout.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import fill
from cpu import cpu_seconds, thread_cpu
from harness import (
    Load,
    Result,
    check_receiver_database,
    describe,
    free_port,
    generate,
    receiver_command,
    receiver_env,
    run_callbacks,
    run_wrk,
    start,
    stop,
    verdict,
)

from receiver.engine import format_time

RETENTION_DAYS = 30
BACKLOG_AGE = timedelta(days=60)  # older than the retention: every filled message is prunable
MIN_PRUNING_RATIO = 0.8
MAX_GET_P99_MS = 10.0


class Targets:
    """Collects PASS/FAIL lines and the missed targets."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.failures: list[str] = []

    def check(self, ok: bool, text: str) -> None:
        self.lines.append(verdict(ok, text))
        if not ok:
            self.failures.append(text)


def run(args: argparse.Namespace, wrk: str, tmp: Path) -> list[str]:
    """Run the modes asked for, in the order bytes, GET, backlog; the missed targets."""
    targets = Targets()
    started = time.perf_counter()
    tpl = fill.template(tmp)
    print(f"template: the receiver stored 2 callbacks in {time.perf_counter() - started:.1f} s")
    if args.bytes_per_message is not None:
        bytes_per_message(args.bytes_per_message, tmp, tpl, args.row_by_row)
    if args.get_messages is not None:
        get_messages(args, wrk, tmp, tpl, targets)
    if args.prune_backlog is not None:
        prune_backlog(args, wrk, tmp, tpl, targets)
    print()
    for line in targets.lines:
        print(line)
    return targets.failures


def _fill(path: Path, n: int, tpl: fill.Template, *, indexes_last: bool = True) -> None:
    seconds = fill.fill(path, n, datetime.now(UTC) - BACKLOG_AGE, tpl, indexes_last=indexes_last)
    # The fill wrote without fsync: flush it now, or the kernel's writeback of a few GB would
    # slow every fsync of the runs that follow.
    started = time.perf_counter()
    os.sync()
    print(
        f"filled {n:,} messages, 2 events each, in {seconds:.1f} s "
        f"({path.stat().st_size / 1e6:,.0f} MB; flushed to disk in "
        f"{time.perf_counter() - started:.1f} s)",
        flush=True,
    )


# -- bytes per message ---------------------------------------------------------------------


def _sizes(path: Path) -> tuple[int, dict[str, tuple[str, str, int]]]:
    """page_count * page_size, and per table or index: (table, kind, bytes) from dbstat."""
    conn = sqlite3.connect(path)
    try:
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        total = conn.execute("PRAGMA page_count").fetchone()[0] * page_size
        kinds = {
            name: (table, kind)
            for name, table, kind in conn.execute("SELECT name, tbl_name, type FROM sqlite_schema")
        }
        try:
            rows = conn.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name").fetchall()
        except sqlite3.OperationalError:  # a SQLite built without the dbstat table
            rows = []
    finally:
        conn.close()
    named = {name: (*kinds.get(name, (name, "table")), size) for name, size in rows}
    return total, named


def bytes_per_message(n: int, tmp: Path, tpl: fill.Template, row_by_row: bool) -> None:
    """The table of bytes per message. By default the indexes are built after the rows, so
    every page is packed as a VACUUM leaves it; `row_by_row` fills them as service does (pages
    split, so more bytes), and VACUUMs afterwards: a minute or two more at a million."""
    print(f"\n== bytes per message at {n:,} messages, two {fill.BODY_BYTES}-byte events each ==")
    path = tmp / "bytes.db"
    _fill(path, n, tpl, indexes_last=not row_by_row)
    columns = [("row by row" if row_by_row else "packed", _sizes(path))]
    if row_by_row:
        started = time.perf_counter()
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode = DELETE")  # VACUUM once, not through the WAL
            conn.execute("PRAGMA synchronous = OFF")
            conn.execute("VACUUM")
            conn.execute("PRAGMA journal_mode = WAL")
        finally:
            conn.close()
        print(f"VACUUM took {time.perf_counter() - started:.1f} s")
        columns.append(("vacuumed", _sizes(path)))
    first = columns[0][1][1]
    if not first:
        print("(this SQLite has no dbstat table: totals only)")
    width = max([len("total (page_count * page_size)"), *(len(k) + 10 for k in first)])
    print(
        f"{'table or index':<{width}}"
        + "".join(f" {title:>14} {'per msg':>8}" for title, _ in columns)
    )

    def row(label: str, sizes: list[int]) -> None:
        print(f"{label:<{width}}" + "".join(f" {size:>14,} {size / n:>8,.1f}" for size in sizes))

    def order(name: str) -> tuple[str, bool, int]:
        table, kind, size = first[name]
        return (table, kind != "table", -size)

    for name in sorted(first, key=order):
        _, kind, _ = first[name]
        label = name if kind == "table" else f"  {name} (index)"
        row(label, [named.get(name, ("", "", 0))[2] for _, (_, named) in columns])
    row("total (page_count * page_size)", [total for _, (total, _) in columns])
    print(f"file size: {path.stat().st_size:,} bytes")


# -- GET /v1/messages/{id} -----------------------------------------------------------------


def get_messages(
    args: argparse.Namespace, wrk: str, tmp: Path, tpl: fill.Template, targets: Targets
) -> None:
    n = args.get_messages
    print(f"\n== GET /v1/messages/{{id}} at {n:,} stored messages ==")
    path = tmp / "get.db"
    _fill(path, n, tpl)
    port = free_port()
    # Retention off: the stored messages are old enough to prune, and must stay.
    env = receiver_env(path, RECEIVER_RETENTION_DAYS="0")
    proc = start(receiver_command(port), env, port, tmp / "get.log")
    try:
        for i in (0, n - 1):  # the id scheme get.lua uses finds stored messages
            sid = fill.sid_for(i)
            with urllib.request.urlopen(
                f"http://127.0.0.1:{port}/v1/messages/{sid}", timeout=30
            ) as answer:
                got = json.load(answer)
            if got.get("message_id") != sid:
                raise RuntimeError(f"GET /v1/messages/{sid} answered {got}")
        load = Load(args.connections, args.threads)
        script_args = [str(n), str(fill.MULTIPLIER), fill.SUFFIX]
        url = f"http://127.0.0.1:{port}/"
        run_wrk(
            wrk, "get-warm", url, "get.lua", script_args, tmp / "get-warm.json", load, args.warmup
        )
        cpu_before, threads_before = cpu_seconds(proc.pid), thread_cpu(proc.pid)
        result = run_wrk(
            wrk, "get", url, "get.lua", script_args, tmp / "get.json", load, args.duration
        )
        used = cpu_seconds(proc.pid) - cpu_before
        loop_used = thread_cpu(proc.pid).get("main", 0.0) - threads_before.get("main", 0.0)
    finally:
        stop(proc)
    print(describe(result))
    # The figure a busy machine moves least (as bench/cpu.py's for callbacks).
    per = 1e6 / max(result.requests, 1)
    print(f"cpu per GET: {used * per:.0f} us, the event loop's thread {loop_used * per:.0f} us")
    targets.check(
        result.p99_ms <= MAX_GET_P99_MS,
        f"GET /v1/messages/{{id}} at {n:,} messages, {args.connections} connections: p50 "
        f"{result.p50_ms:.2f} ms, p99 {result.p99_ms:.2f} ms (target p99 <= {MAX_GET_P99_MS:g} ms)",
    )
    targets.check(
        not (result.non_2xx or result.socket_errors),
        f"every GET answered 200: non-2xx {result.non_2xx}, socket errors {result.socket_errors}",
    )


# -- the pruner under load -----------------------------------------------------------------


def _prunable(path: Path) -> int:
    """Messages final for longer than the retention (on the pruner's own index)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        count: int = conn.execute(
            "SELECT count(*) FROM messages WHERE is_final = 1 "
            "AND coalesce(final_at, updated_at) < ?",
            (format_time(datetime.now(UTC) - timedelta(days=RETENTION_DAYS)),),
        ).fetchone()[0]
        return count
    finally:
        conn.close()


def prune_backlog(
    args: argparse.Namespace, wrk: str, tmp: Path, tpl: fill.Template, targets: Targets
) -> None:
    n = args.prune_backlog
    print(f"\n== callbacks while the pruner deletes a backlog of {n:,} messages ==")
    load = Load(args.connections, args.threads)
    host = f"127.0.0.1:{free_port()}"
    url = f"http://{host}/v1/webhook/twilio/sms-status"
    backlog_db, empty_db = tmp / "backlog.db", tmp / "no-backlog.db"
    _fill(backlog_db, n, tpl)
    runs = ("no backlog", "backlog", "no backlog")  # the baseline twice, keeping the better
    files = []
    for r in range(len(runs)):
        warm, measured = tmp / f"prune-warm{r}.tsv", tmp / f"prune-load{r}.tsv"
        generate(warm, args.warmup * args.rate_cap, url, str(2 * r))
        generate(measured, args.duration * args.rate_cap, url, str(2 * r + 1))
        files.append((warm, measured))
    env_extra = {"RECEIVER_RETENTION_DAYS": str(RETENTION_DAYS)}
    results: dict[str, list[Result]] = {"no backlog": [], "backlog": []}
    acked: dict[str, list[str]] = {"no backlog": [], "backlog": []}
    counts: dict[str, Any] = {}
    answered: list[Result] = []
    for r, kind in enumerate(runs):
        path = backlog_db if kind == "backlog" else empty_db
        port = free_port()
        if kind == "backlog":
            counts["before"] = _prunable(path)
        started = time.monotonic()
        proc = start(
            receiver_command(port), receiver_env(path, **env_extra), port, tmp / "prune.log"
        )
        try:
            warm, measured = files[r]
            warmup = run_callbacks(wrk, "warmup", port, warm, host, load, args.warmup)
            if kind == "backlog":
                counts["load began"] = _prunable(path)
            result = run_callbacks(wrk, kind, port, measured, host, load, args.duration)
            if kind == "backlog":
                counts["load ended"] = _prunable(path)
                counts["drained after"] = _wait_for_drain(path, started, args.drain_timeout)
                counts["left"] = _prunable(path)
        finally:
            stop(proc)
        print(f"  {describe(result, width=10)}", flush=True)
        results[kind].append(result)
        acked[kind] += warmup.acked + result.acked
        answered.extend((warmup, result))

    base = max(results["no backlog"], key=lambda res: res.rps)
    pruning = results["backlog"][0]
    ratio = pruning.rps / base.rps
    print(
        f"prunable backlog: {counts['before']:,} before start; {counts['load began']:,} when "
        f"the measured load began; {counts['load ended']:,} when it ended; {counts['left']:,} "
        + (
            f"left, gone {counts['drained after']:.0f} s after start "
            f"({n / counts['drained after']:,.0f} messages/s)"
            if counts["drained after"] is not None
            else f"left after --drain-timeout {args.drain_timeout} s"
        )
    )
    if counts["load ended"] == 0:
        print("note: the backlog was gone before the measured load ended; raise N to measure")
    print(
        f"ratio with the pruner / without a backlog: {ratio:.2f} (p99 {pruning.p99_ms:.2f} ms "
        f"against {base.p99_ms:.2f} ms; target >= {MIN_PRUNING_RATIO})"
    )
    targets.check(
        ratio >= MIN_PRUNING_RATIO,
        f"callbacks with the pruner at work within 20% of no backlog ({n:,}): {ratio:.2f}",
    )
    targets.check(
        counts["left"] == 0,
        f"the backlog drains within {args.drain_timeout} s: {counts['before']:,} -> "
        f"{counts['left']:,}",
    )
    for kind, path, runs_made in (("backlog", backlog_db, 1), ("no backlog", empty_db, 2)):
        ok, lines = check_receiver_database(
            path, acked[kind], 2 * runs_made * args.connections, exclude_suffix=fill.SUFFIX
        )
        for line in lines:
            print(f"database ({kind}): {line}")
        targets.check(ok, f"database check ({kind}): every acknowledged callback applied once")
    non_2xx = sum(res.non_2xx + res.socket_errors for res in answered)
    targets.check(not non_2xx, f"every callback answered 2xx (backlog mode): {non_2xx} others")


def _wait_for_drain(path: Path, started: float, timeout: float) -> float | None:
    """Seconds from `started` until no prunable message is left, or None after `timeout`."""
    deadline = started + timeout
    while True:
        if _prunable(path) == 0:
            return time.monotonic() - started
        if time.monotonic() >= deadline:
            return None
        time.sleep(1)
