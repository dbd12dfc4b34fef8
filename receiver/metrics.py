"""Prometheus metrics: one registry per app, counted where things happen, read at GET /metrics.

The hot path pays one counter increment per event: the label children are made up front, so
counting is a dict lookup and an `inc()`, never a label parse.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from receiver.engine import Outcome, Status
from receiver.polling.base import RESULTS

# Group commit gathers at most 512 jobs (store.writer); powers of two show how full batches get.
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
# A batch is an fsync or two: well under a millisecond on fast disks, tens on slow ones.
COMMIT_SECONDS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)


class Metrics:
    """The service's metrics in their own registry, so apps built side by side never share."""

    def __init__(self, providers: Iterable[str]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.callbacks = Counter(
            "receiver_callbacks",
            "Callback events recorded, by provider and outcome of the status transition.",
            ["provider", "outcome"],
            registry=r,
        )
        self.signature_failures = Counter(
            "receiver_signature_failures",
            "Callbacks refused with 403: missing or invalid signature, or no credentials set.",
            ["provider"],
            registry=r,
        )
        self.body_limit_rejections = Counter(
            "receiver_body_limit_rejections",
            "Callbacks refused with 413 because the body is over RECEIVER_MAX_BODY.",
            ["provider"],
            registry=r,
        )
        self.callbacks_rejected = Counter(
            "receiver_callbacks_rejected",
            "Other refused callbacks (authentic but malformed, say), by provider and error code.",
            ["provider", "error_code"],
            registry=r,
        )
        self.write_batch_size = Histogram(
            "receiver_write_batch_size",
            "Writes (jobs) committed together in one transaction by the group-commit writer.",
            buckets=BATCH_SIZE_BUCKETS,
            registry=r,
        )
        self.write_commit_seconds = Histogram(
            "receiver_write_commit_seconds",
            "Time one write batch took, BEGIN IMMEDIATE to COMMIT (its jobs and the fsync).",
            buckets=COMMIT_SECONDS_BUCKETS,
            registry=r,
        )
        self.messages = Gauge(
            "receiver_messages",
            "Messages tracked, by current status (counted from the database at scrape time).",
            ["status"],
            registry=r,
        )
        self.poll_requests = Counter(
            "receiver_poll_requests",
            "Requests to providers' status endpoints, by provider and result (ok, not_found, "
            "rate_limited, unauthorized, unavailable, timeout, network_error).",
            ["provider", "result"],
            registry=r,
        )
        self.poll_due = Gauge(
            "receiver_poll_due",
            "Messages due for a poll now, by provider (read from the database at scrape time).",
            ["provider"],
            registry=r,
        )
        self.waiting_requests = Gauge(
            "receiver_waiting_requests",
            "Long polls (GET /v1/messages/{id}?wait=) waiting now.",
            registry=r,
        )
        self.streams = Gauge("receiver_streams", "GET /v1/stream connections open now.", registry=r)
        # Children made now: every series is there from the first scrape (rate() needs a
        # zero to start from), and counting skips the label lookup.
        self._callback_children = {
            (p, o.value): self.callbacks.labels(p, o.value) for p in providers for o in Outcome
        }
        for provider in {p for p, _ in self._callback_children}:
            self.signature_failures.labels(provider)
            self.body_limit_rejections.labels(provider)
        for status in Status:
            self.messages.labels(status.value)

    def watch_waiting(self, waiters: Callable[[], int], streams: Callable[[], int]) -> None:
        """Long polls waiting and streams open now (receiver.realtime's hub), at scrape time."""
        self.waiting_requests.set_function(waiters)
        self.streams.set_function(streams)

    def start_poll_series(self, providers: Iterable[str]) -> None:
        """Every (provider, result) series of the polled providers, at zero."""
        for provider in providers:
            for result in RESULTS:
                self.poll_requests.labels(provider, result)

    def poll_request(self, provider: str, result: str) -> None:
        self.poll_requests.labels(provider, result).inc()

    def set_poll_due(self, due: dict[str, int]) -> None:
        for provider, n in due.items():
            self.poll_due.labels(provider).set(n)

    def callback(self, provider: str, outcome: Outcome) -> None:
        child = self._callback_children.get((provider, outcome.value))
        (child or self.callbacks.labels(provider, outcome.value)).inc()

    def rejected(self, provider: str, status: int, error_code: str) -> None:
        """Count a refused callback in exactly one of the three rejection counters."""
        if status == 403:
            self.signature_failures.labels(provider).inc()
        elif status == 413:
            self.body_limit_rejections.labels(provider).inc()
        else:
            self.callbacks_rejected.labels(provider, error_code).inc()

    def batch_committed(self, jobs: int, seconds: float) -> None:
        """The writer's hook, called once per committed batch from its thread."""
        self.write_batch_size.observe(jobs)
        self.write_commit_seconds.observe(seconds)

    def set_message_counts(self, counts: dict[str, int]) -> None:
        for status in Status:
            self.messages.labels(status.value).set(counts.get(status.value, 0))
