"""Retention: final messages older than RECEIVER_RETENTION_DAYS are deleted with their events,
in small batches, by a background task of the service and by `receiver prune`."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import structlog

from receiver.store import Store
from receiver.store.base import Pruned, format_time

log = structlog.get_logger("receiver.retention")

# Once at start, then hourly: pruning is cheap when there is little to do, and an hour's
# worth of expired messages is a few batches.
PRUNE_INTERVAL_SECONDS = 3600.0
# Messages per write transaction: small enough that callbacks wait milliseconds, not seconds.
BATCH_SIZE = 500
# The service's background prune takes at most this share of the writer's time: after each
# batch of deletes it pauses nine times as long as the batch took (and its batches shrink
# toward 10 ms each), so a backlog of millions (after an import, or a lowered
# RECEIVER_RETENTION_DAYS) drains while callbacks keep nearly their full rate. `receiver
# prune` runs alone and deletes at full speed.
SERVICE_SHARE = 0.1


def cutoff(days: int, now: datetime | None = None) -> str:
    """The stored time before which a final message is old enough to prune."""
    return format_time((now or datetime.now(UTC)) - timedelta(days=days))


async def prune_once(store: Store, days: int, share: float = 1.0) -> Pruned:
    before = cutoff(days)
    result = await store.prune(before, batch_size=BATCH_SIZE, share=share)
    if result.messages:
        log.info(
            "pruned",
            messages=result.messages,
            events=result.events,
            batches=result.batches,
            final_before=before,
        )
    return result


async def prune_periodically(
    store: Store, days: int, interval: float = PRUNE_INTERVAL_SECONDS
) -> None:
    """Prune now and then every `interval` seconds, until cancelled."""
    while True:
        try:
            await prune_once(store, days, SERVICE_SHARE)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a failed run is retried next time; the task must live on
            log.error("prune_failed", error=str(exc), exc_info=exc)
        await asyncio.sleep(interval)
