from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support import LiveServer, make_settings

from receiver.settings import PREFIXES

# What the service reads from its environment besides its prefixed settings.
PLATFORM_VARIABLES = ("DATABASE_URL", "DYNO", "PORT")


def pytest_configure(config: pytest.Config) -> None:
    """The suite never inherits the service's settings from the shell that runs it (a developer's
    TWILIO_AUTH_TOKEN, a Heroku CI's DYNO or DATABASE_URL): every server and subprocess a test
    starts sees only what that test gives it. RECEIVER_TEST_* variables are the suite's own."""
    for name in list(os.environ):
        ours = name.startswith(PREFIXES) and not name.startswith("RECEIVER_TEST_")
        if ours or name in PLATFORM_VARIABLES:
            del os.environ[name]


# The contract tests' fixtures: store_factory, store, run, over every kind of store; stores.py
# also registers tests/pg.py's PostgreSQL server fixtures (pg_server, pg_url).
pytest_plugins = ["stores"]


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., LiveServer]]:
    """Start a live server with settings overrides; every one started is stopped at the end."""
    servers: list[LiveServer] = []

    def start(**overrides: Any) -> LiveServer:
        server = LiveServer(make_settings(tmp_path, **overrides)).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def server(start_server: Callable[..., LiveServer]) -> LiveServer:
    return start_server()


@pytest.fixture
def anyio_backend() -> str:
    """The anyio tests run on asyncio, as the service does. selenium (the dashboard's browser
    tests) installs trio, which anyio's plugin would otherwise add as a second backend."""
    return "asyncio"
