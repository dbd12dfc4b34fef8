"""Provider adapters, one module each, behind the interface in base.Provider.

Adding a provider is one module, its tests, and one line in REGISTRY.
"""

from __future__ import annotations

from collections.abc import Callable

from receiver.providers.base import Provider
from receiver.providers.twilio import TwilioProvider
from receiver.settings import Settings

# name -> (factory, callback path under /v1/webhook/<name>/)
REGISTRY: dict[str, tuple[Callable[[Settings], Provider], str]] = {
    "twilio": (TwilioProvider, "sms-status"),
}


def build_providers(settings: Settings) -> dict[str, Provider]:
    return {name: factory(settings) for name, (factory, _path) in REGISTRY.items()}


def callback_path(name: str) -> str:
    return f"/v1/webhook/{name}/{REGISTRY[name][1]}"
