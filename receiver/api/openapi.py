"""The OpenAPI 3.1 description of every endpoint, served at GET /openapi.json.

Each route is one row of OPERATIONS; provider callbacks get theirs from the provider registry.
tests/test_openapi.py fails for a route of create_app() that has no row, so none goes undocumented.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, get_args

from starlette.requests import Request
from starlette.responses import Response

from receiver.api import messages, parts
from receiver.engine import Status
from receiver.polling.twilio import ACCOUNT_SID
from receiver.providers import REGISTRY, callback_path
from receiver.schemas import (
    Error,
    MessageEvents,
    MessagePage,
    PushDetail,
    PushPage,
    PushPayload,
    PushStatus,
    Recovered,
    Registered,
    RegisteredBatch,
    Registration,
    RegistrationConflict,
    Stats,
    openapi_schemas,
)
from receiver.version import __version__

Schema = dict[str, Any]


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(type_: str, **more: Any) -> Schema:
    return {"type": [type_, "null"], **more}


_TIME = {"type": "string", "description": "ISO 8601 UTC, like 2026-11-25T10:00:00.000Z"}
_TWILIO_SID = f"^{ACCOUNT_SID.pattern}$"
_STATUSES = [s.value for s in Status]

SCHEMAS: dict[str, Schema] = {
    # The declared ones (receiver/schemas.py), with those they hold (Status, Poll, ...).
    **openapi_schemas(
        Error,
        Registration,
        MessageEvents,
        MessagePage,
        Stats,
        Registered,
        RegisteredBatch,
        RegistrationConflict,
        PushPayload,
    ),
    "Health": {
        "type": "object",
        "properties": {"status": {"const": "ok"}, "version": {"type": "string"}},
        "required": ["status", "version"],
        "additionalProperties": False,
    },
    "Ready": {
        "type": "object",
        "properties": {
            "status": {"const": "ready"},
            "store": {"type": "string"},
            "polling": {
                "description": "`off` (RECEIVER_POLLING), else each provider's polling: "
                "`polling`, `paused` (429 or an outage, retried), `stopped` (credentials "
                "refused: fix them and restart) or `not_configured` (late messages only time "
                "out). Polling trouble never makes the service unready.",
                "oneOf": [
                    {"const": "off"},
                    {
                        "type": "object",
                        "additionalProperties": {
                            "type": "object",
                            "properties": {
                                "state": {
                                    "enum": ["polling", "paused", "stopped", "not_configured"]
                                },
                                "detail": _nullable("string"),
                            },
                            "required": ["state", "detail"],
                            "additionalProperties": False,
                        },
                    },
                ],
            },
        },
        "required": ["status", "store", "polling"],
        "additionalProperties": False,
    },
    # Ready's `pushes` is added below, with the push schemas.
    "Send": {
        "type": "object",
        "description": "A me-sms send: its recipients per status (kept as counts), and, when it "
        "was registered by its uuid alone (`tracked`), its sweeps. The sweep fields are absent "
        "for a send whose recipients were registered one by one.",
        "properties": {
            "provider": {"type": "string"},
            "uuid": {"type": "string"},
            "tracked": {"type": "boolean"},
            "recipients": {"type": "integer", "minimum": 0},
            "final": {"type": "integer", "minimum": 0},
            "counts": {
                "type": "object",
                "properties": {s: {"type": "integer", "minimum": 1} for s in _STATUSES},
                "additionalProperties": False,
            },
            "account": _nullable("string"),
            "created_at": _TIME,
            "sent_at": _nullable("string"),
            "metadata": {"type": ["object", "null"]},
            "state": {"enum": ["waiting", "sweeping", "settled"]},
            "sweep": {
                "type": ["object", "null"],
                "description": "the sweep under way: its cursor and progress",
                "properties": {
                    "started_at": _TIME,
                    "cursor": {"type": "integer", "minimum": 0},
                    "pages": {"type": "integer", "minimum": 0},
                    "recipients_seen": {"type": "integer", "minimum": 0},
                },
            },
            "sweeps": {"type": "integer", "minimum": 0},
            "page_requests": {"type": "integer", "minimum": 0},
            "last_sweep_at": _nullable("string"),
            "last_sweep": {
                "type": ["object", "null"],
                "description": "the last finished sweep: pages, recipients, and what each "
                "recipient's answer did (created, applied, unchanged, regression, conflict, "
                "duplicate, unmapped, gave_up, malformed)",
                "additionalProperties": {"type": ["integer", "string", "null"]},
            },
            "last_result": _nullable("string"),
            "next_sweep_at": _nullable("string"),
            "malformed": {"type": "integer", "minimum": 0},
            "malformed_sample": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["provider", "uuid", "tracked", "recipients", "final", "counts"],
        "additionalProperties": False,
    },
    "CallbackUrl": {
        "type": "object",
        "properties": {
            "provider": {"type": "string"},
            "url": {"type": "string"},
            "signed": {"type": "boolean"},
            "key_id": {"type": "string", "description": "signed URLs: the signing key's id"},
            "label": {"type": ["string", "null"]},
            "warning": {
                "type": "string",
                "description": "present only when the URL's host (as written, no DNS lookup) is "
                "loopback, private or otherwise not public, so no provider can reach it: a "
                "sentence saying to set RECEIVER_PUBLIC_URL. Absent for a public host.",
            },
        },
        "required": ["provider", "url", "signed"],
        "additionalProperties": False,
    },
}
# A batch's item is a Registered or, when it contradicts what is kept, a RegistrationConflict:
# msgspec declares no union of two untagged Structs, so the document says it here.
SCHEMAS["RegisteredBatch"]["properties"]["messages"]["items"] = {
    "oneOf": [_ref("Registered"), _ref("RegistrationConflict")]
}

# -- building blocks of an operation ---------------------------------------------------------

_REQUEST_ID = {
    "X-Request-ID": {
        "description": "the caller's X-Request-ID when sane, else a new one; on every log line",
        "required": True,
        "schema": {"type": "string"},
    }
}


def _json(schema: Schema, description: str) -> Schema:
    return {
        "description": description,
        "headers": _REQUEST_ID,
        "content": {"application/json": {"schema": schema}},
    }


def _error(description: str, *codes: str) -> Schema:
    """An error response; `codes` are the error_codes it can carry, for the reader."""
    if codes:
        description += ": " + ", ".join(f"`{c}`" for c in codes)
    return _json(_ref("Error"), description)


def _query(name: str, schema: Schema, description: str) -> Schema:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


_MESSAGE_ID = {
    "name": "message_id",
    "in": "path",
    "required": True,
    # An empty id would be another path; "/" is allowed, as registration allows it.
    "schema": {"type": "string", "minLength": 1},
    "description": "the provider's message id; one ending in /events cannot be read here",
}
_SINCE = _query("since", {"type": "string"}, "ISO 8601 time or date (inclusive), on created_at")
_UNTIL = _query("until", {"type": "string"}, "ISO 8601 time or date (exclusive), on created_at")
_BAD_QUERY = _error("bad query", "invalid_parameter", "unknown_parameter")
_BAD_PAGE_QUERY = _error("bad query", "invalid_parameter", "unknown_parameter", "invalid_cursor")
# A keyset-paginated list's parameters (messages, pushes).
_PAGE = [
    _query(
        "limit",
        {"type": "integer", "minimum": 1, "maximum": messages.MAX_LIMIT},
        f"page size (default {messages.DEFAULT_LIMIT})",
    ),
    _query("cursor", {"type": "string"}, "a next_cursor from an earlier page"),
]
_UNAVAILABLE = _error("the database cannot answer now; retry", "store_unavailable")
# The query API's access errors (see README "Auth").
_GUARDED = {
    "401": _error("bearer token missing or wrong", "unauthorized"),
    "403": _error("no token set and the caller is not on loopback", "loopback_only"),
    "503": _UNAVAILABLE,
}
_API_SECURITY: list[dict[str, list[str]]] = [{"apiToken": []}]


def _provider_param(providers: list[str]) -> Schema:
    return _query("provider", {"enum": providers}, "a provider's name")


def _operations(providers: list[str], webhooks: list[str]) -> dict[tuple[str, str], Schema]:
    """Every route's documentation: (method, path) -> OpenAPI operation."""
    # The list's filters, which the export takes too.
    filters = [
        _query("status", {"enum": _STATUSES}, "current status"),
        _provider_param(providers),
        _query("to", {"type": "string"}, "recipient number, exact"),
        _SINCE,
        _UNTIL,
    ]
    registration = _ref("Registration")
    batch = {"type": "array", "items": registration, "minItems": 1, "maxItems": messages.MAX_BATCH}
    return {
        ("GET", "/healthz"): {
            "summary": "Liveness: the process answers",
            "tags": ["health"],
            "responses": {"200": _json(_ref("Health"), "up")},
        },
        ("GET", "/readyz"): {
            "summary": "Readiness: the database takes a committed write",
            "tags": ["health"],
            "responses": {
                "200": _json(_ref("Ready"), "ready"),
                "503": _error("the database cannot take writes", "store_unavailable"),
            },
        },
        ("GET", "/metrics"): {
            "summary": "Prometheus metrics",
            "description": "RECEIVER_METRICS_TOKEN when set, else the query API's access rule.",
            "tags": ["operations"],
            "security": [{"metricsToken": []}, {"apiToken": []}],
            "responses": {
                "200": {
                    "description": "the exposition, in the format the Accept header asks for",
                    "headers": _REQUEST_ID,
                    "content": {
                        "text/plain": {"schema": {"type": "string"}},
                        "application/openmetrics-text": {"schema": {"type": "string"}},
                    },
                },
                **_GUARDED,
            },
        },
        ("GET", "/openapi.json"): {
            "summary": "This document",
            "tags": ["operations"],
            "responses": {"200": _json({"type": "object"}, "the OpenAPI 3.1 description")},
        },
        ("GET", "/v1/messages"): {
            "summary": "List messages, newest first",
            "tags": ["messages"],
            "security": _API_SECURITY,
            "parameters": [
                *filters,
                *_PAGE,
            ],
            "responses": {
                "200": _json(_ref("MessagePage"), "one page"),
                "400": _BAD_PAGE_QUERY,
                **_GUARDED,
            },
        },
        ("POST", "/v1/messages"): {
            "summary": "Register messages your app sent (one, or a batch)",
            "description": "Idempotent: registering again fills in or corrects the app's facts.",
            "tags": ["messages"],
            "security": _API_SECURITY,
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "oneOf": [
                                registration,
                                {
                                    "type": "object",
                                    "properties": {"messages": batch},
                                    "required": ["messages"],
                                    "additionalProperties": False,
                                },
                                batch,
                            ]
                        }
                    }
                },
            },
            "responses": {
                "201": _json(_ref("Registered"), "one message, new"),
                "200": _json(
                    {"oneOf": [_ref("Registered"), _ref("RegisteredBatch")]},
                    "one message already known, or a batch",
                ),
                "400": _error(
                    "not a valid registration",
                    "invalid_json",
                    "invalid_message",
                    "batch_too_large",
                    "invalid_parts",
                    "parts_empty",
                    "too_many_parts",
                    "duplicate_parts",
                    "part_is_message_id",
                ),
                "409": _error(
                    "one message whose parts contradict what is kept (nothing written)",
                    *parts.CONFLICTS,
                ),
                "413": _error(
                    f"body over {messages.MAX_REGISTRATION_BODY} bytes", "body_too_large"
                ),
                **_GUARDED,
            },
        },
        ("GET", "/v1/messages/{message_id}"): {
            "summary": "One message's current status; with `wait`, once it is final",
            "tags": ["messages"],
            "security": _API_SECURITY,
            "parameters": [
                _MESSAGE_ID,
                _provider_param(providers),
                _query(
                    "wait",
                    {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?(ms|s|m)?$"},
                    "a long poll: answer once the message is final (or changed, with "
                    "until=change), or when this duration (at most 60s) ends",
                ),
                _query("until", {"enum": ["final", "change"]}, "what `wait` waits for"),
            ],
            "responses": {
                "200": _json(_ref("Message"), "the message"),
                "400": _BAD_QUERY,
                "429": _error(
                    "RECEIVER_MAX_WAITERS are waiting; see Retry-After", "too_many_waiting"
                ),
                "404": _error("not tracked", "message_not_found", "not_found"),
                "409": _error(
                    "several providers use this id; add ?provider=", "ambiguous_message_id"
                ),
                **_GUARDED,
            },
        },
        ("GET", "/v1/messages/{message_id}/events"): {
            "summary": "One message with its whole event history",
            "tags": ["messages"],
            "security": _API_SECURITY,
            "parameters": [_MESSAGE_ID, _provider_param(providers)],
            "responses": {
                "200": _json(_ref("MessageEvents"), "the message and its events, oldest first"),
                "400": _BAD_QUERY,
                "404": _error("not tracked", "message_not_found", "not_found"),
                "409": _error(
                    "several providers use this id; add ?provider=", "ambiguous_message_id"
                ),
                **_GUARDED,
            },
        },
        ("GET", "/v1/stream"): {
            "summary": "Applied changes as Server-Sent Events, resumable with Last-Event-ID",
            "description": "Events `message.status_changed` and `message.deadline_missed`, "
            "`id:` the change's increasing id, `data:` the push payload's data; a comment "
            "every RECEIVER_STREAM_PING; `event: reset` when Last-Event-ID is older than what "
            "retention kept. See docs/realtime.md.",
            "tags": ["messages"],
            "security": _API_SECURITY,
            "parameters": [
                _provider_param(providers),
                _query("message_id", {"type": "string", "minLength": 1}, "one message only"),
                {
                    "name": "Last-Event-ID",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string"},
                    "description": "resume after this change id",
                },
            ],
            "responses": {
                "200": {
                    "description": "the stream, until the client or the service ends it",
                    "content": {"text/event-stream": {"schema": {"type": "string"}}},
                },
                "400": _error(
                    "bad query or Last-Event-ID",
                    "invalid_parameter",
                    "unknown_parameter",
                    "invalid_last_event_id",
                ),
                "429": _error("RECEIVER_MAX_STREAMS are open; see Retry-After", "too_many_waiting"),
                **_GUARDED,
            },
        },
        ("GET", "/v1/stats"): {
            "summary": "Counts per status, delivery rate, time to a final status",
            "tags": ["messages"],
            "security": _API_SECURITY,
            "parameters": [_SINCE, _UNTIL, _provider_param(providers)],
            "responses": {"200": _json(_ref("Stats"), "statistics"), "400": _BAD_QUERY, **_GUARDED},
        },
        ("GET", "/v1/sends/{uuid}"): {
            "summary": "A me-sms send's recipients per status and its sweeps",
            "tags": ["messages"],
            "security": _API_SECURITY,
            "parameters": [
                {
                    "name": "uuid",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "pattern": "^[0-9A-Fa-f-]{8,64}$"},
                    "description": "the send's uuid, as me-sms answered /send",
                }
            ],
            "responses": {
                "200": _json(_ref("Send"), "the send"),
                "400": _error(
                    "not a send's uuid, or a query parameter",
                    "invalid_parameter",
                    "unknown_parameter",
                ),
                "404": _error(
                    "neither the send nor any recipient of it is known", "send_not_found"
                ),
                **_GUARDED,
            },
        },
        ("GET", "/v1/messages/export"): {
            "summary": "The filtered list as a CSV download (UTF-8 with BOM), newest first",
            "tags": ["messages"],
            "security": _API_SECURITY,
            "parameters": [
                *filters,
            ],
            "responses": {
                "200": {
                    "description": "CSV; at most X-Export-Limit rows",
                    "headers": {
                        **_REQUEST_ID,
                        "X-Export-Limit": {
                            "description": "RECEIVER_EXPORT_MAX_ROWS: the row cap",
                            "schema": {"type": "integer"},
                        },
                    },
                    "content": {"text/csv": {"schema": {"type": "string"}}},
                },
                "400": _BAD_QUERY,
                **_GUARDED,
            },
        },
        ("GET", "/v1/callback-url"): {
            "summary": "The callback URL to paste into a provider's console",
            "description": "Signed with RECEIVER_SECRET_KEY for 23 Telecom and me-sms.",
            "tags": ["webhooks"],
            "security": _API_SECURITY,
            "parameters": [
                {**_query("provider", {"enum": webhooks}, "the provider"), "required": True},
                _query("label", {"type": "string"}, "signed URLs: a label kept as the account"),
                _query("source", {"type": "string"}, "Standard Webhooks: the source's name"),
            ],
            "responses": {
                "200": _json(_ref("CallbackUrl"), "the URL"),
                "400": _BAD_QUERY,
                "409": _error(
                    "RECEIVER_SECRET_KEY is not set, or the source has no secret",
                    "secret_key_unset",
                    "provider_not_configured",
                ),
                **_GUARDED,
            },
        },
        **{("POST", callback_path(name)): _callback_operation(name) for name in webhooks},
        **_push_operations(),
    }


