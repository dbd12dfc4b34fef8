"""A real PostgreSQL 15 server for the tests: one per session, one fresh database per test.

`initdb` refuses to run as root, so the server is made and run as the `postgres` user in a
directory it owns (pytest's tmp_path is 0700 and root's). Durability is off (fsync,
synchronous_commit, full_page_writes): the tests check behaviour, not the disk. Where the
binaries are missing, the tests that need the server are skipped with the reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support import WAIT, free_port


def _bin() -> Path:
    """Where initdb and pg_ctl are: RECEIVER_TEST_PG_BIN, else the newest Debian install
    (/usr/lib/postgresql/N/bin), else next to an initdb on PATH."""
    if "RECEIVER_TEST_PG_BIN" in os.environ:
        return Path(os.environ["RECEIVER_TEST_PG_BIN"])
    installed = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if installed:
        return installed[-1].parent
    on_path = shutil.which("initdb")
    return Path(on_path).resolve().parent if on_path else Path("/usr/lib/postgresql/15/bin")


BIN = _bin()
USER = "postgres"


@dataclass(frozen=True)
class PgServer:
    """A running server: where it listens, and how to reach its maintenance database."""

    port: int
    data: Path

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def admin(self, sql: str) -> None:
        """Run one statement on the maintenance database (autocommit, as CREATE DATABASE needs)."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(sql)  # type: ignore[arg-type]

    def create_database(self) -> str:
        """A new empty database; its URL."""
        name = "t_" + uuid.uuid4().hex[:16]
        self.admin(f"CREATE DATABASE {name}")
        return self.url(name)


def unavailable() -> str | None:
    """Why a server cannot be started here (None: it can)."""
    if not (BIN / "initdb").is_file() or not (BIN / "pg_ctl").is_file():
        return f"PostgreSQL binaries not found in {BIN} (apt-get install -y postgresql)"
    if shutil.which("runuser") is None and os.geteuid() == 0:
        return "runuser is missing, and initdb refuses to run as root"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed"
    return None


def _as_postgres(*args: str) -> list[str]:
    return ["runuser", "-u", USER, "--", *args] if os.geteuid() == 0 else list(args)


def _run(cmd: list[str]) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=WAIT * 2, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({result.returncode}): {result.stderr}")


def start_server() -> tuple[PgServer, Path]:
    """initdb and start a server on a free loopback port; (server, directory to remove)."""
    base = Path(tempfile.mkdtemp(prefix="receiver-pg-"))
    if os.geteuid() == 0:
        shutil.chown(base, user=USER, group=USER)
    base.chmod(0o700)
    data = base / "data"
    _run(
        _as_postgres(
            str(BIN / "initdb"),
            "-D",
            str(data),
            "-U",
            USER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )
    )
    port = free_port()
    options = (
        f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={base} "
        "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
        "-c max_connections=200"
    )
    _run(
        _as_postgres(
            str(BIN / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(base / "server.log"),
            "-o",
            options,
            "-w",
            "-t",
            str(int(WAIT)),
            "start",
        )
    )
    return PgServer(port, data), base


def stop_server(server: PgServer, base: Path) -> None:
    subprocess.run(
        _as_postgres(str(BIN / "pg_ctl"), "-D", str(server.data), "-m", "immediate", "stop"),
        capture_output=True,
        timeout=WAIT * 2,
        check=False,
    )
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """One PostgreSQL server for the session (skipped, with the reason, where there is none)."""
    reason = unavailable()
    if reason is not None:
        pytest.skip(reason)
    server, base = start_server()
    try:
        yield server
    finally:
        stop_server(server, base)


@pytest.fixture
def pg_url(pg_server: PgServer) -> str:
    """The URL of a fresh, empty database of its own for this test."""
    return pg_server.create_database()


# -- the contract suite's store kind (tests/stores.py) -----------------------------------------

# The fixtures tests/stores.py registers along with STORE_KINDS["postgresql"].
FIXTURES = ("pg_server", "pg_url")


def store_kind(request: pytest.FixtureRequest, workdir: Path) -> Callable[..., Any]:
    """Make unopened PostgresStores: one database per `database` name within a test (two
    stores given one name share it, as two instances would), fresh ones per test."""
    from receiver.store.postgres import PostgresStore

    server: PgServer = request.getfixturevalue("pg_server")
    databases: dict[str, str] = {}

    def make(database: str, **kwargs: Any) -> PostgresStore:
        kwargs.pop("busy_timeout_ms", None)  # SQLite's: PostgreSQL waits for its locks
        if database not in databases:
            databases[database] = server.create_database()
        return PostgresStore(databases[database], **kwargs)

    return make
