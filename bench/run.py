"""Benchmark: the receiver against the ceiling of its own HTTP stack, under the same load.

Run from the repository root with the project's virtualenv: `.venv/bin/python bench/run.py`.
It starts, on loopback, the receiver (`receiver serve`, one uvicorn worker, a fresh SQLite
file, logging at info as in production) and a bare Starlette endpoint on the same uvicorn
stack (bench/ceiling.py); drives each with wrk and bench/callbacks.lua (32 connections,
unique pre-generated signed Twilio status callbacks, after a warm-up); prints requests/s,
p50/p99 latency and non-2xx counts, the ratio, and checks that every acknowledged callback is
in the database exactly once as an applied event. Exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from receiver.providers.twilio_signature import compute_signature  # noqa: E402

TOKEN = "bench-auth-token"
ACCOUNT = "AC" + "0" * 31 + "1"
PATH = "/v1/webhook/twilio/sms-status"
STATUSES = ("delivered", "sent", "undelivered", "failed")
APT_COMMAND = "apt-get install -y wrk"

# Targets (ratios, since machines differ): see README "Benchmark".
MIN_RATIO = 0.25
MAX_P99_MS = 25.0


@dataclass
class Result:
    name: str
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    statuses: dict[str, int]
    socket_errors: int
    wrapped: int
    acked: list[str]

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def non_2xx(self) -> int:
        return sum(n for status, n in self.statuses.items() if not status.startswith("2"))


def find_wrk() -> str:
    """wrk's path; installed with apt-get when missing and we are root, else stop with how."""
    path = shutil.which("wrk")
    if path:
        return path
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print(f"wrk not found; running: {APT_COMMAND}", flush=True)
        install = subprocess.run(APT_COMMAND.split(), capture_output=True, text=True)
        if install.returncode != 0:  # a fresh container has no package lists yet
            subprocess.run(["apt-get", "update"], capture_output=True, check=False)
            subprocess.run(APT_COMMAND.split(), capture_output=True, check=False)
        path = shutil.which("wrk")
        if path:
            return path
    sys.exit(f"wrk is needed; install it with: sudo {APT_COMMAND}  (Debian/Ubuntu package)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def generate(path: Path, count: int, url: str, tag: str) -> None:
    """`count` unique callbacks signed for `url`, one message each, as Twilio sends them."""
    with path.open("w") as out:
        for i in range(count):
            sid = f"SM{tag}{uuid.uuid4().hex[len(tag) :]}"
            status = STATUSES[i % len(STATUSES)]
            params = {
                "SmsSid": sid,
                "SmsStatus": status,
                "MessageStatus": status,
                "To": f"+1555{i % 10_000_000:07d}",
                "MessageSid": sid,
                "AccountSid": ACCOUNT,
                "From": "+15017122661",
                "ApiVersion": "2010-04-01",
            }
            if status in ("undelivered", "failed"):
                params["ErrorCode"] = "30003"
            signature = compute_signature(url, {k: [v] for k, v in params.items()}, TOKEN)
            token = uuid.uuid4().hex
            out.write(f"{sid}\t{signature}\t{token}\t{urlencode(params)}\n")


def start(command: list[str], env: dict[str, str], port: int, log: Path) -> subprocess.Popen[Any]:
    with log.open("wb") as out:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{command} exited with {proc.returncode}; see {log}:\n{log.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    sys.exit(f"{command} did not start listening on {port} within 20 s; see {log}")


def stop(proc: subprocess.Popen[Any]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run_wrk(
    wrk: str,
    name: str,
    port: int,
    callbacks: Path,
    host: str,
    args: argparse.Namespace,
    seconds: int,
) -> Result:
    report = callbacks.with_suffix(f".{name}.json")
    command = [
        wrk,
        f"--threads={args.threads}",
        f"--connections={args.connections}",
        f"--duration={seconds}s",
        "--timeout=10s",
        f"--script={ROOT / 'bench' / 'callbacks.lua'}",
        f"http://127.0.0.1:{port}{PATH}",
        "--",
        str(callbacks),
        host,
        str(args.threads),
    ]
    env = {**os.environ, "BENCH_REPORT": str(report)}
    run = subprocess.run(command, env=env, capture_output=True, text=True)
    if run.returncode != 0 or not report.exists():
        sys.exit(f"wrk failed ({run.returncode}):\n{run.stdout}\n{run.stderr}")
    data = json.loads(report.read_text())
    errors = data["errors"]
    return Result(
        name=name,
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        statuses=data["statuses"],
        socket_errors=sum(errors.values()),
        wrapped=data["wrapped"],
        acked=data["acked"],
    )


def check_database(database: Path, acked: list[str], in_flight: int) -> tuple[bool, list[str]]:
    """Every acknowledged callback is in the store exactly once, applied; nothing else is."""
    conn = sqlite3.connect(database)
    try:
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
        counts = Counter[tuple[str, str]]()
        for message_id, outcome, n in conn.execute(
            "SELECT message_id, outcome, count(*) FROM events GROUP BY message_id, outcome"
        ):
            counts[(message_id, outcome)] = n
        messages = conn.execute("SELECT count(*) FROM messages").fetchone()[0]
    finally:
        conn.close()
    unique = set(acked)
    per_sid = Counter[str]()
    for (sid, _outcome), n in counts.items():
        per_sid[sid] += n
    # Exactly one event per acknowledged callback, and that one applied: a write that ran
    # twice would show as a second event (a duplicate), caught here too.
    not_once = [sid for sid in unique if counts[(sid, "applied")] != 1 or per_sid[sid] != 1]
    # Callbacks wrk sent but stopped waiting for when its time was up: committed, never counted.
    unacked = set(per_sid) - unique
    events = sum(counts.values())
    lines = [
        f"integrity_check: {integrity}",
        f"acknowledged unique callbacks: {len(unique)}; applied events for them: "
        f"{sum(counts[(sid, 'applied')] for sid in unique)}; "
        f"missing or not exactly once: {len(not_once)}",
        f"events stored: {events}; messages: {messages}; applied but not acknowledged "
        f"(in flight when wrk stopped, at most {in_flight}): {len(unacked)}",
    ]
    # Nothing else is stored: every event and message is an acknowledged or in-flight callback's.
    ok = (
        integrity == "ok"
        and not not_once
        and len(unacked) <= in_flight
        and all(per_sid[sid] == 1 for sid in unacked)
        and events == messages == len(unique) + len(unacked)
    )
    return ok, lines


def describe(result: Result) -> str:
    others = ", ".join(f"{status}: {n}" for status, n in sorted(result.statuses.items()))
    return (
        f"{result.name:<9} {result.rps:>8,.0f} req/s   p50 {result.p50_ms:6.2f} ms   "
        f"p99 {result.p99_ms:6.2f} ms   non-2xx {result.non_2xx}   socket errors "
        f"{result.socket_errors}   ({result.requests:,} requests in {result.seconds:.1f} s; "
        f"{others})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds measured per server")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of warm-up per server")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument(
        "--rate-cap",
        type=int,
        default=12_000,
        help="callbacks generated per measured second (the receiver must not run out)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp directory")
    args = parser.parse_args()

    wrk = find_wrk()
    tmp = Path(tempfile.mkdtemp(prefix="receiver-bench-"))
    receiver_port, ceiling_port = free_port(), free_port()
    host = f"127.0.0.1:{receiver_port}"
    url = f"http://{host}{PATH}"
    warmup_file, load_file = tmp / "warmup.tsv", tmp / "load.tsv"
    started = time.monotonic()
    generate(warmup_file, args.warmup * args.rate_cap, url, "0")
    generate(load_file, args.duration * args.rate_cap, url, "1")
    print(
        f"generated {(args.warmup + args.duration) * args.rate_cap:,} signed callbacks in "
        f"{time.monotonic() - started:.1f} s; {args.connections} connections, "
        f"{args.warmup} s warm-up + {args.duration} s per server; python {sys.version.split()[0]}, "
        f"{os.cpu_count()} CPUs",
        flush=True,
    )

    database = tmp / "receiver.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RECEIVER_", "TWILIO_"))}
    env.update(
        RECEIVER_DATABASE=str(database),
        RECEIVER_LOG_LEVEL="info",
        RECEIVER_LOG_FORMAT="json",
        TWILIO_AUTH_TOKEN=TOKEN,
        PYTHONPATH=str(ROOT),
    )
    receiver_log = tmp / "receiver.log"
    proc = start(
        [sys.executable, "-m", "receiver", "serve", "--port", str(receiver_port)],
        env,
        receiver_port,
        receiver_log,
    )
    try:
        warm = run_wrk(wrk, "warmup", receiver_port, warmup_file, host, args, args.warmup)
        receiver = run_wrk(wrk, "receiver", receiver_port, load_file, host, args, args.duration)
    finally:
        stop(proc)
    proc = start(
        [sys.executable, str(ROOT / "bench" / "ceiling.py"), "--port", str(ceiling_port)],
        env,
        ceiling_port,
        tmp / "ceiling.log",
    )
    try:
        run_wrk(wrk, "warmup-ceiling", ceiling_port, warmup_file, host, args, args.warmup)
        ceiling = run_wrk(wrk, "ceiling", ceiling_port, load_file, host, args, args.duration)
    finally:
        stop(proc)

    print(describe(ceiling))
    print(describe(receiver))
    ratio = receiver.rps / ceiling.rps
    print(f"ratio receiver/ceiling: {ratio:.1%} (target >= {MIN_RATIO:.0%})")
    log_lines = sum(1 for line in receiver_log.open() if '"event": "callback"' in line)
    print(f"receiver log: {log_lines:,} callback lines at info level")
    db_ok, lines = check_database(
        database, warm.acked + receiver.acked, in_flight=2 * args.connections
    )
    for line in lines:
        print(f"database: {line}")

    failures = []
    if ratio < MIN_RATIO:
        failures.append(f"throughput ratio {ratio:.1%} < {MIN_RATIO:.0%}")
    if receiver.p99_ms > MAX_P99_MS:
        failures.append(f"receiver p99 {receiver.p99_ms:.2f} ms > {MAX_P99_MS:.0f} ms")
    if receiver.non_2xx or warm.non_2xx or receiver.socket_errors:
        failures.append("the receiver answered non-2xx or dropped connections")
    if receiver.wrapped:
        failures.append("the receiver used every generated callback; raise --rate-cap")
    if not db_ok:
        failures.append("the database check failed")
    if args.keep:
        print(f"kept {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    if failures:
        print("FAIL: " + "; ".join(failures))
        return 1
    print("PASS: every target met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
