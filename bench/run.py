"""Benchmark: the receiver against the ceiling of its HTTP stack and two hand-written peers.

Run from the repository root with the project's virtualenv, after
`.venv/bin/pip install -e '.[test,bench]'` (the peers need flask, gunicorn, fastapi,
aiosqlite and python-multipart; twilio signs nothing here but the peers verify with it) and
with `wrk` (the Debian/Ubuntu package; run as root, the script installs it itself):

    .venv/bin/python bench/run.py                  # the comparison (issue 16's targets)
    .venv/bin/python bench/run.py --classic        # the receiver against the ceiling only
    .venv/bin/python bench/run.py --prune-backlog 1000000
    .venv/bin/python bench/run.py --get-messages 1000000
    .venv/bin/python bench/run.py --bytes-per-message 1000000
    .venv/bin/python bench/run.py --database postgresql://user@127.0.0.1/postgres

The comparison starts, on loopback, one server at a time, each on a fresh SQLite file of its
own kept for both of its runs:
  ceiling   a bare Starlette endpoint answering 204, on the uvicorn the receiver runs on
            (bench/ceiling.py)
  flask     Flask + twilio's RequestValidator + sqlite3, one commit per callback, under
            gunicorn with one sync worker (bench/peer_flask.py)
  fastapi   FastAPI + RequestValidator + aiosqlite, one commit per callback, on the same
            uvicorn (bench/peer_fastapi.py)
  receiver  `receiver serve` (one uvicorn worker, JSON logs at info as in production)
  postgresql  the same `receiver serve` on PostgreSQL (DATABASE_URL), with --database only
Both peers use WAL with synchronous=FULL, as the receiver does, and echo X-Request-ID as it
does, so the script knows which callbacks got a 2xx. The Flask peer commits one callback at a
time, so its figure follows the disk's fsync time; the FastAPI peer's coroutines share one
connection, so one commit often carries several callbacks. Each server is loaded with
wrk and bench/callbacks.lua: 32 connections, a warm-up, then the measured run, every request a
unique pre-generated Twilio status callback signed for the same URL, for a new message. The
servers run in the order A B C D D C B A (ceiling, flask, fastapi, receiver and back), and
each keeps its better run, so a burst of load from elsewhere on the machine costs one run,
not a server's figure. Then it prints req/s, p50/p99 and non-2xx per server, the ratios
receiver/flask, receiver/fastapi and receiver/ceiling, and checks every database: each
callback that got a 2xx is there (the receiver's as exactly one applied event, with nothing
else stored but the few in flight when wrk stopped), each commit was made with
synchronous=FULL in WAL mode (read from the file and the servers' own connections). Targets
(one PASS/FAIL line each): receiver >= 3.5x flask and >= 2x fastapi, receiver p99 <= 15 ms,
receiver >= 25% of the ceiling, no non-2xx from the receiver, every 2xx committed with
synchronous=FULL, the database checks passing.

`--servers a,b` picks servers (in that order), `--rounds 1` runs each once, `--max-p99-ms`
moves the p99 target.

`--database URL` adds `postgresql`, the receiver on the PostgreSQL server at URL, right after
`receiver` (SQLite) in the order, so the two stores alternate with the other servers around
them: each run has its own fresh database (CREATE DATABASE beside the URL's, dropped at the
end; without that right, the URL's own database, which must hold no messages). It prints
postgresql's ratio to the ceiling and to the SQLite receiver of the same run, and checks its
database as the SQLite one's (every 2xx stored exactly once) and that the server commits
durably (fsync on, synchronous_commit waiting for the flush). The other targets are the
SQLite receiver's; PostgreSQL's own figures are reported, not judged.

`--classic` is the benchmark as it was before the peers: receiver then ceiling, one run each,
p99 target 25 ms (`--servers receiver,ceiling --rounds 1 --max-p99-ms 25`); with --database,
receiver, postgresql, ceiling.

The at-N modes (bench/scale.py; each given alone or together instead of the comparison) fill
a database with N messages cloned from rows the receiver itself stored (bench/fill.py: two
250-byte events per message), in well under a minute for a million:
  --prune-backlog N      N final messages older than RECEIVER_RETENTION_DAYS: the callback
                         rate with the pruner deleting them against the rate with no backlog
                         (target: within 20%; runs: no backlog, backlog, no backlog, the
                         better baseline kept), and whether the backlog drains: the prunable
                         count before, during and after, waited for up to --drain-timeout s
  --get-messages N       GET /v1/messages/{id} over random stored ids with wrk: p50/p99
                         (target p99 <= 10 ms)
  --bytes-per-message N  file bytes per message, per table and per index (SQLite's dbstat),
                         packed as after a VACUUM; with --row-by-row also as service fills
                         the indexes (page splits), then after a VACUUM

Options for every mode: --duration and --warmup (seconds per run), --connections, --threads
(wrk's), --rate-cap (callbacks generated per measured second, so a fast server never resends
one), --keep (keep the temp directory: databases, logs, wrk reports). Exits 1 when a target
is missed. Numbers move by 10-20% from run to run on a shared machine: wrk shares its CPUs.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from harness import (
    BENCH,
    Load,
    PgDatabase,
    Result,
    check_receiver_database,
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

from receiver.store.sqlite import connect

SERVERS = ("ceiling", "flask", "fastapi", "receiver")
POSTGRESQL = "postgresql"  # the receiver on PostgreSQL: with --database only
MIN_CEILING_RATIO = 0.25
MIN_FLASK_RATIO = 3.5
MIN_FASTAPI_RATIO = 2.0
MAX_P99_MS = 15.0
CLASSIC_P99_MS = 25.0
BENCH_MODULES = ("flask", "gunicorn", "fastapi", "aiosqlite", "twilio", "python_multipart")


@dataclass
class Server:
    name: str
    port: int
    database: Path
    log: Path
    best: Result | None = None

    def command(self) -> list[str]:
        if self.name == "ceiling":
            return [sys.executable, str(BENCH / "ceiling.py"), "--port", str(self.port)]
        if self.name == "flask":
            return [
                sys.executable,
                "-m",
                "gunicorn",
                "--workers=1",
                "--worker-class=sync",
                "--no-control-socket",  # else gunicorn (25.1+) opens one in ~/.gunicorn
                f"--bind=127.0.0.1:{self.port}",
                f"--chdir={BENCH}",
                "peer_flask:app",
            ]
        if self.name == "fastapi":
            return [sys.executable, str(BENCH / "peer_fastapi.py"), "--port", str(self.port)]
        return receiver_command(self.port)  # receiver, and postgresql with DATABASE_URL


def check_peer_database(database: Path, acked: list[str], in_flight: int) -> tuple[bool, list[str]]:
    """Every acknowledged callback's row is in a peer's table; nothing else is."""
    conn = sqlite3.connect(database)
    try:
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
        stored = {sid for (sid,) in conn.execute("SELECT sid FROM messages")}
    finally:
        conn.close()
    unique = set(acked)
    missing = unique - stored
    unacked = stored - unique
    lines = [
        f"integrity_check: {integrity}",
        f"acknowledged unique callbacks: {len(unique)}; rows missing for them: {len(missing)}",
        f"rows: {len(stored)}; stored but not acknowledged (in flight when wrk stopped, at most "
        f"{in_flight}): {len(unacked)}",
    ]
    return integrity == "ok" and not missing and len(unacked) <= in_flight, lines


SYNCHRONOUS = {"0": "OFF", "1": "NORMAL", "2": "FULL", "3": "EXTRA"}


def durability(server: Server) -> tuple[bool, str]:
    """Whether `server` commits in WAL mode with synchronous=FULL, and how that was read."""
    conn = sqlite3.connect(server.database)
    try:
        journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
    finally:
        conn.close()
    if server.name == "receiver":
        # The receiver opens every connection, the writer's included, with this function.
        probe = connect(str(server.log.with_suffix(".probe.db")))
        try:
            level = str(probe.execute("PRAGMA synchronous").fetchone()[0])
        finally:
            probe.close()
        source = "receiver.store.sqlite.connect"
    else:
        # Each peer prints its own connection's pragmas at start-up.
        marker = f"peer_{server.name}: journal_mode="
        lines = [line for line in server.log.read_text().splitlines() if marker in line]
        levels = {line.rsplit("synchronous=", 1)[-1].strip() for line in lines}
        level = levels.pop() if len(levels) == 1 else "?"
        source = f"its start-up line ({len(lines)} starts)"
    name = SYNCHRONOUS.get(level, level)
    ok = journal == "wal" and name == "FULL"
    return ok, f"journal_mode={journal} synchronous={name} (from {source})"


def missing_modules(names: tuple[str, ...]) -> list[str]:
    return [name for name in names if importlib.util.find_spec(name) is None]


def compare(
    args: argparse.Namespace, wrk: str, tmp: Path, pg: PgDatabase | None = None
) -> list[str]:
    """The comparison; returns the missed targets."""
    names: list[str] = args.servers
    if missing := missing_modules(BENCH_MODULES if {"flask", "fastapi"} & set(names) else ()):
        sys.exit(f"missing {', '.join(missing)}: run .venv/bin/pip install -e '.[bench]'")
    load = Load(args.connections, args.threads)
    servers = {
        name: Server(name, free_port(), tmp / f"{name}.db", tmp / f"{name}.log") for name in names
    }
    # Every server is sent the same callbacks, signed for one URL (a server behind a proxy
    # checks the public URL, not its own address).
    host = f"127.0.0.1:{free_port()}"
    url = f"http://{host}/v1/webhook/twilio/sms-status"
    files = []
    started = time.monotonic()
    for r in range(args.rounds):
        warm, measured = tmp / f"warmup{r}.tsv", tmp / f"load{r}.tsv"
        generate(warm, args.warmup * args.rate_cap, url, str(2 * r))
        generate(measured, args.duration * args.rate_cap, url, str(2 * r + 1))
        files.append((warm, measured))
    print(
        f"generated {args.rounds * (args.warmup + args.duration) * args.rate_cap:,} signed "
        f"callbacks in {time.monotonic() - started:.1f} s; {args.connections} connections, "
        f"{args.warmup} s warm-up + {args.duration} s per run; python "
        f"{sys.version.split()[0]}, {os.cpu_count()} CPUs",
        flush=True,
    )
    order = names + names[::-1] if args.rounds == 2 else names
    acked: dict[str, list[str]] = {name: [] for name in names}
    early_errors = dict.fromkeys(names, 0)
    runs_of = dict.fromkeys(names, 0)
    for name in order:
        server = servers[name]
        warm, measured = files[runs_of[name]]
        runs_of[name] += 1
        env = receiver_env(server.database, BENCH_DATABASE=str(server.database))
        if name == POSTGRESQL:
            assert pg is not None
            env["DATABASE_URL"] = pg.url
        proc = start(server.command(), env, server.port, server.log)
        try:
            warmup = run_callbacks(wrk, f"{name}-warm", server.port, warm, host, load, args.warmup)
            result = run_callbacks(wrk, name, server.port, measured, host, load, args.duration)
        finally:
            stop(proc)
        acked[name] += warmup.acked + result.acked
        early_errors[name] += warmup.non_2xx
        print(f"  run {runs_of[name]}: {describe(result)}", flush=True)
        if server.best is None or result.rps > server.best.rps:
            server.best = result

    print(f"\nbetter run of each (of {args.rounds}):")
    for name in names:
        best = servers[name].best
        assert best is not None
        print(describe(best))
    failures: list[str] = []
    lines: list[str] = []

    def target(ok: bool, text: str) -> None:
        lines.append(verdict(ok, text))
        if not ok:
            failures.append(text)

    receiver = servers["receiver"].best if "receiver" in servers else None
    for peer, minimum in (("flask", MIN_FLASK_RATIO), ("fastapi", MIN_FASTAPI_RATIO)):
        best = servers[peer].best if peer in servers else None
        if receiver and best:
            ratio = receiver.rps / best.rps
            print(f"ratio receiver/{peer}: {ratio:.2f}x (target >= {minimum}x)")
            target(ratio >= minimum, f"receiver >= {minimum}x the {peer} peer: {ratio:.2f}x")
    ceiling = servers["ceiling"].best if "ceiling" in servers else None
    if receiver and ceiling:
        ratio = receiver.rps / ceiling.rps
        print(f"ratio receiver/ceiling: {ratio:.1%} (target >= {MIN_CEILING_RATIO:.0%})")
        target(
            ratio >= MIN_CEILING_RATIO,
            f"receiver >= {MIN_CEILING_RATIO:.0%} of the ceiling: {ratio:.1%}",
        )
    if receiver:
        target(
            receiver.p99_ms <= args.max_p99_ms,
            f"receiver p99 <= {args.max_p99_ms:g} ms at {args.connections} connections: "
            f"{receiver.p99_ms:.2f} ms",
        )
        target(
            not (receiver.non_2xx or early_errors["receiver"] or receiver.socket_errors),
            f"receiver answered every callback 2xx, no connection dropped: non-2xx "
            f"{receiver.non_2xx + early_errors['receiver']}, socket errors "
            f"{receiver.socket_errors}",
        )
        target(
            not receiver.wrapped,
            f"no callback sent twice to the receiver (else raise --rate-cap): {receiver.wrapped}",
        )
        log_lines = sum(
            1 for line in servers["receiver"].log.open() if '"event": "callback"' in line
        )
        print(f"receiver log: {log_lines:,} callback lines at info level")

    on_pg = servers[POSTGRESQL].best if POSTGRESQL in servers else None
    if on_pg and ceiling:
        print(f"ratio postgresql/ceiling: {on_pg.rps / ceiling.rps:.1%}")
    if on_pg and receiver:
        print(f"ratio postgresql/receiver (SQLite): {on_pg.rps / receiver.rps:.1%}")
    if on_pg:
        print(f"postgresql p99: {on_pg.p99_ms:.2f} ms (SQLite's target: {args.max_p99_ms:g} ms)")
        target(
            not (on_pg.non_2xx or early_errors[POSTGRESQL] or on_pg.socket_errors),
            f"postgresql answered every callback 2xx, no connection dropped: non-2xx "
            f"{on_pg.non_2xx + early_errors[POSTGRESQL]}, socket errors {on_pg.socket_errors}",
        )
        target(
            not on_pg.wrapped,
            f"no callback sent twice to postgresql (else raise --rate-cap): {on_pg.wrapped}",
        )

    # At most one request in flight per connection when a wrk run stops: two runs a round.
    in_flight = 2 * args.rounds * args.connections
    for name in names:
        server = servers[name]
        if name == "ceiling":
            continue
        if name == POSTGRESQL:
            assert pg is not None
            db_ok, db_lines = check_receiver_database(pg.url, acked[name], in_flight)
            for line in db_lines:
                print(f"database {name}: {line}")
            target(db_ok, f"database check, {name}: every acknowledged callback is stored")
            durable, how = pg.durability()
            target(durable, f"every 2xx committed after the WAL flush, {name}: {how}")
            continue
        if name == "receiver":
            db_ok, db_lines = check_receiver_database(server.database, acked[name], in_flight)
        else:
            db_ok, db_lines = check_peer_database(server.database, acked[name], in_flight)
        for line in db_lines:
            print(f"database {name}: {line}")
        target(db_ok, f"database check, {name}: every acknowledged callback is stored")
        durable, how = durability(server)
        target(durable, f"every 2xx committed with synchronous=FULL (WAL), {name}: {how}")
    print()
    for line in lines:
        print(line)
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=10, help="seconds measured per run")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of warm-up per run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument(
        "--rate-cap",
        type=int,
        default=12_000,
        help="callbacks generated per measured second (no server may run out)",
    )
    parser.add_argument(
        "--servers",
        type=lambda text: [s.strip() for s in text.split(",") if s.strip()],
        default=list(SERVERS),
        help=f"which of {','.join(SERVERS)} to compare, in this order (default: all)",
    )
    parser.add_argument(
        "--rounds", type=int, choices=(1, 2), default=2, help="2: A B C D D C B A; 1: A B C D"
    )
    parser.add_argument("--max-p99-ms", type=float, default=MAX_P99_MS)
    parser.add_argument(
        "--classic",
        action="store_true",
        help="receiver and ceiling, one run each, p99 target 25 ms (the pre-issue-16 run)",
    )
    parser.add_argument("--prune-backlog", type=int, metavar="N", help="the backlog mode")
    parser.add_argument("--drain-timeout", type=int, default=600, help="seconds (backlog mode)")
    parser.add_argument("--get-messages", type=int, metavar="N", help="the GET mode")
    parser.add_argument("--bytes-per-message", type=int, metavar="N", help="the size mode")
    parser.add_argument(
        "--row-by-row",
        action="store_true",
        help="size mode: fill the indexes row by row as in service, then VACUUM",
    )
    parser.add_argument(
        "--database",
        metavar="URL",
        help="also run the receiver on the PostgreSQL server at URL (postgresql://...), "
        "beside the SQLite one, in a fresh database of its own",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp directory")
    args = parser.parse_args()
    if args.classic:
        args.servers, args.rounds, args.max_p99_ms = ["receiver", "ceiling"], 1, CLASSIC_P99_MS
    if unknown := set(args.servers) - {*SERVERS, POSTGRESQL}:
        parser.error(f"unknown servers: {', '.join(sorted(unknown))}")
    if args.database and POSTGRESQL not in args.servers:
        # Right after the SQLite receiver: the two stores run back to back in each round.
        at = args.servers.index("receiver") + 1 if "receiver" in args.servers else 0
        args.servers.insert(at, POSTGRESQL)
    if POSTGRESQL in args.servers and not args.database:
        parser.error("the postgresql server needs --database URL")
    for option in ("prune_backlog", "get_messages", "bytes_per_message"):
        value = getattr(args, option)
        if value is not None and not 1 <= value <= 50_000_000:
            parser.error(f"--{option.replace('_', '-')} must be 1..50,000,000")

    scale_modes = (args.prune_backlog, args.get_messages, args.bytes_per_message)
    if args.database and any(n is not None for n in scale_modes):
        parser.error("--database goes with the comparison, not the at-N modes (SQLite only)")

    wrk = find_wrk()
    tmp = Path(tempfile.mkdtemp(prefix="receiver-bench-"))
    pg = PgDatabase.create(args.database) if args.database else None
    try:
        if any(n is not None for n in scale_modes):
            import scale

            failures = scale.run(args, wrk, tmp)
        else:
            failures = compare(args, wrk, tmp, pg)
    finally:
        if args.keep:
            print(f"kept {tmp}" + (f" and the database {pg.created}" if pg and pg.created else ""))
        else:
            shutil.rmtree(tmp, ignore_errors=True)
            if pg is not None:
                pg.drop()
    if failures:
        print("FAIL: " + "; ".join(failures))
        return 1
    print("PASS: every target met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
