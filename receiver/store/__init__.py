"""Durable state. The only package that speaks SQL; see base.Store for the interface."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

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
    "StoreSettings",
    "StoreUnavailable",
    "open_store",
]


class StoreSettings(Protocol):
    """What open_store reads of the service's settings (receiver.settings' Settings gives it:
    the store sits below the settings that compose it)."""

    @property
    def database(self) -> str: ...
    @property
    def database_url(self) -> str | None: ...
    @property
    def unknown_messages(self) -> str: ...
    @property
    def db_busy_timeout_ms(self) -> int: ...
    @property
    def pg_pool_size(self) -> int: ...
    @property
    def dlr_grace(self) -> float: ...

    def dlr_grace_by_provider(self) -> Mapping[str, float]:
        """Each pollable provider's own grace (<PROVIDER>_DLR_GRACE), else the service's."""
        ...


def open_store(settings: StoreSettings) -> Store:
    """The store the settings name, not yet opened: PostgreSQL when DATABASE_URL is set (the
    settings accept only a postgres:// or postgresql:// URL), else the SQLite file
    RECEIVER_DATABASE. Each is imported when chosen: the PostgreSQL store loads psycopg."""
    if settings.database_url is not None:
        from receiver.store.postgres import PostgresStore

        return PostgresStore(
            settings.database_url,
            unknown_messages=settings.unknown_messages,
            pool_size=settings.pg_pool_size,
            dlr_grace=settings.dlr_grace,
            dlr_grace_by_provider=dict(settings.dlr_grace_by_provider()),
        )
    from receiver.store.sqlite import SQLiteStore

    return SQLiteStore(
        settings.database,
        unknown_messages=settings.unknown_messages,
        busy_timeout_ms=settings.db_busy_timeout_ms,
        dlr_grace=settings.dlr_grace,
        dlr_grace_by_provider=dict(settings.dlr_grace_by_provider()),
    )
