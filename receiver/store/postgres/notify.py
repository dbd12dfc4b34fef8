"""Commits on every instance, as they happen: LISTEN on the channel the change log's trigger
notifies (migration 0008, in the transaction of the change, so only at its commit).

One connection per instance; lost, it is opened again and everyone is woken (a change may
have been missed meanwhile: waiters read again, streams read the log from their last id).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import psycopg
import structlog

from receiver.store.postgres.connection import conninfo, unescape

log = structlog.get_logger("receiver.store")

CHANNEL = "receiver_changes"
RECONNECT_AFTER = 1.0


def parse(payload: str) -> tuple[str, str] | None:
    """The (provider, message_id) of a notification, None when it names only the change."""
    parts = payload.split("\t", 2)
    return (unescape(parts[1]), unescape(parts[2])) if len(parts) == 3 else None


async def listen(
    url: str,
    changed: Callable[[list[tuple[str, str]]], None],
    changed_any: Callable[[], None],
    *,
    ready: asyncio.Event | None = None,
) -> None:
    """Call `changed` for every change any instance commits, until cancelled."""
    while True:
        try:
            conn: psycopg.AsyncConnection[Any] = await psycopg.AsyncConnection.connect(
                conninfo(url), autocommit=True, application_name="receiver-listen"
            )
            async with conn:
                await conn.execute(f"LISTEN {CHANNEL}")
                changed_any()  # what committed while not listening
                if ready is not None:
                    ready.set()
                async for note in conn.notifies():
                    key = parse(note.payload)
                    if key is None:
                        changed_any()
                    else:
                        changed([key])
        except psycopg.Error as exc:
            log.warning("listen_lost", error=str(exc))
            await asyncio.sleep(RECONNECT_AFTER)
