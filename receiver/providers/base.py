"""What every provider adapter produces and the small interface it implements."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from receiver.engine import Status, StatusEvent

__all__ = [
    "CallbackRejected",
    "InboundRequest",
    "Provider",
    "ProviderClass",
    "ProviderSettings",
    "StatusEvent",
    "poll_env_vars",
]


class ProviderSettings(Protocol):
    """What an adapter or a status client reads of the service's settings (receiver.settings'
    Settings gives it): the adapters sit below the settings that compose them."""

    @property
    def provider_env(self) -> Mapping[str, str]:
        """The providers' own variables, as set (each adapter reads and checks its own)."""
        ...

    @property
    def dlr_grace(self) -> float:
        """Seconds without a final status before the first poll (RECEIVER_DLR_GRACE)."""
        ...

    def secret_keys(self) -> list[str]:
        """The key that signs callback URLs first, then the older ones still accepted."""
        ...


def poll_env_vars(prefix: str) -> tuple[str, ...]:
    """The per-provider polling variables an adapter declares (README documents them)."""
    return (f"{prefix}_POLL_RATE", f"{prefix}_POLL_CONCURRENCY", f"{prefix}_DLR_GRACE")


class CallbackRejected(Exception):
    """A callback the adapter refuses; `status` and `error_code` become the JSON error."""

    def __init__(self, status: int, error_code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message


@dataclass(frozen=True)
class InboundRequest:
    """The parts of an HTTP request an adapter needs, framework-free."""

    method: str
    url: str  # the URL the provider called, as rebuilt for signature checks
    headers: Mapping[str, str]  # case-insensitive, or with lower-case keys
    body: bytes
    client_host: str | None = None  # the caller's address (behind a trusted proxy: its client)
    path_params: Mapping[str, str] = field(default_factory=dict)  # e.g. {"token": ...}


class Provider(Protocol):
    """A provider adapter, built once at start from the settings (keys parsed, tables ready)."""

    @property
    def name(self) -> str: ...

    @property
    def status_map(self) -> Mapping[str, Status]: ...

    @property
    def configured(self) -> bool:
        """Whether it can authenticate callbacks (else every callback gets 403)."""
        ...

    @property
    def message_providers(self) -> tuple[str, ...]:
        """The provider names its messages are stored under (usually just `name`)."""
        ...

    def read_callback(self, request: InboundRequest) -> list[StatusEvent]:
        """Authenticate the request, then parse it into normalized events.

        Raise CallbackRejected(403, ...) unless the request is genuinely from the provider
        (checked before anything else is believed), and CallbackRejected(400, ...) when an
        authentic request is malformed.
        """
        ...


class ProviderClass(Protocol):
    """What the registry holds: the adapter class, with what it declares about itself."""

    name: str
    status_map: Mapping[str, Status]
    callback_path: str  # under /v1/webhook/<name>/, may hold {params}
    env_vars: tuple[str, ...]  # its own settings, documented in README.md
    signed_url: bool  # authenticated by a token in a receiver-issued URL

    def __call__(self, settings: ProviderSettings) -> Provider:
        """Build the adapter; raise SettingsError for a bad value of one of its variables."""
        ...
