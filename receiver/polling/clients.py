"""What the providers' status clients share: base URLs, path segments, reading an answer.
receiver.polling's build_clients makes those whose polling credentials are configured.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

import httpx

from receiver.env import SettingsError, read_str
from receiver.polling.base import (
    UNAVAILABLE,
    DueMessage,
    PollAnswer,
    RequestObserver,
    Unavailable,
    get_json,
)
from receiver.providers import fields
from receiver.providers.base import CallbackRejected, ProviderSettings

T = TypeVar("T")


class WrongShape(ValueError):
    """A 200 answer whose JSON object is not what the provider documents."""


class PerMessageClient:
    """A status endpoint that answers for one message a request (Twilio, 23 Telecom)."""

    def group(self, message: DueMessage) -> str:
        return message.message_id

    def group_prefix(self, message_id: str) -> str | None:
        return None

    async def poll(
        self, http: httpx.AsyncClient, messages: Sequence[DueMessage], observe: RequestObserver
    ) -> list[PollAnswer]:
        return [await self._poll_one(http, message, observe) for message in messages]

    async def _poll_one(
        self, http: httpx.AsyncClient, message: DueMessage, observe: RequestObserver
    ) -> PollAnswer:
        raise NotImplementedError


def api_base(settings: ProviderSettings, name: str, default: str) -> str:
    """A provider API's base URL setting, without its trailing slash."""
    value = read_str(settings.provider_env, name) or default
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 -- raises ValueError for a port that is not a number
    except ValueError:
        parts = None
    if parts is not None and (parts.username is not None or parts.password is not None):
        # It would be logged with every failed request; the credentials are settings of their own.
        raise SettingsError(f"{name} must not contain a user or password")
    if (
        parts is None
        or parts.scheme not in ("http", "https")
        or not parts.hostname
        or "?" in value
        or "#" in value
        or not value.isprintable()
        or " " in value
    ):
        raise SettingsError(
            f"{name} must be an http(s) base URL like {default} (scheme, host, optional port "
            f"and path, no query); got {value!r}"
        )
    return value.rstrip("/")


def required_text(record: Mapping[str, Any], name: str) -> str:
    """A field an answer cannot do without (a status, a number): text, clean and bounded."""
    if not isinstance(record.get(name), str):  # a number is the wrong type, not a status
        raise WrongShape(f"{name} is missing or not text")
    value = fields.text(record, name, required=True)  # CallbackRejected if unusable
    assert value is not None  # required=True
    return value


def segment(value: str) -> str | None:
    """`value` as one URL path segment, or None when it cannot be one ("", ".", "..")."""
    quoted = quote(value, safe="")
    # "." and ".." would be resolved away by the URL, asking about another resource.
    return None if quoted in ("", ".", "..") else quoted


async def get_answer(
    http: httpx.AsyncClient,
    url: str,
    observe: RequestObserver,
    read: Callable[[dict[str, Any]], T],
    *,
    params: Mapping[str, str | int] | None = None,
    headers: Mapping[str, str] | None = None,
    auth: tuple[str, str] | None = None,
) -> T | None:
    """get_json, then `read` the object; None for 404. An object `read` refuses (WrongShape, or
    an adapter's CallbackRejected from receiver.providers.fields) is Unavailable, and the
    request is counted as unavailable rather than ok."""
    results: list[str] = []
    try:
        data = await get_json(http, url, results.append, params=params, headers=headers, auth=auth)
        if data is None:
            return None
        try:
            return read(data)
        except (WrongShape, CallbackRejected) as exc:
            results[-1] = UNAVAILABLE
            raise Unavailable(f"HTTP 200 but not the documented answer: {exc}") from None
    finally:
        for result in results:
            observe(result)
