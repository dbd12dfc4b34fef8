"""What every benchmark mode of bench/run.py shares: wrk, server processes, signed callbacks.

Not a benchmark itself; bench/run.py is the command.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from receiver.providers.twilio_signature import compute_signature  # noqa: E402

TOKEN = "bench-auth-token"
ACCOUNT = "AC" + "0" * 31 + "1"
PATH = "/v1/webhook/twilio/sms-status"
STATUSES = ("delivered", "sent", "undelivered", "failed")
APT_COMMAND = "apt-get install -y wrk"


@dataclass
class Result:
    """One wrk run, as bench/callbacks.lua or bench/get.lua reported it."""

    name: str
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    statuses: dict[str, int]
    socket_errors: int
    wrapped: int = 0
    acked: list[str] = field(default_factory=list)

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


def twilio_params(sid: str, status: str, to: str) -> dict[str, str]:
    """A status callback's form fields, as Twilio sends them."""
    params = {
        "SmsSid": sid,
        "SmsStatus": status,
        "MessageStatus": status,
        "To": to,
        "MessageSid": sid,
        "AccountSid": ACCOUNT,
        "From": "+15017122661",
        "ApiVersion": "2010-04-01",
    }
    if status in ("undelivered", "failed"):
        params["ErrorCode"] = "30003"
    return params


def sign(url: str, params: dict[str, str]) -> str:
    return compute_signature(url, {k: [v] for k, v in params.items()}, TOKEN)


def generate(path: Path, count: int, url: str, tag: str) -> None:
    """`count` unique callbacks signed for `url`, one message each, as Twilio sends them.

    Every sid starts with SM + `tag`, so the callbacks of one file can be told apart.
    """
    with path.open("w") as out:
        for i in range(count):
            sid = f"SM{tag}{uuid.uuid4().hex[len(tag) :]}"
            params = twilio_params(sid, STATUSES[i % len(STATUSES)], f"+1555{i % 10_000_000:07d}")
            token = uuid.uuid4().hex
            out.write(f"{sid}\t{sign(url, params)}\t{token}\t{urlencode(params)}\n")


def receiver_env(database: Path, **extra: str) -> dict[str, str]:
    """The environment `receiver serve` runs in: only the settings given here."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RECEIVER_", "TWILIO_"))}
    env.update(
        RECEIVER_DATABASE=str(database),
        RECEIVER_LOG_LEVEL="info",
        RECEIVER_LOG_FORMAT="json",
        TWILIO_AUTH_TOKEN=TOKEN,
        PYTHONPATH=str(ROOT),
    )
    env.update(extra)
    return env


def receiver_command(port: int) -> list[str]:
    return [sys.executable, "-m", "receiver", "serve", "--port", str(port)]


def start(
    command: list[str], env: dict[str, str], port: int, log: Path, timeout: float = 60
) -> subprocess.Popen[Any]:
    """Start a server and wait (up to `timeout` s) until it accepts connections on `port`."""
    with log.open("ab") as out:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{command} exited with {proc.returncode}; see {log}:\n{log.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    sys.exit(f"{command} did not start listening on {port} within {timeout:.0f} s; see {log}")


def stop(proc: subprocess.Popen[Any]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@dataclass(frozen=True)
class Load:
    """How wrk loads a server: the same for every server of a comparison."""

    connections: int = 32
    threads: int = 1


def run_wrk(
    wrk: str,
    name: str,
    url: str,
    script: str,
    script_args: list[str],
    report: Path,
    load: Load,
    seconds: int,
) -> Result:
    """Run wrk with one of bench/'s Lua scripts, which writes its JSON report to `report`."""
    report.unlink(missing_ok=True)
    command = [
        wrk,
        f"--threads={load.threads}",
        f"--connections={load.connections}",
        f"--duration={seconds}s",
        "--timeout=10s",
        f"--script={BENCH / script}",
        url,
        "--",
        *script_args,
    ]
    env = {**os.environ, "BENCH_REPORT": str(report)}
    # Bounded: wrk stops itself after `seconds`; the margin covers its start and report.
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=seconds + 120)
    if run.returncode != 0 or not report.exists():
        sys.exit(f"wrk failed ({run.returncode}):\n{run.stdout}\n{run.stderr}")
    data = json.loads(report.read_text())
    return Result(
        name=name,
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        statuses=data["statuses"],
        socket_errors=sum(data["errors"].values()),
        wrapped=data.get("wrapped", 0),
        acked=data.get("acked", []),
    )


def run_callbacks(
    wrk: str, name: str, port: int, callbacks: Path, host: str, load: Load, seconds: int
) -> Result:
    """Send the signed callbacks of `callbacks` (each once) to the server on `port`."""
    return run_wrk(
        wrk,
        name,
        f"http://127.0.0.1:{port}{PATH}",
        "callbacks.lua",
        [str(callbacks), host, str(load.threads)],
        callbacks.with_suffix(f".{name}.json"),
        load,
        seconds,
    )