_PATH_PARAMS = {
    "token": "the signed token GET /v1/callback-url issued",
    "source": "the Standard Webhooks source, as named in STANDARD_WEBHOOK_SECRETS",
}


def _callback_operation(provider: str) -> Schema:
    """A provider's status callback: signed by the provider, acknowledged once committed."""
    path = callback_path(provider)
    parameters = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": {"type": "string", "minLength": 1, "pattern": "^[^/]+$"},
            "description": description,
        }
        for name, description in _PATH_PARAMS.items()
        if "{" + name + "}" in path
    ]
    return {
        "summary": f"Status callback (DLR) from {provider}",
        "description": "Authenticated by the provider's signature or signed URL (see README), "
        "not a token.",
        "tags": ["webhooks"],
        "security": [],
        **({"parameters": parameters} if parameters else {}),
        "requestBody": {
            "required": True,
            "content": {
                "application/x-www-form-urlencoded": {"schema": {"type": "object"}},
                "application/json": {"schema": {"type": "object"}},
            },
        },
        "responses": {
            "204": {"description": "recorded and committed", "headers": _REQUEST_ID},
            "400": _error(
                "authentic, but not a status callback",
                "missing_field",
                "invalid_field",
                "invalid_body",
                "too_many_records",
            ),
            "403": _error(
                "not authentic",
                "signature_missing",
                "signature_invalid",
                "provider_not_configured",
                "token_invalid",
                "token_wrong_provider",
                "ip_not_allowed",
                "timestamp_invalid",
                "timestamp_out_of_tolerance",
            ),
            "413": _error("body over RECEIVER_MAX_BODY", "body_too_large"),
            "503": _error("not committed; the provider retries", "store_unavailable"),
        },
    }


