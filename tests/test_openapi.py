"""GET /openapi.json: every route documented, and the live server fuzzed against the document."""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from starlette.routing import Route
from support import LiveServer, make_settings

from receiver.api.openapi import build_spec
from receiver.app import create_app
from receiver.providers import REGISTRY, callback_path

TOKEN = "fuzz-api-token"
SPEC = build_spec()


def route_operations() -> set[tuple[str, str]]:
    """(method, path) of every route the app serves, HEAD aside (Starlette adds it to GET);
    the dashboard's HTML pages are for people, not the API (tests/test_dashboard.py)."""
    app = create_app(make_settings(Path("/nonexistent"), dashboard=False))
    found: set[tuple[str, str]] = set()
    for route in app.routes:
        assert isinstance(route, Route), route
        # Starlette writes a typed parameter {name:type}; OpenAPI writes {name}.
        path = re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path)
        found |= {(method, path) for method in route.methods or () if method != "HEAD"}
    return found


def spec_operations() -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in SPEC["paths"].items() for method in item}


def test_every_route_of_the_app_is_documented_and_nothing_else() -> None:
    assert route_operations() == spec_operations()


def test_every_provider_in_the_registry_has_its_callback_documented() -> None:
    for name in REGISTRY:
        operation = SPEC["paths"][callback_path(name)]["post"]
        assert {"204", "400", "403", "413", "503"} <= set(operation["responses"])


def test_every_error_response_is_the_json_error_shape() -> None:
    for path, item in SPEC["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                if int(status) >= 400:
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Error"}, (method, path)
    error = SPEC["components"]["schemas"]["Error"]
    assert error["required"] == ["error_code", "message"]
    assert set(error["properties"]) == {"error_code", "message", "details"}


def test_the_document_is_served_without_a_token(tmp_path: Path) -> None:
    server = LiveServer(make_settings(tmp_path, api_token=TOKEN)).start()
    try:
        with server.client() as client:
            response = client.get("/openapi.json")
    finally:
        server.stop()
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    # No Standard Webhooks source is configured: messages can be stored under these names.
    assert response.json() == build_spec(["mesms", "telecom23", "twilio"])


def test_the_public_url_is_the_documents_server(tmp_path: Path) -> None:
    spec = build_spec(public_url="https://sms.example.com/receiver")
    assert spec["servers"] == [{"url": "https://sms.example.com/receiver"}]


# -- schemathesis against a live server --------------------------------------------------------


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = LiveServer(make_settings(tmp_path_factory.mktemp("fuzz"), api_token=TOKEN)).start()
    yield server
    server.stop()


# Given to schemathesis as the schemes' credentials (not as a fixed header), so the cases it
# makes without them are known to be unauthenticated, and a 401 there is the right answer.
CONFIG = schemathesis.Config.from_dict(
    {"auth": {"openapi": {"apiToken": {"bearer": TOKEN}, "metricsToken": {"bearer": TOKEN}}}}
)


def _without_waiting(spec: dict[str, Any]) -> dict[str, Any]:
    """The document less what holds its answer by design (a long poll's `wait`, the stream),
    which a fuzzer's 10 s timeout would call a failure; test_realtime.py and test_stream.py
    test those over a real server."""
    spec = copy.deepcopy(spec)
    del spec["paths"]["/v1/stream"]
    get = spec["paths"]["/v1/messages/{message_id}"]["get"]
    get["parameters"] = [p for p in get["parameters"] if p["name"] not in ("wait", "until")]
    return spec


schema = schemathesis.openapi.from_dict(_without_waiting(SPEC), config=CONFIG)


# The suite's cases are the same every run (a suite that fails at random helps no one); set
# RECEIVER_TEST_FUZZ=N to draw N fresh random cases per operation instead, to look for new failures.
FUZZ = int(os.environ.get("RECEIVER_TEST_FUZZ", "0"))


@schema.parametrize()
@settings(
    max_examples=FUZZ or 25,
    derandomize=not FUZZ,
    deadline=None,
    database=None,  # no .hypothesis/ directory left behind
    suppress_health_check=list(HealthCheck),
)
def test_the_live_server_keeps_to_its_document(case: schemathesis.Case, live: LiveServer) -> None:
    """No 5xx, and every status, content type and body is one the document declares."""
    response = case.call_and_validate(
        base_url=live.base_url,
        timeout=10,
        # Some valid-looking input is refused for reasons a schema cannot state (a cursor must
        # be one the API issued, `since` must be before `until`); a 400 there is right.
        excluded_checks=[schemathesis.checks.positive_data_acceptance],
    )
    assert response.status_code < 500, response.text
