"""The PostgreSQL settings: DATABASE_URL, the pool's size, and the refusal to run on a Heroku
dyno's disk, which is wiped at every restart."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from support import WAIT, free_port, wait_for_healthz

from receiver.settings import Settings, SettingsError, redact_database_url, unknown_variables

BIN = Path(sys.executable).parent / "receiver"
HEROKU_URL = "postgres://u1abc:p4ssw0rd@ec2-1-2-3-4.compute-1.amazonaws.com:5432/d9xyz"


def test_sqlite_is_the_store_without_database_url() -> None:
    s = Settings.from_env({})
    assert s.database_url is None
    assert (s.pg_pool_size, s.allow_ephemeral) == (10, False)
    assert s.database_label == "./receiver.db"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        # Heroku's form: a remote host and no sslmode, so TLS is required.
        (HEROKU_URL, HEROKU_URL + "?sslmode=require"),
        (
            "postgresql://u:p@db.internal/receiver",
            "postgresql://u:p@db.internal/receiver?sslmode=require",
        ),
        (
            "postgresql://u@db.example.com/r?connect_timeout=5",
            "postgresql://u@db.example.com/r?connect_timeout=5&sslmode=require",
        ),
        ("postgresql://db.example.com/r?", "postgresql://db.example.com/r?sslmode=require"),
        # Failover hosts: TLS as soon as one of them is elsewhere.
        (
            "postgresql://localhost:5432,db2.example.com:5433/r",
            "postgresql://localhost:5432,db2.example.com:5433/r?sslmode=require",
        ),
        (
            "postgresql:///r?host=db.example.com",
            "postgresql:///r?host=db.example.com&sslmode=require",
        ),
        # The URL's own sslmode is kept, whatever it says.
        (
            "postgres://u:p@db.example.com/r?sslmode=disable",
            "postgres://u:p@db.example.com/r?sslmode=disable",
        ),
        (
            "postgresql://u:p@db.example.com/r?sslmode=verify-full&sslrootcert=/ca.pem",
            "postgresql://u:p@db.example.com/r?sslmode=verify-full&sslrootcert=/ca.pem",
        ),
        # This host: loopback, localhost, a Unix socket.
        ("postgresql://u:p@127.0.0.1:5432/r", "postgresql://u:p@127.0.0.1:5432/r"),
        ("postgresql://u:p@localhost/r", "postgresql://u:p@localhost/r"),
        ("postgresql://u:p@[::1]:5432/r", "postgresql://u:p@[::1]:5432/r"),
        ("postgresql:///receiver", "postgresql:///receiver"),
        ("postgresql:///r?host=/var/run/postgresql", "postgresql:///r?host=/var/run/postgresql"),
    ],
)
def test_database_url_gets_sslmode_require_for_a_host_elsewhere(url: str, expected: str) -> None:
    assert Settings.from_env({"DATABASE_URL": url}).database_url == expected


@pytest.mark.parametrize(
    "url",
    [
        "mysql://u:s3cret@db.example.com/r",
        "sqlite:///receiver.db",
        "./receiver.db",
        "postgres:s3cret@db.example.com/r",
        "http://u:s3cret@db.example.com/r",
    ],
)
def test_a_database_url_that_is_not_postgresql_is_an_error_without_its_password(
    url: str,
) -> None:
    with pytest.raises(SettingsError, match="DATABASE_URL") as error:
        Settings.from_env({"DATABASE_URL": url})
    assert "s3cret" not in str(error.value)


def test_a_blank_database_url_counts_as_unset() -> None:
    assert Settings.from_env({"DATABASE_URL": "  "}).database_url is None


def test_the_password_is_kept_out_of_repr_and_the_label() -> None:
    s = Settings.from_env({"DATABASE_URL": HEROKU_URL})
    assert "p4ssw0rd" not in repr(s)
    assert s.database_label == (
        "postgres://u1abc:***@ec2-1-2-3-4.compute-1.amazonaws.com:5432/d9xyz?sslmode=require"
    )


@pytest.mark.parametrize(
    ("url", "label"),
    [
        ("postgresql://u@h/r", "postgresql://u@h/r"),
        ("postgresql://h/r", "postgresql://h/r"),
        ("postgresql:///r?user=u&password=s3cret", "postgresql:///r?user=u&password=***"),
    ],
)
def test_redact_database_url_hides_the_password_wherever_it_is(url: str, label: str) -> None:
    assert redact_database_url(url) == label


@pytest.mark.parametrize(("value", "size"), [("1", 1), ("25", 25), ("", 10)])
def test_pool_size_is_read(value: str, size: int) -> None:
    assert Settings.from_env({"RECEIVER_PG_POOL_SIZE": value}).pg_pool_size == size


@pytest.mark.parametrize("value", ["0", "-3", "1001", "ten"])
def test_a_bad_pool_size_is_an_error_naming_it(value: str) -> None:
    with pytest.raises(SettingsError, match="RECEIVER_PG_POOL_SIZE"):
        Settings.from_env({"RECEIVER_PG_POOL_SIZE": value})


def test_database_url_is_read_again_at_each_start() -> None:
    """Heroku rotates the database's credentials by changing DATABASE_URL and restarting."""
    first = Settings.from_env({"DATABASE_URL": "postgresql://u:old@localhost/r"})
    second = Settings.from_env({"DATABASE_URL": "postgresql://u:new@localhost/r"})
    assert (first.database_url, second.database_url) == (
        "postgresql://u:old@localhost/r",
        "postgresql://u:new@localhost/r",
    )


