"""The query API the business's app uses: register messages, read status, history, lists, stats."""

from __future__ import annotations

import base64
import binascii
import csv
import dataclasses
import io
import re
from collections.abc import AsyncIterator, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from receiver.api import realtime as realtime_api
from receiver.api.answer import answer, send_answer
from receiver.api.auth import check_api_access, require_api_access
from receiver.api.body import read_limited
from receiver.api.errors import ApiError
from receiver.api.query import parse_time as parse_time  # importable from here too
from receiver.api.query import query
from receiver.api.registration import decode_registrations
from receiver.engine import Status, is_final
from receiver.engine import parse_time as parse_stored_time
from receiver.polling.policy import give_up_from
from receiver.providers.mesms import UUID_PATTERN
from receiver.realtime.waiters import long_poll
from receiver.schemas import MAX_ACCOUNT_LENGTH as MAX_ACCOUNT_LENGTH  # the registration's
from receiver.schemas import MAX_BATCH as MAX_BATCH  # limits, importable from here too
from receiver.schemas import MAX_ID_LENGTH as MAX_ID_LENGTH
from receiver.schemas import MAX_METADATA_BYTES as MAX_METADATA_BYTES
from receiver.schemas import MAX_NUMBER_LENGTH as MAX_NUMBER_LENGTH
from receiver.settings import say_duration
from receiver.store import MessageFilter, Registration, Store, StoreUnavailable
from receiver.store.base import EXPORT_COLUMNS, Registered, format_time, utcnow

log = structlog.get_logger("receiver.api")

MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
MAX_ROW_ID = 2**63 - 1
# A full batch with the largest metadata is about 5 MB.
MAX_REGISTRATION_BODY = 8 * 1024 * 1024


def _store(request: Request) -> Store:
    require_api_access(request)
    store: Store = request.state.store
    return store


def _provider_param(request: Request, params: Mapping[str, str]) -> str | None:
    provider = params.get("provider")
    names: list[str] = request.state.provider_names
    if provider is not None and provider not in names:
        raise ApiError(
            400,
            "invalid_parameter",
            f"unknown provider {provider!r}",
            parameter="provider",
            allowed=names,
        )
    return provider


def _filter(request: Request, params: Mapping[str, str]) -> MessageFilter:
    status = params.get("status")
    if status is not None and status not in Status.__members__.values():
        raise ApiError(
            400,
            "invalid_parameter",
            f"unknown status {status!r}",
            parameter="status",
            allowed=[s.value for s in Status],
        )
    provider = _provider_param(request, params)
    since = parse_time(params["since"], "since") if "since" in params else None
    until = parse_time(params["until"], "until") if "until" in params else None
    if since and until and since >= until:
        raise ApiError(400, "invalid_parameter", "since must be before until", parameter="since")
    return MessageFilter(
        status=status, provider=provider, to_number=params.get("to"), since=since, until=until
    )


