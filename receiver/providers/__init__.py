"""Provider adapters, one module each, behind the interface in base.Provider.

Adding a provider is one module (its class declares its name, callback path, status table and
its own environment variables), its tests, and one line in REGISTRY.
"""

from __future__ import annotations

from receiver.providers.base import Provider, ProviderClass, ProviderSettings
from receiver.providers.mesms import MeSmsProvider
from receiver.providers.standard import StandardProvider
from receiver.providers.telecom23 import Telecom23Provider
from receiver.providers.twilio import TwilioProvider

REGISTRY: dict[str, ProviderClass] = {
    "twilio": TwilioProvider,
    "telecom23": Telecom23Provider,
    "mesms": MeSmsProvider,
    "standard": StandardProvider,
}


def build_providers(settings: ProviderSettings) -> dict[str, Provider]:
    return {name: cls(settings) for name, cls in REGISTRY.items()}


def check_provider_settings(settings: ProviderSettings) -> None:
    """Build every adapter once, so a bad provider variable is a start-up SettingsError."""
    build_providers(settings)


def provider_env_names() -> list[str]:
    """The environment variables the adapters declare, in registry order."""
    return [name for cls in REGISTRY.values() for name in cls.env_vars]


def callback_path(name: str) -> str:
    """The route of a provider's callbacks; may hold {token} or {source}."""
    return f"/v1/webhook/{name}/{REGISTRY[name].callback_path}"


def message_providers(providers: dict[str, Provider]) -> list[str]:
    """Every provider name a message can be stored under (Standard Webhooks: its sources)."""
    return sorted({name for p in providers.values() for name in p.message_providers})