def build_spec(providers: Iterable[str] | None = None, public_url: str | None = None) -> Schema:
    """The whole document. `providers`: the names messages are stored under (Standard
    Webhooks sources included), by default the registry's."""
    names = sorted(REGISTRY if providers is None else providers)
    paths: dict[str, Schema] = {}
    for (method, path), operation in _operations(names, list(REGISTRY)).items():
        paths.setdefault(path, {})[method.lower()] = operation
    schemas = {**SCHEMAS, "Registration": _registration(names)}
    spec: Schema = {
        "openapi": "3.1.0",
        "info": {
            "title": "receiver",
            "version": __version__,
            "description": "Delivery tracking for SMS status callbacks. README.md is the manual.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "apiToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "RECEIVER_API_TOKEN",
                },
                "metricsToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "RECEIVER_METRICS_TOKEN",
                },
            },
        },
    }
    if public_url:
        spec["servers"] = [{"url": public_url}]
    # The building blocks above are shared between operations; the caller gets its own tree.
    return copy.deepcopy(spec)


def _registration(providers: list[str]) -> Schema:
    """The declared Registration with what only the running service knows: its providers, and
    that Twilio's account is an account SID (receiver/api/registration.py checks both)."""
    schema = dict(SCHEMAS["Registration"])
    provider = {**schema["properties"]["provider"], "enum": providers}
    schema["properties"] = {**schema["properties"], "provider": provider}
    schema["if"] = {"properties": {"provider": {"const": "twilio"}}, "required": ["provider"]}
    schema["then"] = {
        "properties": {"account": {"type": ["string", "null"], "pattern": _TWILIO_SID}}
    }
    return schema


