"""The application factory: routes, middleware and the lifespan that owns the store."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager, suppress
from typing import Any

import structlog
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from receiver import dashboard, retention
from receiver.api import callback_urls, health, messages, openapi, pushes, stream, webhooks
from receiver.api.errors import EXCEPTION_HANDLERS
from receiver.api.metrics import metrics as metrics_endpoint
from receiver.api.origin import is_loopback as _is_loopback
from receiver.logging import RequestContextMiddleware
from receiver.metrics import Metrics
from receiver.polling.scheduler import Scheduler
from receiver.polling.service import build_scheduler
from receiver.providers import REGISTRY, build_providers, message_providers
from receiver.providers.base import Provider
from receiver.providers.callback_auth import CallbackTokens
from receiver.push.dispatcher import Dispatcher
from receiver.push.metrics import PushMetrics
from receiver.realtime.deadlines import DeadlineKeeper
from receiver.realtime.hub import Hub
from receiver.settings import Settings
from receiver.store import Store, open_store
from receiver.version import __version__

log = structlog.get_logger("receiver")


def create_app(settings: Settings | None = None, store: Store | None = None) -> Starlette:
    """A new, isolated app. The store is opened (and migrated) at startup, closed at shutdown."""
    settings = settings or Settings.from_env()
    providers = build_providers(settings)
    metrics = Metrics(providers)
    tokens = CallbackTokens(settings.secret_keys())
    # Waiting requests and streams (receiver/realtime/); the app's, so `receiver serve` can
    # end them when it starts to stop (app.state.hub.close()), before its grace period is out.
    hub = Hub(max_waiters=settings.max_waiters, max_streams=settings.max_streams)
    metrics.watch_waiting(lambda: hub.waiters, lambda: hub.streams)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        the_store = store or open_store(settings)
        applied = await the_store.open(on_commit=metrics.batch_committed)
        the_store.changed = hub.changed
        hub.closed = False  # a test app may be started again
        listening = asyncio.create_task(
            the_store.listen(hub.changed, hub.changed_any), name="receiver-listen"
        )
        deadlines = DeadlineKeeper(the_store)
        deadlines.start()
        poller = (
            build_scheduler(
                settings,
                the_store,
                message_providers(providers),
                count_request=metrics.poll_request,
            )
            if settings.polling
            else None
        )
        _log_startup(settings, the_store, providers, tokens, applied, poller)
        if poller is not None:
            metrics.start_poll_series(poller.polled_providers())
            await poller.start()
        dispatcher = await _start_pushes(settings, the_store, metrics)
        pruning = (
            asyncio.create_task(
                retention.prune_periodically(the_store, settings.retention_days),
                name="receiver-retention",
            )
            if settings.retention_days
            else None
        )
        try:
            yield {
                "settings": settings,
                "store": the_store,
                "providers": providers,
                "provider_names": message_providers(providers),
                "callback_tokens": tokens,
                "metrics": metrics,
                "poller": poller,
                "pusher": dispatcher,
                "hub": hub,
                "deadlines": deadlines,
            }
        finally:
            hub.close()  # every waiter answers, every stream ends
            await deadlines.stop()
            listening.cancel()
            with suppress(asyncio.CancelledError):
                await listening
            if poller is not None:
                await poller.stop()
            if dispatcher is not None:
                await dispatcher.stop()
            if pruning is not None:
                pruning.cancel()
                with suppress(asyncio.CancelledError):
                    await pruning
            await the_store.close()
            log.info("stopped")

    # Starlette tries routes in order: the app's reads of one message first (the callbacks at
    # fixed paths, nearly all the traffic, never reach the router: webhooks.CallbackDispatch).
    # Before /v1/messages/{message_id}, which would otherwise take "export" for an id.
    # Ids may hold "/" (a Standard Webhooks sender's, or one registered so): the path
    # convertor takes them whole; /events first, so it is not read as part of an id.
    routes: list[BaseRoute] = [
        Route("/v1/messages/export", messages.export_messages, methods=["GET"]),
        Route(
            "/v1/messages/{message_id:path}/events", messages.get_message_events, methods=["GET"]
        ),
        Route("/v1/messages/{message_id:path}", messages.get_message, methods=["GET"]),
    ]
    routes += [webhooks.route(name) for name in REGISTRY]
    routes += [
        Route("/healthz", health.healthz, methods=["GET"]),
        Route("/readyz", health.readyz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        Route(
            "/openapi.json",
            openapi.endpoint(openapi.build_spec(message_providers(providers), settings.public_url)),
            methods=["GET"],
        ),
        _route("/v1/messages", GET=messages.list_messages, POST=messages.register_messages),
        Route("/v1/stats", messages.stats, methods=["GET"]),
        Route("/v1/stream", stream.stream, methods=["GET"]),
        Route("/v1/sends/{uuid}", messages.get_send, methods=["GET"]),
        Route("/v1/callback-url", callback_urls.get_callback_url, methods=["GET"]),
        *pushes.routes(),
    ]
    routes += dashboard.routes(settings)  # none when RECEIVER_DASHBOARD=off
    app = Starlette(
        routes=routes,
        middleware=[Middleware(RequestContextMiddleware), Middleware(webhooks.CallbackDispatch)],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
    app.state.hub = hub
    return app


Endpoint = Callable[[Request], Awaitable[Response]]


async def _start_pushes(settings: Settings, store: Store, metrics: Metrics) -> Dispatcher | None:
    """With RECEIVER_PUSH_URL set: the store owes pushes and wakes the dispatcher on commit."""
    if not settings.push_url:
        return None
    push_metrics = PushMetrics(metrics.registry, settings.push_url)
    dispatcher = Dispatcher(store, settings, count_attempt=push_metrics.attempt)
    dispatcher.metrics = push_metrics
    store.configure_push(settings.push_url, settings.push_events, dispatcher.wake)  # type: ignore[attr-defined]
    await dispatcher.start()
    return dispatcher


def _route(path: str, **by_method: Endpoint) -> Route:
    """One route for a path served by several handlers, so a 405's Allow names every method."""

    async def dispatch(request: Request) -> Response:
        # HEAD is served by GET, as Starlette does for a single handler.
        method = "GET" if request.method == "HEAD" else request.method
        return await by_method[method](request)

    return Route(path, dispatch, methods=list(by_method))


