"""Health checks and the error envelope, over the real server."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from support import LiveServer, make_settings

from receiver.store.sqlite import SQLiteStore


def test_healthz_answers_while_the_process_is_up(server: LiveServer) -> None:
    with server.client() as c:
        response = c.get("/healthz")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


def test_readyz_proves_the_database_takes_a_write(server: LiveServer) -> None:
    with server.client() as c:
        response = c.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "store": "sqlite", "polling": "off"}
    with sqlite3.connect(server.settings.database) as conn:
        assert conn.execute("SELECT count(*) FROM _receiver_health").fetchone()[0] == 1


def test_readyz_is_503_while_another_process_holds_the_write_lock(
    start_server: Callable[..., LiveServer],
) -> None:
    server = start_server(db_busy_timeout_ms=50)
    blocker = sqlite3.connect(server.settings.database, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with server.client() as c:
            locked = c.get("/readyz")
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    with server.client() as c:
        recovered = c.get("/readyz")
    assert locked.status_code == 503
    assert locked.json()["error_code"] == "store_unavailable"
    assert recovered.status_code == 200


def test_unknown_routes_and_methods_get_json_errors(server: LiveServer) -> None:
    with server.client() as c:
        missing = c.get("/nope")
        wrong_method = c.get("/v1/webhook/twilio/sms-status")
    assert (missing.status_code, missing.json()["error_code"]) == (404, "not_found")
    assert (wrong_method.status_code, wrong_method.json()["error_code"]) == (
        405,
        "method_not_allowed",
    )


class ExplodingStore(SQLiteStore):
    async def get_messages(self, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        raise RuntimeError("secret internals")


def test_an_unexpected_error_is_a_json_500_without_traceback(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    server = LiveServer(settings, store=ExplodingStore(settings.database)).start()
    try:
        with server.client() as c:
            response = c.get("/v1/messages/SM1")
    finally:
        server.stop()
    assert response.status_code == 500
    assert response.json() == {
        "error_code": "internal_error",
        "message": "internal error; see the service log",
    }
    assert "secret internals" not in response.text


def test_request_id_is_echoed_or_made_up(server: LiveServer) -> None:
    with server.client() as c:
        echoed = c.get("/healthz", headers={"X-Request-ID": "abc-123"})
        insane = c.get("/healthz", headers={"X-Request-ID": "bad id\twith spaces"})
        fresh = c.get("/healthz")
    assert echoed.headers["x-request-id"] == "abc-123"
    assert insane.headers["x-request-id"] != "bad id\twith spaces"
    assert len(fresh.headers["x-request-id"]) == 32