def test_a_heroku_dyno_without_database_url_is_refused() -> None:
    with pytest.raises(SettingsError) as error:
        Settings.from_env({"DYNO": "web.1"})
    message = str(error.value)
    assert message.startswith("DATABASE_URL is not set")
    assert "wiped at every restart" in message
    assert "`heroku addons:create heroku-postgresql:essential-0`" in message
    assert "RECEIVER_ALLOW_EPHEMERAL=1" in message


@pytest.mark.parametrize(
    "env",
    [
        {"DYNO": "web.1", "DATABASE_URL": HEROKU_URL},
        {"DYNO": "web.1", "RECEIVER_ALLOW_EPHEMERAL": "1"},
        {"DYNO": ""},
        {},
    ],
)
def test_a_dyno_with_a_database_or_ephemeral_allowed_starts(env: dict[str, str]) -> None:
    Settings.from_env(env)


def test_the_new_names_are_settings_and_heroku_names_are_not_warned_about() -> None:
    env = {
        "DATABASE_URL": HEROKU_URL,
        "RECEIVER_PG_POOL_SIZE": "5",
        "RECEIVER_ALLOW_EPHEMERAL": "1",
        "DYNO": "web.1",
        "PORT": "5000",
    }
    assert unknown_variables(env) == {}
    assert {"DATABASE_URL", "RECEIVER_PG_POOL_SIZE", "RECEIVER_ALLOW_EPHEMERAL"} <= set(
        Settings().env_names()
    )
    assert unknown_variables({"RECEIVER_PG_POOL": "5", "RECEIVER_ALLOW_EPHEMERALL": "1"}) == {
        "RECEIVER_PG_POOL": "RECEIVER_PG_POOL_SIZE",
        "RECEIVER_ALLOW_EPHEMERALL": "RECEIVER_ALLOW_EPHEMERAL",
    }


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("RECEIVER_", "TWILIO_")) and k not in ("DATABASE_URL", "DYNO")
    }
    return env | {"RECEIVER_DATABASE": str(tmp_path / "dyno.db"), "PORT": str(free_port())} | extra


@pytest.mark.parametrize("command", [["serve"], ["migrate"], ["poll", "--once"]])
def test_receiver_on_a_dyno_without_a_database_exits_2_naming_database_url(
    tmp_path: Path, command: list[str]
) -> None:
    result = subprocess.run(
        [str(BIN), *command],
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(tmp_path, DYNO="web.1"),
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("receiver: configuration error: DATABASE_URL is not set")
    assert "heroku addons:create heroku-postgresql:essential-0" in result.stderr
    assert result.stdout == ""
    assert not (tmp_path / "dyno.db").exists()  # refused before touching anything


def test_receiver_on_a_dyno_runs_on_its_disk_when_told_to(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(BIN), "migrate"],
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(tmp_path, DYNO="web.1", RECEIVER_ALLOW_EPHEMERAL="1"),
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "dyno.db").exists()


def _with_password(url: str) -> str:
    """The test server trusts loopback, so a password in the URL is carried, never checked."""
    return url.replace("postgresql://postgres@", "postgresql://postgres:pw-not-to-show@", 1)


def test_migrate_on_postgresql_names_the_database_without_its_password(
    tmp_path: Path, pg_url: str
) -> None:
    url = _with_password(pg_url)
    result = subprocess.run(
        [str(BIN), "migrate"],
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(tmp_path, DATABASE_URL=url),
    )
    assert result.returncode == 0, result.stderr
    label = url.replace(":pw-not-to-show@", ":***@")
    assert result.stdout.startswith(f"{label}: applied ")
    assert "pw-not-to-show" not in result.stdout + result.stderr
    assert not (tmp_path / "dyno.db").exists()  # RECEIVER_DATABASE is not used


def test_serve_on_a_dyno_with_database_url_starts_on_postgresql(
    tmp_path: Path, pg_url: str
) -> None:
    """The Heroku case: DYNO and DATABASE_URL set, as the add-on does; `started` names the
    store and the database, the password hidden."""
    env = _env(tmp_path, DYNO="web.1", DATABASE_URL=_with_password(pg_url))
    env |= {"RECEIVER_LOG_FORMAT": "json", "TWILIO_AUTH_TOKEN": "token"}
    proc = subprocess.Popen(
        [str(BIN), "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        assert wait_for_healthz(f"http://127.0.0.1:{env['PORT']}", proc).status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=WAIT)
    assert proc.returncode == 0, output
    started = next(json.loads(line) for line in output.splitlines() if '"event": "started"' in line)
    assert started["store"] == "postgresql"
    assert started["database"] == pg_url.replace(
        "postgresql://postgres@", "postgresql://postgres:***@"
    )
    assert "pw-not-to-show" not in output
    assert not (tmp_path / "dyno.db").exists()