def _log_startup(
    settings: Settings,
    store: Store,
    providers: Mapping[str, Provider],
    tokens: CallbackTokens,
    migrations: list[str],
    poller: Scheduler | None,
) -> None:
    """One summary line with what an operator checks first, then a warning per real risk."""
    configured = [name for name, p in providers.items() if p.configured]
    log.info(
        "started",
        version=__version__,
        store=store.kind,
        database=(
            settings.database_label if settings.database_url else os.path.abspath(settings.database)
        ),
        **({"migrations_applied": migrations} if migrations else {}),
        providers_configured=configured,
        providers_not_configured=[name for name in providers if name not in configured],
        public_url=settings.public_url,
        **(
            {}
            if settings.public_url
            else {"note": "callback URLs use the bind address; set RECEIVER_PUBLIC_URL"}
        ),
        # Which providers are asked about late DLRs (the others' late messages time out).
        polling=(poller.polled_providers() if poller is not None else "off"),
        # The URLs to paste into each provider's console.
        callback_urls=_callback_urls(settings, providers, tokens),
    )
    if settings.api_token is None:
        log.warning(
            "api_token_unset",
            detail="RECEIVER_API_TOKEN is not set: the query API answers loopback clients only",
        )
        if settings.public_url or settings.trust_forwarded or not _is_loopback(settings.host):
            # Reachable from elsewhere, or behind a proxy: loopback-only is a thin guard there.
            log.warning(
                "api_exposed_without_token",
                detail="the service is reachable beyond this host; set RECEIVER_API_TOKEN",
            )
    if not configured:
        # One provider configured is the usual case; none means every callback gets 403.
        log.warning(
            "no_provider_configured",
            detail="no provider has credentials set: every callback will get 403",
        )


def _callback_urls(
    settings: Settings, providers: Mapping[str, Provider], tokens: CallbackTokens
) -> dict[str, str]:
    """Each configured provider's callback URL; one per source for Standard Webhooks."""
    base = callback_urls.base_url(None, settings)
    urls: dict[str, str] = {}
    for name, cls in REGISTRY.items():
        if cls.signed_url:
            # The URL is a credential: logged, it would travel with the logs. Point at where
            # it is handed out instead.
            if tokens.configured:
                urls[name] = f"GET /v1/callback-url?provider={name} (a secret URL, not logged)"
            continue
        if "{source}" in cls.callback_path:
            for source in providers[name].message_providers:
                urls[f"{name}/{source}"] = callback_urls.callback_url(
                    base, name, tokens, source=source
                )[0]
        else:
            urls[name] = callback_urls.callback_url(base, name, tokens)[0]
    return urls
