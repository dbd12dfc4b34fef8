"""Provider callbacks: authenticate, record durably, then acknowledge.

A 2xx is sent only after the event and its status change are committed; a write that fails
answers 503 so the provider retries. One log line per event tells what happened. Each route also
answers with a trailing '/' (a URL pasted into a console with one added).
"""

from __future__ import annotations

import time

import structlog
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from receiver.api.body import read_body
from receiver.api.errors import error_response, store_unavailable
from receiver.api.origin import client_ip, external_url
from receiver.engine import Outcome
from receiver.metrics import Metrics
from receiver.providers import REGISTRY, callback_path
from receiver.providers.base import CallbackRejected, InboundRequest, Provider
from receiver.providers.callback_auth import redact_token
from receiver.settings import Settings
from receiver.store import Store, StoreUnavailable

log = structlog.get_logger("receiver.webhook")


async def receive_callback(scope: Scope, receive: Receive, provider_name: str) -> Response | None:
    """The error response, or None once every event is committed (then the answer is 204)."""
    started = time.perf_counter()
    # The lifespan's state, read from the scope: no Request and State objects per callback.
    state = scope["state"]
    settings: Settings = state["settings"]
    provider: Provider = state["providers"][provider_name]
    store: Store = state["store"]
    metrics: Metrics = state["metrics"]
    structlog.contextvars.bind_contextvars(provider=provider_name)
    headers = _headers(scope)
    path_params: dict[str, str] = scope.get("path_params", {})
    url = external_url(scope, headers, settings)
    client_host = client_ip(scope, settings)
    try:
        body = await read_body(receive, headers.get("content-length", ""), settings.max_body)
        if body is None:
            raise CallbackRejected(
                413, "body_too_large", f"the body is larger than {settings.max_body} bytes"
            )
        inbound = InboundRequest(scope["method"], url, headers, body, client_host, path_params)
        events = provider.read_callback(inbound)
    except CallbackRejected as exc:
        metrics.rejected(provider_name, exc.status, exc.error_code)
        log.warning(
            "callback_rejected",
            status=exc.status,
            error_code=exc.error_code,
            reason=exc.message,
            url=redact_token(url, path_params.get("token")),
            client=client_host,
        )
        return error_response(exc.status, exc.error_code, exc.message)
    # StoreUnavailable propagates to the app's handler: 503 with Retry-After, so the provider
    # retries what was not committed.
    recorded = await store.record(events)
    latency_ms = round((time.perf_counter() - started) * 1000, 2)
    for item in recorded:
        metrics.callback(provider_name, item.outcome)
        event = item.event
        fields = dict(
            message_id=event.message_id,
            provider_status=event.provider_status,
            old_status=item.previous_status,
            new_status=item.status,
            outcome=item.outcome.value,
            created=item.created,
            latency_ms=latency_ms,
        )
        # Always one "callback" line per event; a status we cannot map is a warning, since
        # its mapping table needs a new row.
        if item.outcome is Outcome.UNMAPPED:
            log.warning("callback", **fields)
        else:
            log.info("callback", **fields)
    return None


def _headers(scope: Scope) -> dict[str, str]:
    """The request's headers by lower-case name, the first of each (as Headers.get answers):
    an adapter asks for several, and each Headers.get scans and decodes the whole list.

    ASGI servers give the names in lower case, as Starlette's Headers counts on too. Read
    from the last, so the first of a repeated name is the one left.
    """
    return {
        name.decode("latin-1"): value.decode("latin-1")
        for name, value in reversed(scope["headers"])
    }


class Endpoint:
    """A provider's callback endpoint as a plain ASGI app, bound to its adapter.

    Starlette wraps a request-response function in a second layer of exception handling and
    a Request and a Response object per request; on the route that takes nearly all the
    traffic this reads the scope and answers directly. It answers StoreUnavailable with the
    app's handler itself, as it may be reached past ExceptionMiddleware (CallbackDispatch);
    any other error reaches ServerErrorMiddleware's 500.
    """

    def __init__(self, provider_name: str) -> None:
        self.provider_name = provider_name
        self.__name__ = f"{provider_name}_callback"  # the route's name, as for a function

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            response = await receive_callback(scope, receive, self.provider_name)
        except StoreUnavailable as exc:
            response = await store_unavailable(Request(scope), exc)
        if response is None:
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        else:
            await response(scope, receive, send)


class CallbackDispatch:
    """Middleware sending a POST to a provider's fixed callback path straight to its endpoint.

    Nearly all the traffic is callbacks; the router finds them too, but through the exception
    middleware's layer and a regex per route first. Anything else, and the callback paths
    that hold parameters (a token, a source), goes on to the app.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.endpoints: dict[str, Endpoint] = {}
        for name in REGISTRY:
            path = callback_path(name)
            if "{" not in path:
                # With or without one trailing '/', as CallbackRoute matches it.
                self.endpoints[path] = self.endpoints[path + "/"] = endpoint(name)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = None
        if scope["type"] == "http" and scope["method"] == "POST":
            found = self.endpoints.get(scope["path"])
        if found is None:
            await self.app(scope, receive, send)
        else:
            await found(scope, receive, send)


def endpoint(provider_name: str) -> Endpoint:
    """The ASGI endpoint of one provider's callbacks."""
    return Endpoint(provider_name)


class CallbackRoute(Route):
    """A provider's callback route, matched with or without one trailing '/'.

    Starlette would answer the slashed URL with a 307 to the bare one, and providers do not
    follow a redirect for a POST: the callbacks would be lost. The path the request came with
    is left as it is, so a signature over the URL as called (Twilio's) covers the slash.
    """

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child_scope = super().matches(scope)
        path: str = scope.get("path", "")
        if match is Match.NONE and scope["type"] == "http" and path.endswith("/"):
            match, child_scope = super().matches({**scope, "path": path[:-1]})
        return match, child_scope


def route(provider_name: str) -> Route:
    """The POST route of one provider's callbacks."""
    return CallbackRoute(callback_path(provider_name), endpoint(provider_name), methods=["POST"])
