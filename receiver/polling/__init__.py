"""Polling for late DLRs: the due queue's scheduler (scheduler.py), the providers' status
clients (twilio.py, telecom23.py, mesms.py), what they share (base.py, clients.py), and here
the clients' registry: which are configured, and each provider's polling limits.

The status clients sit on the adapters (receiver.providers); the settings compose both and
check their variables at start (check_polling_settings); the scheduler (scheduler.py,
service.py) sits above the settings.
"""

from __future__ import annotations

from receiver.polling.base import PollLimits, StatusClient, poll_env_vars, poll_limits
from receiver.polling.mesms import MeSmsStatusClient
from receiver.polling.telecom23 import Telecom23StatusClient
from receiver.polling.twilio import TwilioStatusClient
from receiver.providers import REGISTRY
from receiver.providers.base import ProviderSettings

__all__ = ["build_clients", "check_polling_settings", "poll_limits_by_provider"]


def build_clients(settings: ProviderSettings) -> dict[str, StatusClient]:
    """Every provider's status client, built (a bad variable is a SettingsError); only those
    whose polling credentials are configured are returned."""
    clients: list[TwilioStatusClient | Telecom23StatusClient | MeSmsStatusClient] = [
        TwilioStatusClient(settings),
        Telecom23StatusClient(settings),
        MeSmsStatusClient(settings),
    ]
    return {client.provider: client for client in clients if client.configured}


def poll_limits_by_provider(settings: ProviderSettings) -> dict[str, PollLimits]:
    """The limits of every provider that declares its polling variables (poll_env_vars)."""
    return {
        name: poll_limits(settings, name.upper())
        for name, cls in REGISTRY.items()
        if set(poll_env_vars(name.upper())) <= set(cls.env_vars)
    }


def check_polling_settings(settings: ProviderSettings) -> None:
    """Build the status clients and read every polling variable once, so a bad value is a
    start-up SettingsError rather than a failure at the first poll."""
    build_clients(settings)
    poll_limits_by_provider(settings)
