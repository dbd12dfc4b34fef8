from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support import LiveServer, make_settings

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
