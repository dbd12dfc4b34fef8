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
    """The store the settings name (today: the SQLite file RECEIVER_DATABASE), not yet opened."""
    from receiver.store.sqlite import SQLiteStore

    return SQLiteStore(
        settings.database,
        unknown_messages=settings.unknown_messages,
        busy_timeout_ms=settings.db_busy_timeout_ms,
    )
