"""What pushes cost callbacks: the callback benchmark with pushes off, then on with the app's
endpoint down (every push fails and waits for its retry, so the backlog grows all run long).

Runs alternate (off, on, off, on, ...) on fresh databases so a shared machine's drift hits
both alike; the verdict compares the medians: pushes on must stay within 10% of off.

    python bench/push_overhead.py --rounds 3 --duration 10
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import tempfile
from pathlib import Path

from harness import (
    Load,
    describe,
    find_wrk,
    free_port,
    generate,
    receiver_command,
    receiver_env,
    run_callbacks,
    start,
    stop,
    verdict,
)

# The Standard Webhooks specification's example secret: the app is down, nothing verifies it.
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
MAX_SLOWDOWN = 0.10


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="runs with pushes off and on each")
    parser.add_argument("--duration", type=int, default=10, help="seconds per run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rate-cap", type=int, default=6000, help="callbacks generated per s")
    parser.add_argument("--events", choices=("final", "all"), default="final")
    args = parser.parse_args()
    wrk = find_wrk()
    load = Load(args.connections, args.threads)
    down = f"http://127.0.0.1:{free_port()}/push"  # nothing listens there
    results: dict[str, list[float]] = {"off": [], "on": []}
    with tempfile.TemporaryDirectory(prefix="push-bench-") as tmp:
        work = Path(tmp)
        for r in range(args.rounds):
            for mode in ("off", "on"):
                port = free_port()
                database = work / f"{mode}{r}.db"
                url = f"http://127.0.0.1:{port}/v1/webhook/twilio/sms-status"
                callbacks = work / f"{mode}{r}.tsv"
                generate(callbacks, args.duration * args.rate_cap, url, f"{r}{mode}")
                extra = (
                    {
                        "RECEIVER_PUSH_URL": down,
                        "RECEIVER_PUSH_SECRET": SECRET,
                        "RECEIVER_PUSH_EVENTS": args.events,
                    }
                    if mode == "on"
                    else {}
                )
                env = receiver_env(database, RECEIVER_LOG_LEVEL="warning", **extra)
                proc = start(receiver_command(port), env, port, work / f"{mode}{r}.log")
                try:
                    result = run_callbacks(
                        wrk,
                        f"push {mode}",
                        port,
                        callbacks,
                        f"127.0.0.1:{port}",
                        load,
                        args.duration,
                    )
                finally:
                    stop(proc)
                print(describe(result) + backlog(database), flush=True)
                if result.non_2xx or result.socket_errors:
                    print(verdict(False, "every callback must be answered 2xx"))
                    return 1
                results[mode].append(result.rps)
    off, on = statistics.median(results["off"]), statistics.median(results["on"])
    slowdown = 1 - on / off
    ok = slowdown <= MAX_SLOWDOWN
    print(
        verdict(
            ok,
            f"pushes on (endpoint down, events={args.events}): median {on:,.0f} req/s vs "
            f"{off:,.0f} off: {slowdown:+.1%} slower (limit {MAX_SLOWDOWN:.0%})",
        )
    )
    return 0 if ok else 1


def backlog(database: Path) -> str:
    conn = sqlite3.connect(database)
    try:
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'pushes'").fetchone():
            return ""
        pending, attempts = conn.execute(
            "SELECT count(*), coalesce(sum(attempts), 0) FROM pushes WHERE status = 'pending'"
        ).fetchone()
        return f"   backlog {pending:,} pushes, {attempts:,} attempts made"
    finally:
        conn.close()


if __name__ == "__main__":
    sys.exit(main())
