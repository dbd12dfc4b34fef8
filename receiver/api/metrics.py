"""GET /metrics: the Prometheus exposition of the app's registry."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prometheus_client.exposition import choose_encoder
from starlette.requests import Request
from starlette.responses import Response

from receiver.api.auth import require_metrics_access
from receiver.engine import parse_time
from receiver.metrics import Metrics
from receiver.store import Store
from receiver.store.base import utcnow


async def set_push_metrics(pusher: Any, store: Any) -> None:
    """The outbox's backlog and its oldest push, read at scrape time like the counts above."""
    stats = await store.push_stats()
    oldest = stats["oldest_created_at"]
    age = (datetime.now(UTC) - parse_time(oldest)).total_seconds() if oldest else 0.0
    pusher.metrics.set_state(stats["backlog"], age, stats["disabled"])


async def metrics(request: Request) -> Response:
    require_metrics_access(request)
    registry: Metrics = request.state.metrics
    store: Store = request.state.store
    # Read at scrape time rather than kept up to date on every write: the hot path stays free
    # of it, and the numbers are the database's own.
    registry.set_message_counts(await store.count_by_status())
    now = utcnow()
    registry.set_poll_due({p: await store.due_count(p, now) for p in request.state.provider_names})
    pusher = getattr(request.state, "pusher", None)
    if pusher is not None:
        await set_push_metrics(pusher, store)
    # Prometheus asks for the format it wants (text 0.0.4/1.0.0 or OpenMetrics) in Accept.
    encode, content_type = choose_encoder(request.headers.get("accept", ""))
    return Response(encode(registry.registry), headers={"Content-Type": content_type})