def endpoint(spec: Schema) -> Callable[[Request], Awaitable[Response]]:
    """GET /openapi.json: the document, encoded once."""
    body = json.dumps(spec, separators=(",", ":")).encode()

    async def openapi_json(request: Request) -> Response:
        return Response(body, media_type="application/json")

    return openapi_json


# -- the push outbox (receiver/push/, receiver/api/pushes.py) ----------------------------------

_PUSH_ID = {
    "name": "push_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "minLength": 1, "pattern": "^[^/]+$"},
    "description": "the push's id: the webhook-id it is sent with",
}
_PUSH_STATUSES = list(get_args(PushStatus))
PUSH_SCHEMAS: dict[str, Schema] = openapi_schemas(PushPage, PushDetail, Recovered)
SCHEMAS.update(PUSH_SCHEMAS)
SCHEMAS["Ready"]["properties"]["pushes"] = {
    "description": "present when RECEIVER_PUSH_URL is set: each endpoint (without its query) "
    "`enabled`, or `disabled` by a 410 until a push to it is retried or recovered. Never a "
    "reason to be unready.",
    "type": "object",
    "additionalProperties": {
        "type": "object",
        "properties": {
            "state": {"enum": ["enabled", "disabled"]},
            "detail": _nullable("string"),
        },
        "required": ["state", "detail"],
        "additionalProperties": False,
    },
}


