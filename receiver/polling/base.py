"""What the scheduler and the providers' status clients share: the due message, the answer, the
errors that steer the scheduler, and one HTTP helper that sorts a provider's reply into them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

import httpx

from receiver.engine import StatusEvent
from receiver.env import read_duration, read_float, read_int
from receiver.providers.base import ProviderSettings, poll_env_vars
from receiver.store.base import DueMessage

__all__ = ["DueMessage", "poll_env_vars"]  # with the answer, the errors and the helpers below


@dataclass(frozen=True)
class PollAnswer:
    """What the provider said about one message: a status event (source "poll"), or None when
    the provider does not know the message."""

    message_id: str
    event: StatusEvent | None


# Results as counted in /metrics (receiver_poll_requests_total{result}) and kept per message.
OK = "ok"
NOT_FOUND = "not_found"
RATE_LIMITED = "rate_limited"
UNAUTHORIZED = "unauthorized"
UNAVAILABLE = "unavailable"  # 5xx, or an answer that is not what the API documents
TIMEOUT = "timeout"
NETWORK = "network_error"
RESULTS = (OK, NOT_FOUND, RATE_LIMITED, UNAUTHORIZED, UNAVAILABLE, TIMEOUT, NETWORK)


class PollError(Exception):
    """A request failed in a way that concerns the provider, not one message; `result` is how
    the request is counted."""

    def __init__(self, detail: str, result: str = UNAVAILABLE) -> None:
        super().__init__(detail)
        self.result = result


class RateLimited(PollError):
    """429: wait Retry-After (or back off) before the next request to this provider."""

    def __init__(self, detail: str, retry_after: float | None) -> None:
        super().__init__(detail, RATE_LIMITED)
        self.retry_after = retry_after  # seconds, when the provider said


class Unauthorized(PollError):
    """401/403: the credentials are wrong; polling this provider stops until they are fixed."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail, UNAUTHORIZED)


class Unavailable(PollError):
    """5xx, a timeout, a network error or an unreadable answer: back off and try again."""


# Told the result of every HTTP request a client makes (for the metrics).
RequestObserver = Callable[[str], None]


class StatusClient(Protocol):
    """One provider's status endpoint."""

    @property
    def provider(self) -> str: ...

    def group(self, message: DueMessage) -> str:
        """Messages with the same group are answered by one request or sweep (me-sms: the
        send's uuid); for most providers each message is its own group."""
        ...

    def group_prefix(self, message_id: str) -> str | None:
        """The message-id prefix shared by a group (me-sms: "<uuid>:"), so the store claims a
        group whole; None when each message is its own group."""
        ...

    async def poll(
        self,
        http: httpx.AsyncClient,
        messages: Sequence[DueMessage],
        observe: RequestObserver,
    ) -> list[PollAnswer]:
        """Ask about one group's messages; may answer for more of the group than were asked
        (a me-sms sweep sees every recipient). Raises PollError for a failure of the provider;
        a message the provider does not know gets PollAnswer(id, None)."""
        ...


def retry_after_seconds(value: str | None) -> float | None:
    """A Retry-After header (seconds or an HTTP date) in seconds from now, or None."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            moment = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if moment.tzinfo is None:
            return None
        seconds = (moment - datetime.now(UTC)).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def _detail(response: httpx.Response) -> str:
    text = response.text[:200].replace("\n", " ")
    return f"HTTP {response.status_code}: {text}" if text else f"HTTP {response.status_code}"


async def get_json(
    http: httpx.AsyncClient,
    url: str,
    observe: RequestObserver,
    *,
    params: Mapping[str, str | int] | None = None,
    headers: Mapping[str, str] | None = None,
    auth: tuple[str, str] | None = None,
) -> dict[str, Any] | None:
    """GET a status resource: its JSON object, or None for 404. Every other answer is sorted
    into the PollError the scheduler acts on, and each request's result is observed once."""
    try:
        response = await http.get(url, params=params, headers=headers, auth=auth)
    except httpx.TimeoutException as exc:
        observe(TIMEOUT)
        raise Unavailable(f"timed out: {type(exc).__name__}", TIMEOUT) from exc
    except httpx.HTTPError as exc:
        observe(NETWORK)
        raise Unavailable(f"request failed: {type(exc).__name__}: {exc}", NETWORK) from exc
    code = response.status_code
    if code == 404:
        observe(NOT_FOUND)
        return None
    if code == 429:
        observe(RATE_LIMITED)
        raise RateLimited(
            _detail(response), retry_after_seconds(response.headers.get("retry-after"))
        )
    if code in (401, 403):
        observe(UNAUTHORIZED)
        raise Unauthorized(_detail(response))
    if code != 200:
        observe(UNAVAILABLE)
        raise Unavailable(_detail(response))
    try:
        data = response.json()
    except (ValueError, RecursionError):  # bad JSON, bad UTF-8, nesting too deep
        data = None
    if not isinstance(data, dict):
        observe(UNAVAILABLE)
        raise Unavailable("HTTP 200 but the body is not a JSON object")
    observe(OK)
    return data


@dataclass(frozen=True)
class PollLimits:
    """How hard, and how soon, one provider is polled (its own variables, else the defaults)."""

    rate: float  # requests per second
    concurrency: int  # requests in flight at once
    grace: float  # seconds without a final status before the first poll


def poll_limits(settings: ProviderSettings, prefix: str, *, rate: float = 5.0) -> PollLimits:
    env = settings.provider_env
    return PollLimits(
        rate=read_float(env, f"{prefix}_POLL_RATE", rate, minimum=0.01, maximum=10_000),
        concurrency=read_int(env, f"{prefix}_POLL_CONCURRENCY", 4, minimum=1, maximum=256),
        grace=read_duration(
            env, f"{prefix}_DLR_GRACE", settings.dlr_grace, minimum=0.01, maximum=7 * 86400.0
        ),
    )
