"""The `receiver` command: serve, migrate, prune, backup, copy, poll, verify, callback-url,
simulate and demo."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import signal
import socket
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import structlog

from receiver.settings import Settings, SettingsError
from receiver.version import __version__


def _settings(**overrides: str) -> Settings:
    """Settings from the environment, command-line overrides checked by the same rules."""
    try:
        return Settings.from_env(overrides=overrides)
    except SettingsError as exc:
        print(f"receiver: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def serve(args: argparse.Namespace) -> int:
    from receiver.app import create_app
    from receiver.logging import configure_logging

    overrides = {"HOST": args.host} if args.host else {}
    if args.port is not None:
        overrides["PORT"] = str(args.port)
    settings = _settings(**overrides)
    configure_logging(settings.log_level, settings.log_format)
    _warn_unknown_settings()
    # Until the server takes the signals over, SIGTERM stops the start as Ctrl-C does: quietly.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        # The port first: a second instance started by mistake stops here, before it touches
        # the database or logs a "started" line that is not true.
        sock = _listen_or_exit(settings.host, settings.port)
        applied = _migrate_or_exit(settings)
        if applied:
            structlog.get_logger("receiver").info(
                "migrated", database=settings.database_label, migrations_applied=applied
            )
        app = create_app(settings)
        tune_gc()
        _run_server(app, settings, sock)
    except KeyboardInterrupt:
        # Stopped before the server ran (or in the instant after): nothing was acknowledged
        # that is not committed, so this is a normal end too.
        pass
    return 0


def _run_server(app: Any, settings: Settings, sock: socket.socket) -> None:
    """Serve `app` on the bound socket until SIGINT or SIGTERM; return after a clean stop."""
    import uvicorn

    loop, http = _event_loop_and_parser()
    host, port = sock.getsockname()[:2]  # the real port, when PORT=0 let the system pick
    url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    log = structlog.get_logger("receiver")
    config = uvicorn.Config(
        app,
        host=settings.host,  # the socket is bound already; these only describe it
        port=settings.port,
        loop=loop,
        http=http,
        # We read forwarded headers ourselves, only when RECEIVER_TRUST_FORWARDED says so.
        proxy_headers=False,
        server_header=False,
        access_log=False,
        log_config=None,  # configure_logging() already routed uvicorn's loggers
        log_level=settings.log_level,
        timeout_graceful_shutdown=30,
    )
    _serve_until_stopped(
        config,
        sock,
        listening=lambda: log.info("listening", url=url, loop=loop, http=http),
        stopping=lambda by: _stopping(app, by),
    )


def _stopping(app: Any, by: str | None) -> None:
    """Stopping: long polls answer and streams end now, so the requests in flight finish
    within the grace period rather than hold the stop for up to a minute (or forever)."""
    structlog.get_logger("receiver").info("stopping", signal=by)
    hub = getattr(getattr(app, "state", None), "hub", None)
    if hub is not None:
        hub.close()


def _serve_until_stopped(
    config: Any,
    sock: socket.socket,
    *,
    listening: Callable[[], None] = lambda: None,
    stopping: Callable[[str | None], None] = lambda by: None,
) -> None:
    """Run uvicorn with `config` on the bound socket until SIGINT or SIGTERM, then return.

    uvicorn stops gracefully on either signal (requests in flight answered, then the lifespan
    shutdown, which commits the last write batch and closes the store), then raises the signal
    again: a KeyboardInterrupt traceback and exit code 130 for Ctrl-C, death by signal for
    SIGTERM. Being asked to stop is a normal end, so this returns. A second Ctrl-C still stops
    waiting for slow clients, as uvicorn's does. `listening` is called once the server
    serves, `stopping` with the signal's name when it starts to stop (both on the event loop).
    """
    import uvicorn

    stopped_by: list[str] = []

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            # The same handlers as uvicorn's, without the signal raised again afterwards.
            original = {sig: signal.signal(sig, self.handle_exit) for sig in _STOP_SIGNALS}
            try:
                yield
            finally:
                for sig, handler in original.items():
                    signal.signal(sig, handler)

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            # Only noted here: `stopping` runs on the event loop, not in a signal handler.
            stopped_by.append(signal.Signals(sig).name)
            super().handle_exit(sig, frame)

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if self.started:
                listening()

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            stopping(stopped_by[0] if stopped_by else None)
            await super().shutdown(sockets)

    Server(config).run(sockets=[sock])


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _warn_unknown_settings(*, to_log: bool = True) -> None:
    """Name each variable with the service's prefix that no setting reads (a typo, usually).

    `to_log`: as a log line (commands that log); else on stderr (commands that print).
    """
    from receiver.settings import unknown_variables

    for name, closest in unknown_variables().items():
        detail = f"{name} is not a receiver setting and is ignored" + (
            f"; did you mean {closest}?" if closest else ""
        )
        if to_log:
            structlog.get_logger("receiver").warning(
                "unknown_setting", variable=name, did_you_mean=closest, detail=detail
            )
        else:
            print(f"receiver: warning: {detail}", file=sys.stderr)


def _event_loop_and_parser() -> tuple[str, str]:
    """uvloop and httptools when importable (what uvicorn's "auto" picks), else asyncio and h11.

    Chosen here and given to uvicorn by name, so the "listening" line says what really runs.
    """
    try:
        import uvloop  # noqa: F401
    except ImportError:
        loop = "asyncio"
    else:
        loop = "uvloop"
    try:
        import httptools  # noqa: F401
    except ImportError:
        http = "h11"
    else:
        http = "httptools"
    return loop, http


def _listen_or_exit(host: str, port: int) -> socket.socket:
    """A socket bound to host:port (as uvicorn binds it), or a readable reason and exit 1."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        print(f"receiver: cannot listen on {host}:{port}: {exc.strerror}", file=sys.stderr)
        raise SystemExit(1) from None
    sock.set_inheritable(True)
    return sock


def tune_gc() -> None:
    """Fewer, cheaper garbage collections under load (they stall every request in flight).

    Objects alive at start-up are frozen out of collection, and the youngest generation is
    collected every 20,000 allocations rather than CPython's 700: a callback allocates a few
    thousand objects, almost none of them in reference cycles. Measured with bench/run.py:
    p99 about 16 ms rather than 22 ms.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 50, 100)


def _migrate_or_exit(settings: Settings) -> list[str]:
    """Bring the schema up to date, or stop with a readable reason (not a traceback)."""
    from receiver.store import StoreUnavailable, open_store

    try:
        applied = open_store(settings).migrate()
    except StoreUnavailable as exc:
        print(f"receiver: cannot open the database: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    return applied


def migrate(args: argparse.Namespace) -> int:
    settings = _settings()
    _warn_unknown_settings(to_log=False)
    applied = _migrate_or_exit(settings)
    print(
        f"{settings.database_label}: applied {len(applied)} migration(s)"
        + (f": {', '.join(applied)}" if applied else " (up to date)")
    )
    return 0


def prune(args: argparse.Namespace) -> int:
    from receiver import retention
    from receiver.logging import configure_logging
    from receiver.store import StoreUnavailable, open_store

    settings = _settings(**({"RECEIVER_RETENTION_DAYS": args.days} if args.days else {}))
    configure_logging(settings.log_level, settings.log_format)
    _warn_unknown_settings()
    if settings.retention_days == 0:
        source = "--days 0" if args.days else "RECEIVER_RETENTION_DAYS=0"
        print(f"receiver: retention is off ({source} keeps everything); nothing pruned")
        return 0
    if not _existing_store_or_exit(settings):
        return 1

    async def run() -> int:
        store = open_store(settings)
        await store.open()
        try:
            return (await retention.prune_once(store, settings.retention_days)).messages
        finally:
            await store.close()

    try:
        pruned = asyncio.run(run())
    except StoreUnavailable as exc:
        print(f"receiver: prune failed: {exc}", file=sys.stderr)
        return 1
    print(
        f"{settings.database_label}: pruned {pruned} message(s) final for more than "
        f"{settings.retention_days} day(s), with their events"
    )
    return 0


def poll(args: argparse.Namespace) -> int:
    from receiver.logging import configure_logging
    from receiver.polling.service import build_scheduler
    from receiver.providers import build_providers, message_providers
    from receiver.store import StoreUnavailable, open_store

    if not args.once:
        print(
            "receiver: `receiver serve` polls continuously; `receiver poll --once` runs one "
            "sweep of everything due, then exits",
            file=sys.stderr,
        )
        return 2
    settings = _settings()
    configure_logging(settings.log_level, settings.log_format)
    _warn_unknown_settings()
    if not _existing_store_or_exit(settings):
        return 1

    async def run() -> tuple[dict[str, Any], dict[str, dict[str, str | None]]]:
        store = open_store(settings)
        await store.open()
        scheduler = build_scheduler(settings, store, message_providers(build_providers(settings)))
        try:
            return await scheduler.sweep_all(), scheduler.status()
        finally:
            await scheduler.stop()
            await store.close()

    try:
        results, states = asyncio.run(run())
    except StoreUnavailable as exc:
        print(f"receiver: poll failed: {exc}", file=sys.stderr)
        return 1
    for provider, r in sorted(results.items()):
        state = states[provider]
        print(
            f"{provider}: {r.claimed} due, {r.asked} asked, {r.applied} changed, "
            f"{r.gave_up} given up, {r.deferred} deferred; {state['state']}"
            + (f" ({state['detail']})" if state["detail"] and r.claimed else "")
        )
    # Refused credentials fail the run, so a cron job or a CI check notices.
    return 1 if any(s["state"] == "stopped" for s in states.values()) else 0


def verify(args: argparse.Namespace) -> int:
    from receiver import ledger
    from receiver.logging import configure_logging
    from receiver.store import StoreUnavailable, open_store

    settings = _settings()
    configure_logging(settings.log_level, settings.log_format)
    _warn_unknown_settings()
    if not _existing_store_or_exit(settings):
        return 1

    def mismatch(m: ledger.Mismatch) -> None:
        print(f"mismatch: {m.describe()}", flush=True)

    def repaired(m: ledger.Mismatch) -> None:
        print(f"repaired: {m.row.provider}/{m.row.message_id} (id {m.row.pk})", flush=True)

    async def run() -> ledger.Report:
        store = open_store(settings)
        await store.open()
        try:
            return await ledger.verify(
                store, repair=args.repair, on_mismatch=mismatch, on_repaired=repaired
            )
        finally:
            await store.close()

    try:
        report = asyncio.run(run())
    except StoreUnavailable as exc:
        print(f"receiver: verify failed: {exc}", file=sys.stderr)
        return 1
    line = (
        f"{settings.database_label}: {report.checked} message(s) checked against their events, "
        f"{report.mismatched} mismatch(es)"
    )
    if args.repair:
        line += f", {report.repaired} repaired"
        if report.settled:
            line += f", {report.settled} consistent by the time of the repair"
    print(line)
    if args.repair:
        return 0 if report.repaired + report.settled == report.mismatched else 1
    return 1 if report.mismatched else 0


def _existing_store_or_exit(settings: Settings) -> bool:
    """False, with the reason printed, when there is no database to work on."""
    from receiver.store import StoreUnavailable, open_store

    try:
        if open_store(settings).exists():
            return True
    except StoreUnavailable as exc:  # a database server that cannot be reached
        print(f"receiver: cannot open the database: {exc}", file=sys.stderr)
        return False
    if settings.database_url is not None:
        print(
            f"receiver: the database {settings.database_label} has no receiver tables "
            "(run `receiver migrate`, or set DATABASE_URL to the service's database)",
            file=sys.stderr,
        )
        return False
    print(
        f"receiver: there is no database at {settings.database} "
        "(set RECEIVER_DATABASE to the service's database)",
        file=sys.stderr,
    )
    return False


def backup(args: argparse.Namespace) -> int:
    from receiver.store import StoreUnavailable, open_store

    settings = _settings()
    _warn_unknown_settings(to_log=False)
    if settings.database_url is not None:
        # A file copy is SQLite's backup; PostgreSQL has its own tool, which this would only
        # pretend to be.
        print(
            "receiver: DATABASE_URL is set: back PostgreSQL up with pg_dump, e.g. "
            '`pg_dump --format=custom "$DATABASE_URL" > receiver.dump` '
            '(restore with `pg_restore --no-owner --dbname "$DATABASE_URL" receiver.dump`), '
            "or your host's backups (Heroku: `heroku pg:backups:capture`)",
            file=sys.stderr,
        )
        return 2
    target = Path(args.path)
    if target.is_dir():
        target = target / Path(settings.database).name
    if target.resolve() == Path(settings.database).resolve():
        print("receiver: the backup path is the database itself", file=sys.stderr)
        return 2
    if not _existing_store_or_exit(settings):
        return 1
    try:
        info = open_store(settings).backup(str(target))
    except StoreUnavailable as exc:
        print(f"receiver: {exc}", file=sys.stderr)
        return 1
    print(f"{settings.database} -> {info.path}: {info.size_bytes} bytes, {info.messages} messages")
    return 0


def copy(args: argparse.Namespace) -> int:
    """Copy a SQLite database into an empty PostgreSQL one (moving to PostgreSQL)."""
    import sqlite3

    import psycopg

    from receiver.settings import read_database_url, redact_database_url
    from receiver.store.copy import (
        CopyFailed,
        CopyRefused,
        copy_database,
        format_report,
        open_source,
    )
    from receiver.store.postgres import connection, schema

    try:
        url = read_database_url(args.to, "--to")
    except SettingsError as exc:
        print(f"receiver: {exc}", file=sys.stderr)
        return 2
    label = redact_database_url(url)

    def progress(table: str, rows: int) -> None:
        if rows % 100_000 == 0:
            print(f"receiver: {table}: {rows} rows copied so far", file=sys.stderr)

    try:
        source = open_source(Path(args.source))
    except CopyRefused as exc:
        print(f"receiver: copy refused: {exc}", file=sys.stderr)
        return 2
    try:
        with connection.connect(url) as target:
            report = copy_database(source, target, migrate=schema.migrate, progress=progress)
    except CopyRefused as exc:
        print(f"receiver: copy refused: {exc}", file=sys.stderr)
        return 2
    except CopyFailed as exc:
        print(f"receiver: copy failed:\n{exc}", file=sys.stderr)
        return 1
    except psycopg.Error as exc:
        # libpq's messages name the host and the user, never the password.
        print(f"receiver: copy into {label} failed: {exc}".rstrip(), file=sys.stderr)
        return 1
    except sqlite3.Error as exc:
        print(f"receiver: reading {args.source} failed: {exc}", file=sys.stderr)
        return 1
    finally:
        source.close()
    if report.migrations_applied:
        print(f"{label}: applied {len(report.migrations_applied)} migration(s)")
    print(f"{args.source} -> {label}: copied")
    print(format_report(report))
    return 0


def callback_url(args: argparse.Namespace) -> int:
    """Print a provider's signed callback URL, as GET /v1/callback-url would give it."""
    from receiver.api import callback_urls
    from receiver.providers import REGISTRY
    from receiver.providers.callback_auth import CallbackTokens

    settings = _settings()
    _warn_unknown_settings(to_log=False)
    signed = [name for name, cls in REGISTRY.items() if cls.signed_url]
    provider: str = args.provider
    tokens = CallbackTokens(settings.secret_keys())
    base = callback_urls.base_url(None, settings)
    if provider not in REGISTRY:
        print(
            f"receiver: unknown provider {provider!r}; signed callback URLs are for "
            + " and ".join(signed),
            file=sys.stderr,
        )
        return 2
    if not REGISTRY[provider].signed_url:
        # Its URL is a fixed path and no secret: say it, but not on stdout, where a script
        # expects a signed URL.
        fixed, _ = callback_urls.callback_url(base, provider, tokens)
        print(
            f"receiver: {provider} signs its own callbacks, so its URL is not a signed one; "
            f"its callback URL is {fixed}",
            file=sys.stderr,
        )
        return 2
    if not tokens.configured:
        print("receiver: set RECEIVER_SECRET_KEY to issue signed callback URLs", file=sys.stderr)
        return 2
    try:
        url, _key_id = callback_urls.callback_url(base, provider, tokens, label=args.label)
    except ValueError as exc:  # a label outside the allowed characters
        print(f"receiver: --label: {exc}", file=sys.stderr)
        return 2
    print(url)
    warning = callback_urls.unreachable_warning(url)
    if warning is not None:
        print(f"receiver: warning: {warning}", file=sys.stderr)
    return 0


def simulate(args: argparse.Namespace) -> int:
    """Serve the provider simulator (fake accounts; the credentials are flags, never the env)."""
    import uvicorn

    from receiver.simulator import Accounts, SimConfig, create_simulator

    given = {
        "twilio_account_sid": args.twilio_account_sid,
        "twilio_auth_token": args.twilio_auth_token,
        "telecom23_api_key": args.telecom23_api_key,
        "telecom23_webhook_secret": args.telecom23_webhook_secret,
        "mesms_api_key": args.mesms_api_key,
    }
    accounts = Accounts(**{k: v for k, v in given.items() if v is not None})
    config = SimConfig(seed=args.seed, speed=args.speed, accounts=accounts)
    # Until the server takes the signals over, SIGTERM stops the start as Ctrl-C does: quietly.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        # Bind first, so --port 0 works and the line below names the real port.
        sock = _listen_or_exit(args.host, args.port)
        sock.listen(2048)  # connections made from now on wait for the server, not fail
        host, port = sock.getsockname()[:2]
        print(f"provider simulator on http://{host}:{port} (control API: /_sim/)", flush=True)
        app = create_simulator(config)
        server = uvicorn.Config(app, log_level="warning", access_log=False, server_header=False)
        _serve_until_stopped(server, sock)
    except KeyboardInterrupt:
        pass  # stopped before the server ran: a normal end, as for serve
    return 0


def demo(args: argparse.Namespace) -> int:
    """The simulator and the receiver together, a few hundred messages, a live summary."""
    from receiver.demo import DemoError, Options, run

    database = Path(args.database) if args.database else None
    try:
        return run(Options(args.count, args.seed, args.timeout, database, keep=args.keep))
    except DemoError as exc:
        print(f"receiver demo: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("receiver demo: interrupted", file=sys.stderr)
        return 130


def _demo_count(value: str) -> int:
    from receiver.demo import MAX_COUNT

    if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= MAX_COUNT:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to {MAX_COUNT}")
    return int(value)


def _demo_timeout(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if not 5 <= seconds <= 3600:  # also refuses NaN
        raise argparse.ArgumentTypeError("must be a number of seconds from 5 to 3600")
    return seconds


def _speed(value: str) -> float:
    speed = float(value)
    if not 0.001 <= speed <= 1_000_000:
        raise argparse.ArgumentTypeError("speed must be from 0.001 to 1000000")
    return speed


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="receiver",
        description="Delivery-tracking sidecar for SMS status callbacks. "
        "Settings come from environment variables (see docs/settings.md); a variable with "
        "one of receiver's prefixes that is not a setting is warned about at start.",
    )
    parser.add_argument("--version", action="version", version=f"receiver {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = commands.add_parser(
        "serve",
        help="run the HTTP service (default: 127.0.0.1:8000) until Ctrl-C or SIGTERM",
        description="Run the HTTP service. It logs a `listening` line with its URL once it "
        "takes requests. Ctrl-C or SIGTERM stops it: requests in flight are answered, their "
        "writes committed, and it exits 0.",
    )
    p.add_argument("--host", help="bind address (overrides HOST)")
    p.add_argument("--port", help="port (overrides PORT)")
    p.set_defaults(func=serve)
    p = commands.add_parser("migrate", help="create or upgrade the database schema, then exit")
    p.set_defaults(func=migrate)
    p = commands.add_parser(
        "prune", help="delete final messages older than RECEIVER_RETENTION_DAYS, then exit"
    )
    p.add_argument("--days", help="retention in days (overrides RECEIVER_RETENTION_DAYS)")
    p.set_defaults(func=prune)
    p = commands.add_parser(
        "backup",
        help="write a consistent copy of the SQLite database to PATH (safe while serving); "
        "with DATABASE_URL, say how to back PostgreSQL up with pg_dump",
    )
    p.add_argument("path", metavar="PATH", help="the copy's file (or a directory for it)")
    p.set_defaults(func=backup)
    p = commands.add_parser(
        "poll", help="ask providers about every message whose DLR is late, once, then exit"
    )
    p.add_argument("--once", action="store_true", help="one sweep of everything due now")
    p.set_defaults(func=poll)
    p = commands.add_parser(
        "verify",
        help="check every message's status against its events (exit 1 on a mismatch)",
        description="Replay every message's events, in the order they were recorded, through "
        "the status rule, and compare the result (status, provider_status, final, final_via, "
        "sent_at, final_at) with the stored message. Prints each mismatch and the count "
        "checked; exits 1 when any message mismatches. Reads page by page, so it is safe "
        "while the service runs. See docs/ledger.md.",
    )
    p.add_argument(
        "--repair",
        action="store_true",
        help="rewrite each mismatched message from its events and record a `repair` event on "
        "it (exit 0 once every mismatch is repaired)",
    )
    p.set_defaults(func=verify)
    p = commands.add_parser(
        "copy",
        help="copy a SQLite database into an empty PostgreSQL database, then exit",
        description="Copy every message, event, held callback and polling state of a SQLite "
        "database into an empty PostgreSQL database, ids kept, in one transaction; the target "
        "is migrated first. Prints each table's count in the source and in the target. Stop "
        "the service first, or callbacks it records meanwhile stay behind in the file. Exits 2 "
        "without copying when the target already holds messages or events.",
    )
    p.add_argument(
        "--from", dest="source", metavar="PATH", required=True, help="the SQLite database file"
    )
    p.add_argument(
        "--to",
        metavar="URL",
        required=True,
        help='the PostgreSQL database, postgres://... (e.g. "$DATABASE_URL")',
    )
    p.set_defaults(func=copy)
    p = commands.add_parser(
        "callback-url",
        help="print a provider's signed callback URL (23 Telecom, me-sms), then exit",
        description="Print the signed callback URL to paste into PROVIDER's console, the one "
        "GET /v1/callback-url gives, built from this environment's settings "
        "(RECEIVER_SECRET_KEY, RECEIVER_PUBLIC_URL, else HOST and PORT); no running service "
        "is needed. A warning goes to standard error when the URL's host is one a provider "
        "cannot reach (loopback or private): set RECEIVER_PUBLIC_URL then.",
    )
    p.add_argument("provider", metavar="PROVIDER", help="telecom23 or mesms")
    p.add_argument(
        "--label",
        help="a name kept with each callback as its account (1-64 letters, digits, _ . -)",
    )
    p.set_defaults(func=callback_url)
    p = commands.add_parser(
        "simulate",
        help="run the provider simulator (default: 127.0.0.1:8900); see docs/simulator.md",
    )
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8900, help="port (default 8900; 0 picks one)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--speed", type=_speed, default=1.0, help="simulated seconds per real second (default 1)"
    )
    from receiver.simulator.config import Accounts  # dataclasses only: cheap to import

    defaults = Accounts()
    for name in ("twilio_account_sid", "twilio_auth_token", "telecom23_api_key"):
        p.add_argument("--" + name.replace("_", "-"), help=f"default {getattr(defaults, name)}")
    p.add_argument("--telecom23-webhook-secret", help="sign telecom23 DLRs (default: unsigned)")
    p.add_argument("--mesms-api-key", help=f"default {defaults.mesms_api_key}")
    p.set_defaults(func=simulate)
    from receiver.demo import MAX_COUNT  # cheap: what it runs is imported when it runs

    p = commands.add_parser(
        "demo",
        help="the simulator and the receiver together: a few hundred messages with dropped and "
        "late DLRs, followed live until every one is final (no account needed)",
    )
    p.add_argument(
        "--count",
        type=_demo_count,
        default=300,
        help=f"messages to send, shared among the providers (1 to {MAX_COUNT}; default 300)",
    )
    p.add_argument("--seed", type=int, default=0, help="the simulator's random seed (default 0)")
    p.add_argument(
        "--timeout",
        type=_demo_timeout,
        default=120.0,
        help="give up after this many seconds (default 120)",
    )
    p.add_argument(
        "--database", metavar="PATH", help="keep the receiver's database here (a new file)"
    )
    p.add_argument(
        "--keep",
        action="store_true",
        help="after the run, keep the receiver serving (its URL and API token are printed) "
        "until Ctrl-C, to open its dashboard on the demo's data",
    )
    p.set_defaults(func=demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    result: int = args.func(args)
    return result
