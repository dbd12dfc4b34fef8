"""How long does GET /dashboard take at a million messages? (issue 19)

Fills a SQLite database with bench/fill.py (messages a real `receiver serve` stored, cloned N
times, with the migrations' triggers keeping the dashboard's counts as in service), then asks a
real `receiver serve` on it (loopback, no token) for the dashboard of each window, all
providers and one, and prints the median, p95 and slowest of `--rounds` renders of each, as
the client sees them (HTTP included). /v1/stats over the same window is timed once beside it.

Two shapes of the same N messages:
  burst   fill.py's own: all N within N ms, twenty minutes ago (every window holds all of them)
  month   the same rows spread evenly over the last 30 days, three providers, a fifth
          undelivered with three error codes, a seventh settled by a poll, and each its own
          time to final (0 to 10 minutes, to the millisecond): the most distinct kept rows

    .venv/bin/python bench/dashboard.py [--messages 1000000] [--rounds 20] [--shape month]
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

import fill
from harness import free_port, receiver_command, receiver_env, start, stop

from receiver.dashboard.figures import WINDOWS as WINDOWS_BY_NAME
from receiver.dashboard.figures import window_start
from receiver.store.sqlite import connect, counts

WINDOWS = ("1h", "24h", "7d", "30d")
BUDGET_MS = 300.0


def spread_over_a_month(path: Path, count: int) -> float:
    """Rewrite the filled rows into the `month` shape; seconds taken. The kept counts are made
    afresh after, from the rewritten rows."""
    started = time.perf_counter()
    conn = connect(str(path))
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("BEGIN")
    now = datetime.now(UTC).timestamp() / 86400 + 2440587.5
    stamp = "strftime('%Y-%m-%dT%H:%M:%fZ', {})"
    # Oldest first, as ids grow in service; the newest a minute ago.
    age = f"({count} - id) * 30.0 / {count} + 1 / 1440.0"
    created = stamp.format(f"{now!r} - {age}")
    final = stamp.format(f"{now!r} - {age} + (id * 7919 % 600000) / 86400000.0")
    conn.execute(
        f"UPDATE messages SET created_at = {created}, updated_at = {created}, "
        f"sent_at = {created}, "
        f"final_at = {final}, "
        "provider = CASE id % 3 WHEN 0 THEN 'twilio' WHEN 1 THEN 'telecom23' ELSE 'mesms' END, "
        "status = CASE WHEN id % 5 = 0 THEN 'undelivered' ELSE 'delivered' END, "
        "error_code = CASE WHEN id % 5 = 0 THEN CASE id % 3 WHEN 0 THEN '30003' "
        "WHEN 1 THEN '30005' ELSE '30007' END END, "
        "final_via = CASE WHEN id % 7 = 0 THEN 'poll' ELSE 'callback' END"
    )
    counts.recount(conn)
    conn.execute("COMMIT")
    conn.close()
    return time.perf_counter() - started


def get_ms(url: str) -> float:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as answer:
        answer.read()
        if answer.status != 200:
            raise RuntimeError(f"{url} answered {answer.status}")
    return (time.perf_counter() - started) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--shape", choices=("burst", "month"), default="month")
    parser.add_argument("--database", type=Path, help="use (or make, if missing) this file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-dashboard-") as tmp:
        workdir = Path(tmp)
        database = args.database or workdir / "filled.db"
        if not database.exists():
            tpl = fill.template(workdir)
            seconds = fill.fill(
                database, args.messages, datetime.now(UTC) - timedelta(minutes=20), tpl
            )
            print(f"filled {args.messages:,} messages in {seconds:.1f} s", flush=True)
            if args.shape == "month":
                seconds = spread_over_a_month(database, args.messages)
                print(f"spread them over 30 days in {seconds:.1f} s", flush=True)
        with sqlite3.connect(database) as conn:
            kept = conn.execute("SELECT count(*) FROM dashboard_final_times").fetchone()[0]
            rollup = conn.execute("SELECT count(*) FROM dashboard_rollup").fetchone()[0]
        print(f"kept rows: dashboard_rollup {rollup:,}, dashboard_final_times {kept:,}")
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        proc = start(
            receiver_command(port),
            receiver_env(database, RECEIVER_POLLING="off", RECEIVER_LOG_LEVEL="warning"),
            port,
            workdir / "receiver.log",
        )
        worst = 0.0
        try:
            print(f"{'page':<34} {'median':>8} {'p95':>8} {'max':>8}   /v1/stats once")
            for window in WINDOWS:
                for provider in ("", "twilio"):
                    query = f"window={window}" + (f"&provider={provider}" if provider else "")
                    url = f"{base}/dashboard?{query}"
                    get_ms(url)  # warm: the first read of a page of the file
                    times = sorted(get_ms(url) for _ in range(args.rounds))
                    p95 = times[min(len(times) - 1, round(0.95 * len(times)) - 1)]
                    worst = max(worst, times[-1])
                    stats = None
                    if window == "30d":  # the API's own count of the same window, once
                        since = window_start(WINDOWS_BY_NAME[window], datetime.now(UTC))
                        stats = get_ms(
                            f"{base}/v1/stats?"
                            + urlencode(
                                {"since": since, **({"provider": provider} if provider else {})}
                            )
                        )
                    extra = f"{stats:8.0f} ms" if stats is not None else ""
                    print(
                        f"/dashboard?{query:<24} {statistics.median(times):6.1f}ms "
                        f"{p95:6.1f}ms {times[-1]:6.1f}ms   {extra}",
                        flush=True,
                    )
        finally:
            stop(proc)
        verdict = "within" if worst < BUDGET_MS else "OVER"
        print(f"slowest render {worst:.1f} ms: {verdict} the {BUDGET_MS:.0f} ms budget")
        sys.exit(0 if worst < BUDGET_MS else 1)


if __name__ == "__main__":
    main()
