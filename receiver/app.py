"""The application factory: routes, middleware and the lifespan that owns the store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

import structlog
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route

from receiver import __version__, retention
from receiver.api import callback_urls, health, messages, webhooks
from receiver.api.errors import EXCEPTION_HANDLERS
from receiver.api.origin import is_loopback as _is_loopback
from receiver.logging import RequestContextMiddleware
from receiver.providers import REGISTRY, build_providers, callback_path, message_providers
from receiver.providers.base import Provider
from receiver.providers.callback_auth import CallbackTokens
from receiver.settings import Settings
from receiver.store import Store, open_store

log = structlog.get_logger("receiver")


def create_app(settings: Settings | None = None, store: Store | None = None) -> Starlette:
    """A new, isolated app. The store is opened (and migrated) at startup, closed at shutdown."""
    settings = settings or Settings.from_env()
    providers = build_providers(settings)
    tokens = CallbackTokens(settings.secret_keys())

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        the_store = store or open_store(settings)
        applied = await the_store.open()
        _log_startup(settings, applied, providers, tokens)
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
            }
        finally:
            if pruning is not None:
                pruning.cancel()
                with suppress(asyncio.CancelledError):
                    await pruning
            await the_store.close()
            log.info("stopped")

    routes = [
        Route("/healthz", health.healthz, methods=["GET"]),
        Route("/readyz", health.readyz, methods=["GET"]),
        Route("/v1/messages", messages.list_messages, methods=["GET"]),
        Route("/v1/messages", messages.register_messages, methods=["POST"]),
        # Before /v1/messages/{message_id}, which would otherwise take "export" for an id.
        Route("/v1/messages/export", messages.export_messages, methods=["GET"]),
        Route("/v1/messages/{message_id}", messages.get_message, methods=["GET"]),
        Route("/v1/messages/{message_id}/events", messages.get_message_events, methods=["GET"]),
        Route("/v1/stats", messages.stats, methods=["GET"]),
        Route("/v1/callback-url", callback_urls.get_callback_url, methods=["GET"]),
    ]
    routes += [
        Route(callback_path(name), webhooks.endpoint(name), methods=["POST"]) for name in REGISTRY
    ]
    return Starlette(
        routes=routes,
        middleware=[Middleware(RequestContextMiddleware)],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )


def _log_startup(
    settings: Settings,
    migrations: list[str],
    providers: dict[str, Provider],
    tokens: CallbackTokens,
) -> None:
    base = callback_urls.base_url(None, settings)
    urls: dict[str, str] = {}
    for name, cls in REGISTRY.items():
        if cls.signed_url and not tokens.configured:
            continue
        if "{source}" in cls.callback_path:  # one URL per configured source
            for source in providers[name].message_providers:
                urls[f"{name}/{source}"] = callback_urls.callback_url(
                    base, name, tokens, source=source
                )[0]
        else:
            urls[name] = callback_urls.callback_url(base, name, tokens)[0]
    log.info(
        "started",
        version=__version__,
        database=settings.database,
        **({"migrations_applied": migrations} if migrations else {}),
        public_url=settings.public_url,
        callback_urls=urls,
        providers_configured=sorted(n for n, p in providers.items() if p.configured),
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
    for name, provider in providers.items():
        if not provider.configured:
            log.warning(
                "provider_not_configured",
                provider=name,
                detail=_NOT_CONFIGURED.get(name, "its callbacks will get 403"),
            )


_NOT_CONFIGURED = {
    "twilio": "TWILIO_AUTH_TOKEN/TWILIO_ACCOUNTS unset: Twilio callbacks will get 403",
    "telecom23": "RECEIVER_SECRET_KEY unset: no signed callback URL, 23 Telecom callbacks get 403",
    "mesms": "RECEIVER_SECRET_KEY unset: no signed callback URL, me-sms reports get 403",
    "standard": "STANDARD_WEBHOOK_SECRETS unset: Standard Webhooks callbacks get 403",
}
