"""The `receiver` command: serve, migrate, prune, backup."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

import structlog

from receiver import __version__
from receiver.settings import Settings, SettingsError


def _settings(**overrides: str) -> Settings:
    """Settings from the environment, command-line overrides checked by the same rules."""
    try:
        return Settings.from_env(overrides=overrides)
    except SettingsError as exc:
        print(f"receiver: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from receiver.app import create_app
    from receiver.logging import configure_logging

    overrides = {"HOST": args.host} if args.host else {}
    if args.port is not None:
        overrides["PORT"] = str(args.port)
    settings = _settings(**overrides)
    configure_logging(settings.log_level, settings.log_format)
    applied = _migrate_or_exit(settings)
    if applied:
        structlog.get_logger("receiver").info(
            "migrated", database=settings.database, migrations_applied=applied
        )
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        # We read forwarded headers ourselves, only when RECEIVER_TRUST_FORWARDED says so.
        proxy_headers=False,
        server_header=False,
        access_log=False,
        log_config=None,  # configure_logging() already routed uvicorn's loggers
        log_level=settings.log_level,
        timeout_graceful_shutdown=30,
    )
    return 0


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
    applied = _migrate_or_exit(settings)
    print(
        f"{settings.database}: applied {len(applied)} migration(s)"
        + (f": {', '.join(applied)}" if applied else " (up to date)")
    )
    return 0


def prune(args: argparse.Namespace) -> int:
    from receiver import retention
    from receiver.logging import configure_logging
    from receiver.store import StoreUnavailable, open_store

    settings = _settings(**({"RECEIVER_RETENTION_DAYS": args.days} if args.days else {}))
    configure_logging(settings.log_level, settings.log_format)
    if settings.retention_days == 0:
        print("receiver: retention is off (RECEIVER_RETENTION_DAYS=0); nothing pruned")
        return 0

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
        f"{settings.database}: pruned {pruned} message(s) final for more than "
        f"{settings.retention_days} day(s), with their events"
    )
    return 0


def backup(args: argparse.Namespace) -> int:
    from receiver.store import StoreUnavailable, open_store

    settings = _settings()
    target = Path(args.path)
    if target.is_dir():
        target = target / Path(settings.database).name
    if target.resolve() == Path(settings.database).resolve():
        print("receiver: the backup path is the database itself", file=sys.stderr)
        return 2
    try:
        info = open_store(settings).backup(str(target))
    except StoreUnavailable as exc:
        print(f"receiver: {exc}", file=sys.stderr)
        return 1
    print(f"{settings.database} -> {info.path}: {info.size_bytes} bytes, {info.messages} messages")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="receiver",
        description="Delivery-tracking sidecar for SMS status callbacks. "
        "Settings come from environment variables (see README.md).",
    )
    parser.add_argument("--version", action="version", version=f"receiver {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = commands.add_parser("serve", help="run the HTTP service (default: 127.0.0.1:8000)")
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
        "backup", help="write a consistent copy of the database to PATH (safe while serving)"
    )
    p.add_argument("path", metavar="PATH", help="the copy's file (or a directory for it)")
    p.set_defaults(func=backup)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    result: int = args.func(args)
    return result
