"""What every provider adapter produces and the small interface it implements."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from receiver.engine import Status, StatusEvent

__all__ = ["CallbackRejected", "InboundRequest", "Provider", "StatusEvent"]


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
    client_host: str | None = None


class Provider(Protocol):
    """A provider adapter, built once at start from the settings (keys parsed, tables ready)."""

    name: str
    status_map: Mapping[str, Status]
    # Whether its credentials are set; an adapter without them refuses every callback (403).
    configured: bool

    def read_callback(self, request: InboundRequest) -> list[StatusEvent]:
        """Authenticate the request, then parse it into normalized events.

        Raise CallbackRejected(403, ...) unless the request is genuinely from the provider
        (checked before anything else is believed), and CallbackRejected(400, ...) when an
        authentic request is malformed.
        """
        ...
