"""GET /v1/messages/export: the filtered list as a streamed CSV download, over real HTTP."""

from __future__ import annotations

import codecs
import csv
import importlib.util
import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from seed import seed_messages
from support import LiveServer, assert_error, make_settings, new_sid, post_status

from receiver.store.base import EXPORT_COLUMNS

StartServer = Callable[..., LiveServer]
TO = "+15550000001"


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One server for the tests that only check refusals."""
    server = LiveServer(make_settings(tmp_path_factory.mktemp("export"))).start()
    yield server
    server.stop()


def export(client: httpx.Client, **params: Any) -> tuple[httpx.Response, list[dict[str, str]]]:
    response = client.get("/v1/messages/export", params=params)
    assert response.status_code == 200, response.text
    assert response.content.startswith(codecs.BOM_UTF8)
    reader = csv.DictReader(io.StringIO(response.content[3:].decode("utf-8"), newline=""))
    assert tuple(reader.fieldnames or ()) == EXPORT_COLUMNS
    return response, list(reader)


def register(client: httpx.Client, *messages: dict[str, Any]) -> None:
    response = client.post("/v1/messages", json=list(messages))
    assert response.status_code == 200, response.text


def test_export_is_a_csv_download_of_every_message_newest_first(server: LiveServer) -> None:
    with server.client() as client:
        ids = [new_sid() for _ in range(3)]
        register(
            client,
            *({"provider": "twilio", "message_id": i, "to": TO, "metadata": {"n": 1}} for i in ids),
        )
        assert post_status(client, server.callback_url, ids[0], "delivered").status_code == 204

        response, rows = export(client)

    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["content-disposition"].startswith('attachment; filename="messages-')
    assert response.headers["content-disposition"].endswith('.csv"')
    assert response.headers["x-export-limit"] == "1000000"
    assert response.headers.get("transfer-encoding") == "chunked"  # streamed, not buffered
    assert response.content.endswith(b"\r\n")
    assert [r["message_id"] for r in rows] == ids[::-1]
    delivered = rows[-1]
    assert delivered["status"] == "delivered" and delivered["final"] == "true"
    assert delivered["final_at"].endswith("Z") and delivered["registered"] == "true"
    assert delivered["metadata"] == '{"n":1}'
    assert rows[0]["status"] == "registered" and rows[0]["final"] == "false"
    assert rows[0]["final_at"] == "" and rows[0]["to"] == TO  # a phone number is kept as is


def test_export_takes_the_list_filters_and_returns_what_the_list_returns(
    server: LiveServer,
) -> None:
    with server.client() as client:
        ids = [new_sid() for _ in range(4)]
        register(
            client,
            *(
                {"provider": "twilio", "message_id": i, "to": f"+1555000000{n % 2}"}
                for n, i in enumerate(ids)
            ),
        )
        for i in ids[:2]:
            assert post_status(client, server.callback_url, i, "undelivered").status_code == 204
        for params in (
            {"status": "undelivered"},
            {"to": "+15550000001"},
            {"provider": "twilio", "status": "registered", "to": "+15550000000"},
            {"since": "2000-01-01", "until": "2999-01-01T00:00:00Z"},
            {"until": "2000-01-01"},
        ):
            listed = client.get("/v1/messages", params={**params, "limit": 1000}).json()
            _, rows = export(client, **params)
            assert [r["message_id"] for r in rows] == [
                m["message_id"] for m in listed["messages"]
            ], params


@pytest.mark.parametrize(
    ("query", "error_code"),
    [
        ("status=lost", "invalid_parameter"),
        ("provider=nope", "invalid_parameter"),
        ("since=yesterday", "invalid_parameter"),
        ("since=2026-02-01&until=2026-01-01", "invalid_parameter"),
        ("status=sent&status=queued", "invalid_parameter"),
        ("limit=10", "unknown_parameter"),
        ("cursor=djE6MTA", "unknown_parameter"),
    ],
)
def test_export_refuses_bad_filters_with_the_lists_json_errors(
    shared: LiveServer, query: str, error_code: str
) -> None:
    with shared.client() as client:
        assert_error(client.get(f"/v1/messages/export?{query}"), 400, error_code)


def test_export_needs_the_api_token_when_one_is_set(start_server: StartServer) -> None:
    server = start_server(api_token="s3cret")
    with server.client() as client:
        assert_error(client.get("/v1/messages/export"), 401, "unauthorized")
        response = client.get("/v1/messages/export", headers={"Authorization": "Bearer s3cret"})
    assert response.status_code == 200


def test_export_stops_at_the_advertised_row_cap(start_server: StartServer) -> None:
    server = start_server(export_max_rows=3)
    with server.client() as client:
        register(client, *({"provider": "twilio", "message_id": new_sid()} for _ in range(5)))
        response, rows = export(client)
    assert response.headers["x-export-limit"] == "3"
    assert len(rows) == 3


def test_export_walks_many_chunks_sending_each_message_once(start_server: StartServer) -> None:
    server = start_server()
    ids = seed_messages(server.settings.database, 2_345)  # chunks of 1,000: three reads
    with server.client() as client:
        _, rows = export(client)
        _, undelivered = export(client, status="undelivered")
    assert [r["message_id"] for r in rows] == ids[::-1]
    assert undelivered == []


def test_cells_excel_would_run_as_formulas_are_quoted_and_text_survives(
    server: LiveServer,
) -> None:
    hostile = {
        "formula": '=HYPERLINK("http://x")',
        "text": 'comma, "quote"\nnewline é',
    }
    message_id = "@SUM" + new_sid()
    with server.client() as client:
        register(
            client,
            {
                "provider": "twilio",
                "message_id": message_id,
                "to": "+1 (555) 000",
                "from": "-1+2",
                "metadata": hostile,
            },
        )
        _, rows = export(client)
    row = next(r for r in rows if r["message_id"].endswith(message_id))
    assert row["message_id"] == "'" + message_id
    assert row["to"] == "'+1 (555) 000" and row["from"] == "'-1+2"
    # metadata starts with "{": not a formula, so it is the JSON exactly as stored.
    assert row["metadata"] == (
        '{"formula":"=HYPERLINK(\\"http://x\\")","text":"comma, \\"quote\\"\\nnewline \\u00e9"}'
    )


def test_export_is_not_mistaken_for_a_message_id(server: LiveServer) -> None:
    with server.client() as client:
        response = client.get("/v1/messages/export")
        events = client.get("/v1/messages/export/events")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    assert_error(events, 404, "message_not_found")


def load_script(name: str) -> Any:
    path = Path(__file__).resolve().parent.parent / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_export_memory_stays_flat_while_50000_rows_stream() -> None:
    """The server process's resident memory, read from /proc while it streams (the same
    measurement as scripts/export_memory.py, which does 1,000,000 rows)."""
    result = load_script("export_memory").measure(50_000, samples=10)
    assert result["rows"] == 50_000
    # Everything in memory at once would be well over 50 MiB for these rows (13 MB of CSV);
    # streaming costs the read connections' page caches and buffers, under 10 MiB here.
    assert result["growth_mib"] < 20, result


def test_each_column_holds_the_field_of_the_same_name_in_the_message_api(
    server: LiveServer,
) -> None:
    message_id = new_sid()
    with server.client() as client:
        register(
            client,
            {
                "provider": "twilio",
                "message_id": message_id,
                "to": TO,
                "from": "+15017122661",
                "sent_at": "2026-11-25T10:00:00Z",
                "metadata": {"order": 42},
            },
        )
        response = post_status(client, server.callback_url, message_id, "failed", ErrorCode="30003")
        assert response.status_code == 204
        message = client.get(f"/v1/messages/{message_id}").json()
        _, (row,) = export(client)

    def as_cell(value: Any) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, dict):
            return json.dumps(value, separators=(",", ":"))
        return "" if value is None else str(value)

    # Polling's own object and the realtime deadline stay out.
    assert set(EXPORT_COLUMNS) == set(message) - {"poll", "deadline", "deadline_missed"}
    assert row == {column: as_cell(message[column]) for column in EXPORT_COLUMNS}
    assert row["error_code"] == "30003" and row["account"].startswith("AC")
