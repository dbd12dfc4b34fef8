"""The scheduler as the service and the CLI build it, from the settings."""

from __future__ import annotations

from collections.abc import Sequence

from receiver.polling import build_clients, check_polling_settings, poll_limits_by_provider
from receiver.polling.scheduler import RequestCounter, Scheduler
from receiver.settings import Settings
from receiver.store import Store

__all__ = ["build_scheduler", "check_polling_settings"]  # the check: importable from here too


def build_scheduler(
    settings: Settings,
    store: Store,
    message_providers: Sequence[str],
    *,
    count_request: RequestCounter | None = None,
    owner: str | None = None,
) -> Scheduler:
    """A scheduler for every provider messages are stored under: those with a configured
    status client are polled; the others (Standard Webhooks sources, say) only time out."""
    return Scheduler(
        settings,
        store,
        build_clients(settings),
        message_providers,
        limits=poll_limits_by_provider(settings),
        count_request=count_request,
        owner=owner,
    )
