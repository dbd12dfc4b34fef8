"""Durable state. The only package that speaks SQL; see base.Store for the interface."""

from __future__ import annotations

from receiver.settings import Settings
from receiver.store.base import (
    MessageFilter,
    Recorded,
    Registered,
    Registration,
    Store,
    StoreUnavailable,
)

__all__ = [
    "MessageFilter",
    "Recorded",
    "Registered",
    "Registration",
    "Store",
    "StoreUnavailable",
    "open_store",
]


def open_store(settings: Settings) -> Store:
    """The store the settings name, not yet opened: PostgreSQL when DATABASE_URL is set (the
    settings accept only a postgres:// or postgresql:// URL), else the SQLite file
    RECEIVER_DATABASE."""
    if settings.database_url is not None:
        from receiver.store.postgres import PostgresStore

        return PostgresStore(
            settings.database_url,
            unknown_messages=settings.unknown_messages,
            pool_size=settings.pg_pool_size,
            dlr_grace=settings.dlr_grace,
            dlr_grace_by_provider=dlr_grace_by_provider(settings),
        )
    from receiver.store.sqlite import SQLiteStore

    return SQLiteStore(
        settings.database,
        unknown_messages=settings.unknown_messages,
        busy_timeout_ms=settings.db_busy_timeout_ms,
        dlr_grace=settings.dlr_grace,
        dlr_grace_by_provider=dlr_grace_by_provider(settings),
    )


def dlr_grace_by_provider(settings: Settings) -> dict[str, float]:
    """Each pollable provider's own grace (<PROVIDER>_DLR_GRACE), else the service's."""
    from receiver.polling.base import poll_limits_by_provider

    return {name: limits.grace for name, limits in poll_limits_by_provider(settings).items()}