def _push_operations() -> dict[tuple[str, str], Schema]:
    not_found = _error("no such push", "push_not_found")
    return {
        ("GET", "/v1/pushes"): {
            "summary": "List pushes to the app, newest first",
            "tags": ["pushes"],
            "security": _API_SECURITY,
            "parameters": [
                _query("status", {"enum": _PUSH_STATUSES}, "the push's status"),
                _query("since", {"type": "string"}, "ISO 8601 time or date, on created_at"),
                *_PAGE,
            ],
            "responses": {
                "200": _json(_ref("PushPage"), "one page"),
                "400": _BAD_PAGE_QUERY,
                **_GUARDED,
            },
        },
        ("GET", "/v1/pushes/{push_id}"): {
            "summary": "One push with every attempt at it",
            "tags": ["pushes"],
            "security": _API_SECURITY,
            "parameters": [_PUSH_ID],
            "responses": {
                "200": _json(_ref("PushDetail"), "the push"),
                "400": _BAD_QUERY,
                "404": not_found,
                **_GUARDED,
            },
        },
        ("POST", "/v1/pushes/{push_id}/retry"): {
            "summary": "Send a delivered or failed push again, with its webhook-id",
            "description": "Enables its endpoint again if a 410 disabled it.",
            "tags": ["pushes"],
            "security": _API_SECURITY,
            "parameters": [_PUSH_ID],
            "responses": {
                "202": _json(_ref("PushDetail"), "queued again"),
                "400": _BAD_QUERY,
                "404": not_found,
                "409": _error("still being sent", "push_pending"),
                **_GUARDED,
            },
        },
        ("POST", "/v1/pushes/recover"): {
            "summary": "Send again every push that failed since a time, in order",
            "description": "Enables their endpoints again if a 410 disabled them.",
            "tags": ["pushes"],
            "security": _API_SECURITY,
            "parameters": [
                {
                    **_query("since", {"type": "string"}, "ISO 8601 time or date, on created_at"),
                    "required": True,
                }
            ],
            "responses": {
                "202": _json(_ref("Recovered"), "how many were queued again"),
                "400": _BAD_QUERY,
                **_GUARDED,
            },
        },
    }
