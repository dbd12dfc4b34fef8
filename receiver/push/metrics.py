"""The push metrics, in the app's registry: the backlog and its oldest push (read from the
database at scrape time), attempts by result, and the endpoints a 410 disabled."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge

from receiver.push.config import redact_url

# What an attempt got, as few series: a status class, with 410 and 429 apart (they mean
# something of their own), or why there was no answer.
RESULTS = (
    "delivered",
    "http_3xx",
    "http_4xx",
    "http_410",
    "http_429",
    "http_5xx",
    "timeout",
    "network_error",
)


def result_class(result: str) -> str:
    """`http_503` -> `http_5xx`; `http_200` -> `delivered`; `timeout` stays."""
    if not result.startswith("http_"):
        return result
    code = result[5:]
    if code in ("410", "429"):
        return result
    return "delivered" if code.startswith("2") else f"http_{code[:1]}xx"


class PushMetrics:
    def __init__(self, registry: CollectorRegistry, endpoints: Iterable[str]) -> None:
        self.backlog = Gauge(
            "receiver_push_backlog",
            "Pushes owed to the app and not yet delivered or given up (pending), read from the "
            "database at scrape time.",
            registry=registry,
        )
        self.oldest = Gauge(
            "receiver_push_oldest_pending_seconds",
            "Age of the oldest pending push (0 when none is pending).",
            registry=registry,
        )
        self.attempts = Counter(
            "receiver_push_attempts",
            "Push attempts by result: delivered (2xx), http_3xx/4xx/5xx, http_410 (the "
            "endpoint is then disabled), http_429, timeout, network_error.",
            ["result"],
            registry=registry,
        )
        self.disabled = Gauge(
            "receiver_push_endpoint_disabled",
            "1 for an endpoint a 410 disabled (until a push to it is retried or recovered).",
            ["endpoint"],
            registry=registry,
        )
        self.endpoints = list(endpoints)
        for result in RESULTS:
            self.attempts.labels(result)
        for url in self.endpoints:
            self.disabled.labels(redact_url(url))

    def attempt(self, result: str) -> None:
        self.attempts.labels(result_class(result)).inc()

    def set_state(self, backlog: int, oldest_age: float, disabled: Mapping[str, object]) -> None:
        self.backlog.set(backlog)
        self.oldest.set(max(oldest_age, 0.0))
        for url in self.endpoints:
            self.disabled.labels(redact_url(url)).set(1 if url in disabled else 0)