def _encode_cursor(before_id: int) -> str:
    return base64.urlsafe_b64encode(f"v1:{before_id}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        version, _, number = raw.partition(":")
        # ASCII digits only (str.isdigit takes "²"), and within SQLite's INTEGER range.
        if version != "v1" or not (number.isascii() and number.isdigit()):
            raise ValueError(raw)
        before_id = int(number)
        if before_id > MAX_ROW_ID:
            raise ValueError(raw)
        return before_id
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ApiError(
            400, "invalid_cursor", "cursor is not one this API returned", parameter="cursor"
        ) from None


async def list_messages(request: Request) -> Response:
    store = _store(request)
    params = query(request, {"status", "provider", "to", "since", "until", "limit", "cursor"})
    f = _filter(request, params)
    raw_limit = params.get("limit", str(DEFAULT_LIMIT))
    if not (raw_limit.isascii() and raw_limit.isdigit()) or not 1 <= int(raw_limit) <= MAX_LIMIT:
        raise ApiError(
            400, "invalid_parameter", f"limit must be 1 to {MAX_LIMIT}", parameter="limit"
        )
    cursor = params.get("cursor")
    f = dataclasses.replace(
        f, limit=int(raw_limit), before_id=_decode_cursor(cursor) if cursor else None
    )
    rows, next_id = await store.list_messages(f)
    return answer(
        {
            "messages": rows,
            "next_cursor": _encode_cursor(next_id) if next_id is not None else None,
        }
    )


# Excel runs a cell starting with one of these as a formula; a plain signed number (a phone
# number like +15558675310) is left as it is.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_SIGNED_NUMBER = re.compile(r"[+-][0-9]+")


def _cell(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if (
        isinstance(value, str)
        and value.startswith(_FORMULA_START)
        and not _SIGNED_NUMBER.fullmatch(value)
    ):
        return "'" + value
    return value


def _csv(rows: Iterable[Iterable[Any]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)  # RFC 4180 quoting, CRLF line ends: what Excel reads
    writer.writerows([_cell(v) for v in row] for row in rows)
    # Unpaired surrogates (from a provider's odd bytes) must not end the download midway.
    return out.getvalue().encode("utf-8", "replace")


async def export_messages(request: Request) -> Response:
    """The filtered list as a CSV download: streamed, chunk by chunk, in constant memory."""
    store = _store(request)
    params = query(request, {"status", "provider", "to", "since", "until"})
    f = _filter(request, params)
    limit: int = request.state.settings.export_max_rows
    chunks = store.export_messages(f, max_rows=limit)
    # The first chunk is read before the answer starts, so a database that is down still
    # gets its JSON 503; a failure later can only cut the download short.
    first = await anext(chunks, None)

    async def body() -> AsyncIterator[bytes]:
        yield "\ufeff".encode() + _csv([EXPORT_COLUMNS])  # the BOM tells Excel it is UTF-8
        if first is None:
            return
        yield _csv(first)
        sent = len(first)
        try:
            async for chunk in chunks:
                yield _csv(chunk)
                sent += len(chunk)
        except StoreUnavailable as exc:
            # The headers are gone: all that can be done is to cut the download short (the
            # client sees an incomplete body, never a complete-looking one) and say why here.
            log.error("export_aborted", rows_sent=sent, error=str(exc))
            raise

    stamp = utcnow().replace("-", "").replace(":", "").split(".")[0]
    return StreamingResponse(
        body(),
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="messages-{stamp}Z.csv"',
            "X-Export-Limit": str(limit),
            "Cache-Control": "no-store",
        },
    )


async def _one_message(request: Request, also: Iterable[str] = ()) -> dict[str, Any]:
    store = _store(request)
    params = query(request, {"provider", *also})
    message_id = request.path_params["message_id"]
    matches = await store.get_messages(message_id, _provider_param(request, params))
    return _only(matches, message_id)


def _only(matches: list[dict[str, Any]], message_id: str) -> dict[str, Any]:
    """The message a lookup by id found: 404 for none, 409 for several (one per provider)."""
    if not matches:
        raise ApiError(404, "message_not_found", f"no message {message_id!r} is tracked")
    if len(matches) > 1:
        raise ApiError(
            409,
            "ambiguous_message_id",
            "several providers use this id; add ?provider=",
            providers=sorted(m["provider"] for m in matches),
        )
    return matches[0]


class GetMessage:
    """GET /v1/messages/{id}, the read that takes most of the API's traffic, as a plain ASGI
    endpoint (as receiver.api.webhooks.Endpoint is): Starlette wraps a function endpoint in a
    second layer of exception handling per request. Errors still reach the app's handlers,
    through ExceptionMiddleware. A call with no query string, as nearly all are, is answered
    from the scope alone, with no Request, QueryParams, State or Response object.
    """

    __name__ = "get_message"  # the route's name, as for a function

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["query_string"]:
            response = await _get_message(Request(scope, receive))
            await response(scope, receive, send)
            return
        state = scope["state"]
        check_api_access(scope, state["settings"])
        message_id = scope["path_params"]["message_id"]
        await send_answer(send, _only(await state["store"].get_messages(message_id), message_id))


get_message = GetMessage()


async def _get_message(request: Request) -> Response:
    """GET /v1/messages/{id} with a query string: ?provider=, or a long poll."""
    if "wait" not in request.query_params and "until" not in request.query_params:
        return answer(await _one_message(request))
    # A long poll (receiver.realtime.waiters): the same answer, once it is worth giving.
    wait, until = realtime_api.wait_params(request)
    return answer(
        await long_poll(
            request.state.hub,
            lambda: _one_message(request, ("wait", "until")),
            wait,
            until,
        )
    )


async def get_message_events(request: Request) -> Response:
    message = await _one_message(request)
    events = await request.state.store.get_events(message["provider"], message["message_id"])
    return answer({"message": message, "events": events})


async def stats(request: Request) -> Response:
    store = _store(request)
    params = query(request, {"since", "until", "provider"})
    return answer(await store.stats(_filter(request, params)))


def _warnings(registered: Registered, sent_at: str | None, max_age: float) -> list[str]:
    """What the app should know about a registration's sent_at: one that is already older
    than the maximum age, for a message not final yet (a final one is never given up)."""
    if sent_at is None or registered.created_at is None or is_final(registered.status):
        return []
    heard = parse_stored_time(registered.created_at)
    sent = parse_stored_time(sent_at)
    start = give_up_from(heard, sent, max_age)
    expiry = format_time(start + timedelta(seconds=max_age))
    age = f"RECEIVER_POLL_MAX_AGE ({say_duration(max_age)})"
    if start == sent:
        if datetime.now(UTC) < start + timedelta(seconds=max_age):
            return []
        # Within the age of when the receiver first heard of it, but past it by now.
        return [
            f"sent_at {sent_at} puts the message past {age} ({expiry}): it is given up as "
            "unconfirmed at its next poll unless that poll finds a final status"
        ]
    if sent > heard:  # a sent time in the future is not believed, and not worth a warning
        return []
    return [
        f"sent_at {sent_at} is more than {age} before the receiver first heard of the "
        f"message ({registered.created_at}): its maximum age counts from then instead, "
        f"so it is polled, and given up as unconfirmed only if not final by {expiry}"
    ]


async def register_messages(request: Request) -> Response:
    """One message (a JSON object) or a batch (`{"messages": [...]}` or a JSON array)."""
    store = _store(request)
    body = await read_limited(request, MAX_REGISTRATION_BODY)
    if body is None:
        raise ApiError(
            413,
            "body_too_large",
            f"at most {MAX_REGISTRATION_BODY} bytes per request",
            limit=MAX_REGISTRATION_BODY,
        )
    providers: list[str] = request.state.provider_names
    registrations, single = decode_registrations(body, providers)
    for i, reg in enumerate(registrations):
        if reg.parts and is_whole_send(reg):
            raise ApiError(
                400,
                "invalid_parts",
                "a me-sms send registered whole by its uuid has no parts",
                index=i,
                field="parts",
            )
    max_age: float = request.state.settings.poll_max_age
    results: list[dict[str, Any]] = []
    for reg, r in zip(registrations, await _register(store, registrations), strict=True):
        if r.conflict is not None:  # a multipart message's parts (receiver.api.parts)
            if single:
                raise ApiError(409, r.conflict[0], r.conflict[1], field="parts")
            results.append(
                {
                    "provider": r.provider,
                    "message_id": r.message_id,
                    "created": False,
                    "error_code": r.conflict[0],
                    "message": r.conflict[1],
                }
            )
            continue
        result: dict[str, Any] = {
            "provider": r.provider,
            "message_id": r.message_id,
            "created": r.created,
            "status": r.status,
            "pending_applied": r.pending_applied,
        }
        # Only when there is something to say, so answers stay as they were otherwise.
        if warnings := _warnings(r, reg.sent_at, max_age):
            result["warnings"] = warnings
        results.append(result)
    if any(r.deadline is not None or r.deadline_after is not None for r in registrations):
        request.state.deadlines.poke()  # committed: the deadline keeper looks again
    if single:
        return answer(results[0], status_code=201 if results[0]["created"] else 200)
    return answer(
        {
            "messages": results,
            "created": sum(1 for r in results if r["created"]),
        }
    )


# -- sends registered whole (me-sms by its uuid alone) ------------------------------------------


def is_whole_send(reg: Registration) -> bool:
    """A me-sms registration by the send's uuid alone (no ":<msisdn>"): the whole send."""
    return (
        reg.provider == "mesms"
        and ":" not in reg.message_id
        and bool(UUID_PATTERN.fullmatch(reg.message_id))
    )


async def _register(store: Store, registrations: list[Registration]) -> list[Registered]:
    """Messages through store.register, sends registered whole through register_sends, the
    answers in the batch's order."""
    sends = [reg for reg in registrations if is_whole_send(reg)]
    if not sends:
        return await store.register(registrations)
    messages = [reg for reg in registrations if not is_whole_send(reg)]
    by_send = iter(await store.register_sends(sends))
    by_message = iter(await store.register(messages) if messages else [])
    return [next(by_send) if is_whole_send(reg) else next(by_message) for reg in registrations]


async def get_send(request: Request) -> Response:
    """A me-sms send's summary: recipients per status, how many are final, and its sweeps."""
    store = _store(request)
    query(request, set())
    uuid = request.path_params["uuid"]
    if not UUID_PATTERN.fullmatch(uuid):
        raise ApiError(
            400, "invalid_parameter", "uuid must be a me-sms send's uuid", parameter="uuid"
        )
    found = await store.send_summary(uuid)
    if found is None:
        raise ApiError(404, "send_not_found", f"no send {uuid!r} is tracked")
    return answer(found)