def check_receiver_database(
    database: Path | str, acked: list[str], in_flight: int, exclude_suffix: str | None = None
) -> tuple[bool, list[str]]:
    """Every acknowledged callback is in the store exactly once, applied; nothing else is
    (but messages whose sid ends with `exclude_suffix`: a backlog filled beforehand).

    `database`: the SQLite file, or a PostgreSQL URL."""
    where = "WHERE message_id NOT LIKE {mark}" if exclude_suffix else ""
    params = (f"%{exclude_suffix}",) if exclude_suffix else ()
    counts = Counter[tuple[str, str]]()
    integrity: str | None
    if isinstance(database, str) and database.startswith(("postgres://", "postgresql://")):
        import psycopg

        where = where.format(mark="%s")
        with psycopg.connect(database) as pg:
            integrity = None  # no integrity_check; a damaged page fails the reads below
            for message_id, outcome, n in pg.execute(
                f"SELECT message_id, outcome, count(*) FROM events {where} "
                "GROUP BY message_id, outcome",
                params,
            ):
                counts[(message_id, outcome)] = n
            row = pg.execute(f"SELECT count(*) FROM messages {where}", params).fetchone()
            messages = row[0] if row else 0
    else:
        where = where.format(mark="?")
        conn = sqlite3.connect(database)
        try:
            integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
            for message_id, outcome, n in conn.execute(
                f"SELECT message_id, outcome, count(*) FROM events {where} "
                "GROUP BY message_id, outcome",
                params,
            ):
                counts[(message_id, outcome)] = n
            messages = conn.execute(f"SELECT count(*) FROM messages {where}", params).fetchone()[0]
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
        f"integrity_check: {integrity or 'not on PostgreSQL'}",
        f"acknowledged unique callbacks: {len(unique)}; applied events for them: "
        f"{sum(counts[(sid, 'applied')] for sid in unique)}; "
        f"missing or not exactly once: {len(not_once)}",
        f"events stored: {events}; messages: {messages}; applied but not acknowledged "
        f"(in flight when wrk stopped, at most {in_flight}): {len(unacked)}",
    ]
    # Nothing else is stored: every event and message is an acknowledged or in-flight callback's.
    ok = (
        integrity in ("ok", None)
        and not not_once
        and len(unacked) <= in_flight
        and all(per_sid[sid] == 1 for sid in unacked)
        and events == messages == len(unique) + len(unacked)
    )
    return ok, lines


@dataclass
class PgDatabase:
    """A database of its own for one benchmark run, on the PostgreSQL server a URL names.

    Made with CREATE DATABASE beside the URL's database and dropped at the end, so a run
    never mixes with rows of an earlier one (nor deletes anybody's). Without the right to
    create databases, the URL's own database is used, and must then hold no receiver rows.
    """

    url: str
    created: str | None = None  # the database's name, when this run made it
    admin_url: str = ""

    @classmethod
    def create(cls, url: str) -> PgDatabase:
        import psycopg
        from psycopg import sql

        from receiver.settings import SettingsError, read_database_url

        try:
            url = read_database_url(url, "--database")  # the receiver's own reading of it
        except SettingsError as exc:
            sys.exit(str(exc))
        name = f"receiver_bench_{uuid.uuid4().hex[:12]}"
        try:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except psycopg.errors.InsufficientPrivilege:
            with psycopg.connect(url) as conn:
                exists = conn.execute("SELECT to_regclass('messages') IS NOT NULL").fetchone()
                if (
                    exists
                    and exists[0]
                    and conn.execute("SELECT 1 FROM messages LIMIT 1").fetchone()
                ):
                    sys.exit(
                        "--database: its database holds messages already, and this user may not "
                        "create a fresh one (CREATEDB): give an empty database"
                    )
            return cls(url)
        except psycopg.Error as exc:
            sys.exit(f"--database: cannot connect: {exc}")
        parts = urlsplit(url)
        return cls(urlunsplit(parts._replace(path=f"/{name}")), name, url)

    def drop(self) -> None:
        if self.created is None:
            return
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(self.created)
                )
            )

    def durability(self) -> tuple[bool, str]:
        """Whether a commit waits for the WAL to be flushed to disk (fsync on, and a
        synchronous_commit that waits for the local flush), as the server runs it."""
        import psycopg

        with psycopg.connect(self.url) as conn:
            values = {
                name: str(value)
                for name in ("fsync", "synchronous_commit", "wal_sync_method")
                for (value,) in conn.execute(f"SHOW {name}")
            }
        ok = values["fsync"] == "on" and values["synchronous_commit"] in (
            "on",
            "local",
            "remote_write",
            "remote_apply",
        )
        return ok, " ".join(f"{name}={value}" for name, value in values.items())


def describe(result: Result, width: int = 10) -> str:
    others = ", ".join(f"{status}: {n}" for status, n in sorted(result.statuses.items()))
    return (
        f"{result.name:<{width}} {result.rps:>8,.0f} req/s   p50 {result.p50_ms:6.2f} ms   "
        f"p99 {result.p99_ms:6.2f} ms   non-2xx {result.non_2xx}   socket errors "
        f"{result.socket_errors}   ({result.requests:,} requests in {result.seconds:.1f} s; "
        f"{others})"
    )


def verdict(ok: bool, text: str) -> str:
    return f"{'PASS' if ok else 'FAIL'}  {text}"
