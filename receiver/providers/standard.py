"""Standard Webhooks: any sender that signs the Standard Webhooks way, one secret per source.

POST /v1/webhook/standard/{source}. The source names the sender (a gateway, an in-house
service) and is the provider name its messages are stored under. webhook-id is the delivery
id, so a retried delivery is recognised as a duplicate.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, ClassVar, Final

from receiver.engine import Status
from receiver.env import SettingsError, read_int, read_list
from receiver.providers import fields
from receiver.providers.base import CallbackRejected, InboundRequest, ProviderSettings, StatusEvent
from receiver.providers.mesms import MeSmsProvider
from receiver.providers.standard_signature import SignatureError, decode_secret, verify
from receiver.providers.telecom23 import Telecom23Provider
from receiver.providers.twilio import TwilioProvider

# Canonical statuses are accepted as they are (README: "Standard Webhooks").
# "registered" is the receiver's own state before any report, never a sender's.
STATUS_MAP: Final[Mapping[str, Status]] = MappingProxyType(
    {s.value: s for s in Status if s is not Status.REGISTERED}
)
SOURCE_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
DEFAULT_TOLERANCE = 300
KEPT_HEADERS: Final = ("content-type", "user-agent", "webhook-id", "webhook-timestamp")


# The other adapters: a sender may report one's raw status (status_provider), and a source may
# not take one's name, or its messages would mix with theirs. tests/test_imports.py holds this
# to receiver.providers.REGISTRY.
OTHER_PROVIDERS: Final = (TwilioProvider, Telecom23Provider, MeSmsProvider)


def parse_secrets(env: Mapping[str, str], reserved: set[str]) -> dict[str, list[bytes]]:
    """STANDARD_WEBHOOK_SECRETS: "source:whsec_...,source:whsec_...", a source listed twice
    while its secret rotates."""
    name = "STANDARD_WEBHOOK_SECRETS"
    secrets: dict[str, list[bytes]] = {}
    for item in read_list(env, name):
        source, sep, secret = item.partition(":")
        source = source.strip()
        if not sep or not SOURCE_PATTERN.fullmatch(source):
            raise SettingsError(
                f"{name} must be comma-separated source:whsec_... pairs, the source in "
                f"lower-case letters, digits, '-' or '_'; got an item starting {item[:8]!r}"
            )
        if source in reserved:
            raise SettingsError(f"{name}: {source!r} is a built-in provider's name; pick another")
        try:
            secrets.setdefault(source, []).append(decode_secret(secret))
        except ValueError as exc:
            raise SettingsError(f"{name} ({source}): {exc}") from None
    return secrets


class StandardProvider:
    name: ClassVar[str] = "standard"
    status_map: ClassVar[Mapping[str, Status]] = STATUS_MAP
    callback_path: ClassVar[str] = "{source}"
    env_vars: ClassVar[tuple[str, ...]] = (
        "STANDARD_WEBHOOK_SECRETS",
        "STANDARD_WEBHOOK_TOLERANCE",
    )
    signed_url: ClassVar[bool] = False

    def __init__(self, settings: ProviderSettings, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._tolerance = read_int(
            settings.provider_env,
            "STANDARD_WEBHOOK_TOLERANCE",
            DEFAULT_TOLERANCE,
            minimum=1,
            maximum=3600,
        )
        self._secrets = parse_secrets(
            settings.provider_env, {self.name, *(cls.name for cls in OTHER_PROVIDERS)}
        )
        # A sender may report another provider's raw status, naming that provider; matched
        # in any case, as the providers' own adapters do.
        self._provider_maps = {
            cls.name: {raw.casefold(): status for raw, status in cls.status_map.items()}
            for cls in OTHER_PROVIDERS
        }

    @property
    def configured(self) -> bool:
        return bool(self._secrets)

    @property
    def message_providers(self) -> tuple[str, ...]:
        return tuple(sorted(self._secrets))

    def read_callback(self, request: InboundRequest) -> list[StatusEvent]:
        source = request.path_params.get("source", "")
        keys = self._secrets.get(source)
        if not keys:
            raise CallbackRejected(
                403,
                "provider_not_configured",
                "no secret is configured for this source in STANDARD_WEBHOOK_SECRETS",
            )
        headers = request.headers
        try:
            verify(
                keys,
                headers.get("webhook-id"),
                headers.get("webhook-timestamp"),
                headers.get("webhook-signature"),
                request.body,
                now=self._clock(),
                tolerance=self._tolerance,
            )
        except SignatureError as exc:
            raise CallbackRejected(403, exc.error_code, str(exc)) from None
        try:
            text = request.body.decode("utf-8")
            payload = fields.loads(text)
        except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
            raise CallbackRejected(400, "invalid_body", "the body is not valid JSON") from None
        if not isinstance(payload, dict):
            raise CallbackRejected(400, "invalid_body", "the body must be a JSON object")
        data = payload.get("data", payload)
        if not isinstance(data, dict):
            raise CallbackRejected(400, "invalid_field", "data must be a JSON object")
        return [self._event(source, payload, data, text, request)]

    def _event(
        self,
        source: str,
        payload: dict[str, Any],
        data: dict[str, Any],
        text: str,
        request: InboundRequest,
    ) -> StatusEvent:
        message_id = fields.text(data, "message_id", required=True)
        raw_status = fields.text(data, "status", required=True)
        assert message_id is not None and raw_status is not None  # required=True
        status_provider = fields.text(data, "status_provider")
        if status_provider is None:
            status = STATUS_MAP.get(raw_status.lower())
        elif status_provider in self._provider_maps:
            status = self._provider_maps[status_provider].get(raw_status.casefold())
        else:
            raise CallbackRejected(
                400,
                "invalid_field",
                f"status_provider must be one of {sorted(self._provider_maps)}",
            )
        webhook_id = request.headers.get("webhook-id")
        return StatusEvent(
            provider=source,
            message_id=message_id,
            provider_status=raw_status,
            status=status,
            to_number=fields.text(data, "recipient", "to"),
            from_number=fields.text(data, "sender", "from"),
            error_code=fields.text(data, "error_code"),
            event_time=fields.iso_time(
                fields.text(data, "timestamp") or fields.text(payload, "timestamp")
            ),
            dedupe_key=fields.text({"webhook-id": webhook_id}, "webhook-id"),
            body=text,
            headers={h: v for h in KEPT_HEADERS if (v := request.headers.get(h)) is not None},
        )
